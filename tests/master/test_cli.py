"""``sio-master --help`` and ``--version``: what an operator reads before anything runs."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from click.testing import CliRunner

import sio_cluster
from sio_cluster.common.redis.url import CLUSTER_SCHEMES, PLAIN_SCHEMES, SENTINEL_SCHEMES
from sio_cluster.master.cli import main

SIO_MASTER = str(Path(sys.executable).with_name("sio-master"))


def test_version_is_the_installed_packages() -> None:
    done = subprocess.run([SIO_MASTER, "--version"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"sio-master {version('sio-cluster')}\n"
    assert version("sio-cluster") == sio_cluster.__version__


def test_help_lists_every_redis_url_form() -> None:
    text = CliRunner().invoke(main, ["--help"]).output
    schemes = [*PLAIN_SCHEMES, *(f"{s}://" for s in (*SENTINEL_SCHEMES, *CLUSTER_SCHEMES))]
    assert len(schemes) == 7
    for scheme in schemes:
        assert f"\n    {scheme}" in text, scheme  # each form on a line of its own
    assert "(none)              an embedded redis-server" in text


def test_help_lists_the_subcommands() -> None:
    text = CliRunner().invoke(main, ["--help"]).output
    assert "\n    balancer-config     print an L4 balancer configuration" in text
    done = subprocess.run(
        [SIO_MASTER, "balancer-config", "haproxy", "--workers", "1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("# sio-master balancer-config haproxy: 1 hosts, one port each\n")
