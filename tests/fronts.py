"""Balancers in front of masters (HAProxy, nginx), started on a port that is really theirs.

Why: ``free_port()`` finds a port free now; by the time the balancer binds it, an outgoing
connection of this or another process may hold it as its local port. The balancer then exits
("cannot bind socket"), and a test waiting for it to forward only timed out after 30 s with
nothing said. Here the balancer is seen listening, or started again on another port, and
what it logged is kept beside the test.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from sio_cluster.master.embedded_redis import free_port

ATTEMPTS = 3
LISTEN_TIMEOUT = 10.0


def start_front(
    command: Callable[[int], list[str]], log: Path
) -> tuple[subprocess.Popen[bytes], int]:
    """Run ``command(port)`` (it writes its configuration for ``port``) until it listens;
    return the process and its port. Its output goes to ``log``."""
    for _ in range(ATTEMPTS):
        port = free_port()
        with open(log, "wb") as out:
            proc = subprocess.Popen(command(port), stdout=out, stderr=out)
        if _listening(proc, port):
            return proc, port
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    raise AssertionError(f"{command(0)[0]} did not listen on {ATTEMPTS} ports: {log.read_text()}")


def _listening(proc: subprocess.Popen[bytes], port: int) -> bool:
    """True once ``port`` accepts connections while ``proc`` runs; False if it exits."""
    deadline = time.monotonic() + LISTEN_TIMEOUT
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
        except OSError:
            time.sleep(0.02)  # polling for the bind, bounded by the deadline
            continue
        return proc.poll() is None
    return False


def stop_front(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
