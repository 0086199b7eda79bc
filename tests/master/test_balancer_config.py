"""``sio-master balancer-config``: the configurations for the actual options (pure; the real
balancers run them in tests/integration/test_balancers.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sio_cluster.master.balancer_config import Layout, haproxy, nginx
from tests.cluster import REPO

LAYOUT = Layout("0.0.0.0", 80, ("10.0.0.1", "10.0.0.2"), 9000, 2)


def test_haproxy_has_one_checked_server_per_worker_of_every_host_and_sticks_by_source() -> None:
    text = haproxy(LAYOUT)
    servers = [line.split()[1:3] for line in text.splitlines() if line.strip().startswith("server")]
    assert servers == [
        ["h0w0", "10.0.0.1:9000"],
        ["h0w1", "10.0.0.1:9001"],
        ["h1w0", "10.0.0.2:9000"],
        ["h1w1", "10.0.0.2:9001"],
    ]
    for needed in ("mode tcp", "balance source", "hash-type consistent", "bind 0.0.0.0:80"):
        assert needed in text
    assert "option httpchk GET /healthz" in text and "timeout tunnel 1h" in text


def test_nginx_hashes_the_client_address_over_every_worker_and_never_fails_over() -> None:
    text = nginx(LAYOUT)
    servers = [line.split()[1:] for line in text.splitlines() if " max_fails=" in line]
    assert servers == [
        [address, "max_fails=0;"]
        for address in ("10.0.0.1:9000", "10.0.0.1:9001", "10.0.0.2:9000", "10.0.0.2:9001")
    ]
    assert "hash $remote_addr consistent;" in text and "listen 0.0.0.0:80;" in text
    assert "proxy_next_upstream off;" in text


def test_one_port_has_one_server_per_host_on_its_port() -> None:
    layout = Layout("0.0.0.0", 80, ("10.0.0.1", "10.0.0.2"), 9000, 4, worker_ports=False)
    text = haproxy(layout)
    servers = [line.split()[1:3] for line in text.splitlines() if line.strip().startswith("server")]
    assert servers == [["h0", "10.0.0.1:9000"], ["h1", "10.0.0.2:9000"]]
    assert "balance source" in text and "2 hosts, one port each" in text
    addresses = [line.split()[1] for line in nginx(layout).splitlines() if " max_fails=" in line]
    assert addresses == ["10.0.0.1:9000", "10.0.0.2:9000"]


def test_send_proxy_gives_the_client_address_to_one_port_hosts() -> None:
    layout = Layout("0.0.0.0", 80, ("10.0.0.1",), 9000, 4, worker_ports=False, send_proxy=True)
    assert "10.0.0.1:9000 check inter 1s fall 2 rise 1 send-proxy-v2 check-send-proxy" in (
        haproxy(layout)
    )
    assert "proxy_protocol on;" in nginx(layout)
    assert "send-proxy" not in haproxy(LAYOUT) and "proxy_protocol" not in nginx(LAYOUT)


def test_the_default_layout_is_the_master_s_default() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sio_cluster", "balancer-config", "haproxy", "--workers", "3"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    assert [s.split()[2] for s in done.stdout.splitlines() if s.strip().startswith("server ")] == [
        "127.0.0.1:8000"
    ]


@pytest.mark.parametrize(
    "args",
    [
        ["haproxy"],  # --workers is required
        ["envoy", "--workers", "2"],
        ["nginx", "--workers", "0"],
        ["nginx", "--workers", "2", "--listen", "80"],
        ["nginx", "--workers", "2", "--port", "65535", "--layout", "worker-ports"],
        ["nginx", "--workers", "2", "--port", "65536"],
        ["nginx", "--workers", "2", "--layout", "both"],
        ["nginx", "--workers", "2", "--layout", "worker-ports", "--send-proxy"],
    ],
)
def test_bad_arguments_exit_2_with_a_reason(args: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sio_cluster", "balancer-config", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "error:" in done.stderr and done.stdout == ""


def test_a_busy_host_has_three_seconds_to_answer_its_check() -> None:
    """Without ``timeout check`` HAProxy gives a check ``inter`` (1 s): a host slowed by a
    spike left the pool and its polling sessions broke on the other host (seen under load)."""
    text = haproxy(LAYOUT)
    defaults = text[text.index("defaults") : text.index("frontend")]
    assert "    timeout check 3s\n" in defaults
