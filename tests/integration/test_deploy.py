"""deploy/: what can be checked of the examples without a container runtime or a cluster.

No image is built and no manifest applied on the project's machines: .ci/run lints them
(hadolint, the Compose and Kubernetes schemas). Here, for real: the image's health check
command against a running master, HAProxy's own check of both balancer configurations,
that they keep every line the balancer-config tool prints, and that each SIO_* variable
the examples set is one sio-master reads.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sio_cluster.master.cli import main
from tests.cluster import REPO, MasterProcess

DEPLOY = REPO / "deploy"
COMPOSE_HAPROXY = DEPLOY / "compose" / "haproxy.cfg"
KUBERNETES = DEPLOY / "kubernetes"


def dockerfile_instruction(name: str) -> str:
    """The arguments of the Dockerfile's one ``name`` instruction, continuation lines joined."""
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    found = re.findall(rf"^{name} (.*)$", text, flags=re.MULTILINE)
    assert len(found) == 1, found
    return str(found[0])


def health_check(metrics_port: int) -> subprocess.CompletedProcess[str]:
    """The image's HEALTHCHECK command, as Docker runs it inside the container."""
    command = json.loads(dockerfile_instruction("HEALTHCHECK").split(" CMD ", 1)[1])
    assert command[0] == "python"
    return subprocess.run(
        [sys.executable, *command[1:]],
        env={"SIO_METRICS_PORT": str(metrics_port)},
        capture_output=True,
        text=True,
        timeout=30,
    )


async def test_the_images_health_check_passes_while_the_master_runs(
    start_master: Any,
) -> None:
    master: MasterProcess = await start_master(workers=1).ready()
    assert health_check(master.metrics_port).returncode == 0
    master.signal(signal.SIGTERM)
    assert await master.wait_exit() == 0
    stopped = health_check(master.metrics_port)
    assert stopped.returncode == 1
    assert "Connection refused" in stopped.stderr


def haproxy_check(config: Path) -> subprocess.CompletedProcess[str]:
    if shutil.which("haproxy") is None:
        pytest.skip("haproxy is not installed (apt-get install haproxy; .ci/run does)")
    return subprocess.run(
        ["haproxy", "-c", "-f", str(config)], capture_output=True, text=True, timeout=30
    )


@pytest.mark.parametrize("config", [COMPOSE_HAPROXY, KUBERNETES / "haproxy.cfg"])
def test_haproxy_accepts_the_configuration(config: Path) -> None:
    done = haproxy_check(config)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Configuration file is valid" in done.stdout


def test_the_compose_balancer_is_what_balancer_config_prints() -> None:
    printed = subprocess.run(
        [
            *(sys.executable, "-m", "sio_cluster", "balancer-config", "haproxy"),
            *("--workers", "2", "--hosts", "sio-a,sio-b", "--listen", "0.0.0.0:8080"),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    expected = [line for line in printed.splitlines() if line.strip() and line[0] != "#"]
    lines = COMPOSE_HAPROXY.read_text().splitlines()
    assert [line for line in expected if line not in lines] == []


def test_kubernetes_balancer_finds_each_pod_on_its_one_port() -> None:
    manifest = (KUBERNETES / "sio-cluster.yaml").read_text()
    port = int(re.findall(r'name: SIO_PORT\n\s+value: "(\d+)"', manifest)[0])
    config = (KUBERNETES / "haproxy.cfg").read_text()
    ports = re.findall(r"server-template \S+ \d+ sio-workers\.\S+:(\d+) ", config)
    assert [int(p) for p in ports] == [port]
    container_ports = re.findall(r"containerPort: (\d+)", manifest)
    assert [int(p) for p in container_ports] == [port, 9100]  # clients, then the metrics


def test_every_sio_variable_in_the_examples_is_an_option_of_sio_master() -> None:
    known = {param.envvar for param in main.params if isinstance(param.envvar, str)}
    files = [p for p in DEPLOY.rglob("*") if p.is_file()]
    used = {
        name: path.relative_to(REPO).as_posix()
        for path in files
        for name in re.findall(r"\bSIO_[A-Z0-9_]+", path.read_text())
    }
    assert len(used) >= 5, used  # the search finds them
    assert {name: path for name, path in used.items() if name not in known} == {}
