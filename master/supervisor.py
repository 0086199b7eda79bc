"""Worker processes: spawn, health-check, respawn, stop (the uvicorn supervisor's shape).

Why ``subprocess`` and a socketpair rather than ``multiprocessing.Process``: the
spawn start method pickles the process object and starts a resource-tracker
helper process; we want no pickle at all and no helper that could outlive the
master. Each worker is ``python -m workers FD ID`` holding one end of a
Unix socketpair (what ``multiprocessing.Pipe`` is made of); the master holds the
other end. When the master dies, the worker reads EOF and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from master.config import Config
from master.metrics import Metrics
from wire import WORKER_CONFIG_ENV
from wire.frames import FrameError, Kind, encode_frame
from wire.link import FrameLink
from wire.rpc import Rpc

log = logging.getLogger(__name__)

STARTUP_TIMEOUT = 60.0
RESPAWN_BACKOFF_CAP = 5.0
STABLE_AFTER = 10.0  # a worker that lived this long is respawned at once


class StartupError(RuntimeError):
    """A worker died or did not get ready while the cluster was starting."""


@dataclass(eq=False)
class WorkerHandle:
    """One generation of worker ``worker_id``: a new handle per (re)spawn."""

    worker_id: int
    port: int
    process: asyncio.subprocess.Process
    link: FrameLink
    started_at: float = field(default_factory=time.monotonic)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    alive: bool = True
    namespaces: list[str] | str = field(default_factory=list)
    last_pong: float = field(default_factory=time.monotonic)
    rpc: Rpc | None = None
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.process.pid


FrameCallback = Callable[[WorkerHandle, Kind, list[Any], bytes], None]
RequestHandler = Callable[[WorkerHandle, str, dict[str, Any]], Awaitable[Any]]


class Supervisor:
    """Keeps ``config.workers`` workers alive on ports ``port .. port+N-1``."""

    def __init__(
        self,
        config: Config,
        metrics: Metrics,
        on_frame: FrameCallback,
        on_exit: Callable[[WorkerHandle], None],
        on_hello: Callable[[], None],
        on_request: RequestHandler,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.handles: dict[int, WorkerHandle] = {}
        self._on_frame = on_frame
        self._on_exit = on_exit
        self._on_hello = on_hello
        self._on_request = on_request
        self._stopping = False
        self._starting = True
        self._tasks: set[asyncio.Task[None]] = set()
        self._health_task: asyncio.Task[None] | None = None
        self._startup_progress = asyncio.Event()  # a worker got ready or exited
        self._fast_deaths: dict[int, int] = {}

    def alive_count(self) -> int:
        return sum(1 for h in self.handles.values() if h.alive)

    async def start(self) -> None:
        """Spawn every worker and wait until each accepts connections."""
        for worker_id in range(self.config.workers):
            await self._spawn(worker_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STARTUP_TIMEOUT
        while not all(h.ready.is_set() for h in self.handles.values()):
            dead = [h for h in self.handles.values() if h.process.returncode is not None]
            if dead:
                code = dead[0].process.returncode
                raise StartupError(f"worker {dead[0].worker_id} exited with code {code}")
            if loop.time() > deadline:
                raise StartupError(f"workers not ready after {STARTUP_TIMEOUT:.0f} s")
            self._startup_progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._startup_progress.wait(), deadline - loop.time())
        self._starting = False
        self._health_task = asyncio.create_task(self._health_loop())

    def _spawn_task(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _spawn(self, worker_id: int) -> WorkerHandle:
        parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        port = self.config.worker_port(worker_id)
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "workers",
                str(child_sock.fileno()),
                str(worker_id),
                pass_fds=(child_sock.fileno(),),
                env={**os.environ, WORKER_CONFIG_ENV: json.dumps(self.config.to_dict())},
            )
        finally:
            child_sock.close()
        holder: list[WorkerHandle] = []
        link = await FrameLink.open(
            parent_sock,
            lambda kind, fields, body: self._dispatch(holder[0], kind, fields, body),
            lambda exc: None,
            self.config.worker_buffer_bytes,
            on_bad_frame=self._bad_frame,
        )
        handle = WorkerHandle(worker_id, port, process, link)
        handle.rpc = Rpc(
            lambda frame: link.send(frame, droppable=False),
            lambda operation, args: self._on_request(handle, operation, args),
        )
        holder.append(handle)
        self.handles[worker_id] = handle
        log.info("worker %d started (pid %d, port %d)", worker_id, process.pid, port)
        self._spawn_task(self._watch(handle))
        return handle

    def _bad_frame(self, exc: FrameError) -> None:
        self.metrics.bad_frames.inc()
        log.error("unreadable frame from a worker: %s", exc)

    def _dispatch(self, handle: WorkerHandle, kind: Kind, fields: list[Any], body: bytes) -> None:
        if not handle.alive:
            return  # late frames of a dead generation must not touch the routing table
        if kind is Kind.REQUEST or kind is Kind.RESPONSE:
            assert handle.rpc is not None
            handle.rpc.on_frame(kind, fields)
        elif kind is Kind.SYNC:
            handle.link.send(encode_frame(Kind.SYNCED, *fields), droppable=False)
        elif kind is Kind.PONG:
            handle.last_pong = time.monotonic()
            if len(fields) > 1 and isinstance(fields[1], dict):
                handle.stats = fields[1]
        elif kind is Kind.READY:
            handle.ready.set()
            self._startup_progress.set()
            handle.last_pong = time.monotonic()
            if not self._starting:
                log.info("worker %d ready again on port %d", handle.worker_id, handle.port)
        elif kind is Kind.HELLO:
            names = fields[2] if len(fields) > 2 else []
            handle.namespaces = names if names == "*" else [n for n in names if isinstance(n, str)]
            self._on_hello()
        else:
            self._on_frame(handle, kind, fields, body)

    async def _watch(self, handle: WorkerHandle) -> None:
        code = await handle.process.wait()
        handle.alive = False
        self._startup_progress.set()
        if handle.rpc is not None:
            handle.rpc.fail_all(f"worker {handle.worker_id} died")
        handle.link.close()
        self._on_exit(handle)
        if self._stopping or self._starting:
            return
        how = f"signal {-code}" if code < 0 else f"code {code}"
        log.error(
            "worker %d (pid %d) exited with %s; respawning", handle.worker_id, handle.pid, how
        )
        self.metrics.restarts.labels(worker=str(handle.worker_id)).inc()
        lived = time.monotonic() - handle.started_at
        deaths = 0 if lived > STABLE_AFTER else self._fast_deaths.get(handle.worker_id, 0) + 1
        self._fast_deaths[handle.worker_id] = deaths
        delay = 0.0 if deaths <= 1 else min(0.25 * 2 ** (deaths - 2), RESPAWN_BACKOFF_CAP)
        if delay:
            log.warning("worker %d keeps dying; waiting %.2f s", handle.worker_id, delay)
            await asyncio.sleep(delay)
        if not self._stopping:
            await self._spawn(handle.worker_id)

    async def _health_loop(self) -> None:
        """Ping every ready worker; kill one that has not answered for the timeout."""
        timeout = self.config.worker_health_timeout
        if not timeout:
            return
        token = 0
        while True:
            await asyncio.sleep(timeout / 3)
            now = time.monotonic()
            token += 1
            for handle in list(self.handles.values()):
                if not (handle.alive and handle.ready.is_set()):
                    continue
                if now - handle.last_pong > timeout:
                    log.error(
                        "worker %d (pid %d) silent for %.0f s; killing it",
                        handle.worker_id,
                        handle.pid,
                        now - handle.last_pong,
                    )
                    with contextlib.suppress(ProcessLookupError):
                        handle.process.kill()
                else:
                    handle.link.send(encode_frame(Kind.PING, token), droppable=False)

    async def stop(self) -> None:
        """SIGTERM every worker, wait for the graceful timeout, SIGKILL what is left."""
        self._stopping = True
        if self._health_task is not None:
            self._health_task.cancel()
        handles = [h for h in self.handles.values() if h.process.returncode is None]
        for handle in handles:
            with contextlib.suppress(ProcessLookupError):
                handle.process.send_signal(signal.SIGTERM)
        waits = [asyncio.create_task(h.process.wait()) for h in handles]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=self.config.graceful_timeout + 1)
            for handle in handles:
                if handle.process.returncode is None:
                    log.warning("worker %d did not stop in time; killing it", handle.worker_id)
                    with contextlib.suppress(ProcessLookupError):
                        handle.process.kill()
            if pending:
                await asyncio.wait(pending)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for handle in self.handles.values():
            handle.link.close()

    def kill_all(self) -> None:
        """Last resort on an unexpected master error: no worker may outlive us."""
        for handle in self.handles.values():
            with contextlib.suppress(ProcessLookupError):
                if handle.process.returncode is None:
                    os.kill(handle.pid, signal.SIGKILL)
