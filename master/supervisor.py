"""Worker processes: spawn, health-check, respawn, stop (the uvicorn supervisor's shape).

Why ``subprocess`` and a socketpair rather than ``multiprocessing.Process``: the
spawn start method pickles the process object and starts a resource-tracker
helper process; we want no pickle at all and no helper that could outlive the
master. Each worker is ``python -m sio_cluster.workers FD ID`` holding one end of a
Unix socketpair (what ``multiprocessing.Pipe`` is made of); the master holds the
other end. When the master dies, the worker reads EOF and exits.

Health pings travel on a second socketpair per worker, not on the ordered pipe: a
flood queues deliveries for a worker in the master faster than it can take them, and
a ping queued behind them would go unanswered for as long as the backlog lasts, so a
busy worker would be killed as a stuck one. On their own channel a ping and its answer
(with the worker's counters) wait only for the worker's event loop: a worker making
progress answers within a tick, a stopped or spinning one answers nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from sio_cluster.common.config import Config
from sio_cluster.common.memtrim import MemoryTrimmer
from sio_cluster.master.acceptor.balance import Report
from sio_cluster.master.metrics import Metrics
from sio_cluster.master.routing.messages import ANY_NAMESPACE
from sio_cluster.wire import WORKER_CONFIG_ENV
from sio_cluster.wire.frames import (
    BROADCASTS_READ,
    CLIENTS_SERVED,
    HANDOFFS_TAKEN,
    Broadcast,
    Failed,
    Frame,
    FrameError,
    Hello,
    Join,
    KeepSession,
    Leave,
    Ping,
    Pong,
    Ready,
    Recoverable,
    RecoveryFrame,
    Request,
    Response,
    Restore,
    SessionData,
    Sync,
    Synced,
)
from sio_cluster.wire.handoff import NO_HANDOFF
from sio_cluster.wire.link import FrameLink
from sio_cluster.wire.operations import ClusterOperation
from sio_cluster.wire.rpc import Rpc, RpcError

log = logging.getLogger(__name__)

STARTUP_TIMEOUT = 60.0
RESPAWN_BACKOFF_CAP = 5.0
STABLE_AFTER = 10.0  # a worker that lived this long is respawned at once
PIPE_EOF_TIMEOUT = 1.0  # a dead worker's last frames (its Failed reason) are read by then
PING_INTERVAL_CAP = 1.0  # pings at least this often, so counters are fresh when a worker dies
QUIET_MESSAGES = 1000  # fewer read from Redis between two pings: quiet enough to trim memory


class StartupError(RuntimeError):
    """A worker died or did not get ready while the cluster was starting."""


class WorkerEvents(Protocol):
    """What the master does with its workers' frames (the one dispatch is :meth:`_dispatch`).

    A worker is named by its key: unique per process, never reused, so the old and the new
    process of one port (a respawn, a rolling restart) are never mixed up in the routing table.
    """

    def on_hello(self) -> None: ...

    def on_membership(self, worker: int, report: Join | Leave) -> None: ...

    def on_broadcast(self, worker: int, broadcast: Broadcast, body: bytes) -> None: ...

    def on_worker_exit(self, worker: int) -> None: ...

    def on_recovery(self, worker: int, frame: RecoveryFrame) -> None: ...

    async def handle_request(self, worker: int, operation: ClusterOperation) -> Any: ...


class WorkerPool(Protocol):
    """The master's view of its workers: who is alive, send a frame, ask for an answer."""

    def alive(self) -> list[int]: ...

    def send(self, worker: int, frame: bytes) -> bool: ...

    async def call(self, worker: int, operation: ClusterOperation, timeout: float) -> Any: ...


def log_label(worker_id: int, generation: int) -> str:
    """The role a worker process's log lines carry: ``worker-0`` for the first process of
    worker 0, ``worker-0.1``, ``worker-0.2``... for those that replace it (a respawn, a rolling
    restart), so the old and the new process of one port are told apart in the log."""
    return f"worker-{worker_id}" if generation == 0 else f"worker-{worker_id}.{generation}"


@dataclass(eq=False)
class WorkerHandle:
    """One process of worker ``worker_id`` (its port): a new handle, and key, per spawn."""

    key: int
    worker_id: int
    generation: int
    port: int
    process: asyncio.subprocess.Process
    link: FrameLink
    health: FrameLink  # pings and counters, beside the ordered pipe (see the module doc)
    rpc: Rpc
    started_at: float = field(default_factory=time.monotonic)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    alive: bool = True
    namespaces: tuple[str, ...] | str = ()
    unanswered_since: float | None = None  # when the oldest ping not yet answered was sent
    stats: dict[str, Any] = field(default_factory=dict)
    respawn: bool = True  # False: its exit is expected (replaced, or a failed replacement)
    failure: str = ""  # why it could not start, as it said (a Failed frame)
    pipe_closed: asyncio.Event = field(default_factory=asyncio.Event)
    killed: bool = False  # killed for not answering pings: not killed twice
    sent: int = 0  # Broadcast frames queued for it, to compare with its BROADCASTS_READ
    handoff: socket.socket | None = None  # one port per host: where its connections go
    stopping: bool = False  # told to stop (SIGTERM): takes no new connections

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def label(self) -> str:
        return log_label(self.worker_id, self.generation)

    @property
    def name(self) -> str:
        """As the master's log lines name it: ``worker 1 (pid 4242, worker-1.2)``."""
        return f"worker {self.worker_id} (pid {self.pid}, {self.label})"

    async def exit_status(self) -> str:
        """How it ended, once it has: ``exited with code 1: <its reason>`` (the reason is
        read from the pipe, whose end is waited for a moment: the exit may be seen first)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.pipe_closed.wait(), PIPE_EOF_TIMEOUT)
        code = self.process.returncode
        how = "not exited" if code is None else f"signal {-code}" if code < 0 else f"code {code}"
        return f"exited with {how}" + (f": {self.failure}" if self.failure else "")


class Supervisor:
    """Keeps ``config.workers`` workers alive on ports ``port .. port+N-1``; a WorkerPool."""

    def __init__(self, config: Config, metrics: Metrics, events: WorkerEvents) -> None:
        self.config = config
        self.metrics = metrics
        self._handles: dict[int, WorkerHandle] = {}
        self._events = events
        self._stopping = False
        self._starting = True
        self._tasks: set[asyncio.Task[None]] = set()
        self._health_task: asyncio.Task[None] | None = None
        self._startup_progress = asyncio.Event()  # a worker got ready or exited
        self._fast_deaths: dict[int, int] = {}
        self._keys = itertools.count()
        self._generations: dict[int, int] = {}  # worker id -> processes started for it
        self._rolling = False
        metrics.watch_backlogs(self.backlogs)
        self._trimmer = MemoryTrimmer()

    # ---- the WorkerPool view ----------------------------------------------------

    def alive(self) -> list[int]:
        """Workers (keys) running and ready: a worker still starting takes no requests."""
        return [k for k, h in self._handles.items() if h.alive and h.ready.is_set()]

    def serving(self) -> list[int]:
        """Workers (keys) that take new connections: ready, and not told to stop."""
        return [
            k for k, h in self._handles.items() if h.alive and h.ready.is_set() and not h.stopping
        ]

    def handoff_socket(self, key: int) -> socket.socket | None:
        """Where worker ``key`` receives its connections (one port per host), if it runs."""
        handle = self._handles.get(key)
        return None if handle is None or not handle.alive else handle.handoff

    def reports(self) -> dict[int, Report]:
        """What each serving worker (by key) last said of its load, for the one-port balancer."""
        return {
            key: Report(int(h.stats.get(CLIENTS_SERVED, 0)), int(h.stats.get(HANDOFFS_TAKEN, 0)))
            for key, h in self._handles.items()
            if h.alive
        }

    def alive_count(self) -> int:
        """How many worker ports have a live process (two during a rolling restart count once)."""
        return len({h.worker_id for h in self._handles.values() if h.alive})

    def per_worker(self, by_key: Mapping[int, int]) -> dict[int, int]:
        """Counts by worker key, summed by worker id (the label operators see)."""
        counts: dict[int, int] = {}
        for key, count in by_key.items():
            handle = self._handles.get(key)
            if handle is not None:
                counts[handle.worker_id] = counts.get(handle.worker_id, 0) + count
        return counts

    def send(self, worker: int, frame: bytes) -> bool:
        """Queue a droppable frame (a delivery) on ``worker``'s pipe; False if refused."""
        handle = self._handles.get(worker)
        if handle is None or not handle.alive or not handle.link.send(frame):
            return False
        handle.sent += 1
        return True

    def send_control(self, worker: int, frame: bytes) -> bool:
        """Queue a frame that is never dropped (an answer) on ``worker``'s pipe."""
        handle = self._handles.get(worker)
        return handle is not None and handle.alive and handle.link.send(frame, droppable=False)

    async def call(self, worker: int, operation: ClusterOperation, timeout: float) -> Any:
        handle = self._handles.get(worker)
        if handle is None or not handle.alive:
            raise RpcError(f"worker {worker} is not running")
        return await handle.rpc.call(operation, timeout)

    def namespaces(self) -> frozenset[str] | str:
        """The namespaces the workers serve, or ``"*"`` if any worker accepts any."""
        names: set[str] = set()
        for handle in self._handles.values():
            if handle.namespaces == ANY_NAMESPACE:
                return ANY_NAMESPACE
            names.update(handle.namespaces)
        return frozenset(names)

    def describe(self, worker: int) -> str:
        """Worker ``worker`` (a key) as log lines name it: ``worker 1 (pid 4242, worker-1.2)``."""
        handle = self._handles.get(worker)
        return f"worker key {worker}" if handle is None else handle.name

    def backlogs(self) -> dict[int, int]:
        """Bytes queued in the master for each worker's pipe (by id), not yet taken by it."""
        backlog: dict[int, int] = {}
        for handle in self._handles.values():
            if handle.alive:
                backlog[handle.worker_id] = backlog.get(handle.worker_id, 0) + (
                    handle.link.backlog_bytes()
                )
        return backlog

    def stats(self) -> dict[int, dict[str, Any]]:
        """What each worker (by id) reported with its last pong."""
        return {h.worker_id: h.stats for h in self._handles.values() if h.alive}

    # ---- lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        """Spawn every worker and wait until each accepts connections."""
        for worker_id in range(self.config.workers):
            await self._spawn(worker_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STARTUP_TIMEOUT
        while not all(h.ready.is_set() for h in self._handles.values()):
            dead = [h for h in self._handles.values() if h.process.returncode is not None]
            if dead:
                # whatever its exit code, even 0: a worker that ends during the start fails it
                raise StartupError(f"worker {dead[0].worker_id} {await dead[0].exit_status()}")
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

    async def _spawn(self, worker_id: int, respawn: bool = True) -> WorkerHandle:
        key = next(self._keys)
        generation = self._generations.get(worker_id, 0)
        self._generations[worker_id] = generation + 1
        parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        parent_health, child_health = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        port = self.config.worker_port(worker_id)
        handoff, handoff_child = None, None
        if not self.config.worker_ports:
            handoff, handoff_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            handoff.setblocking(False)
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-P",
                "-m",
                "sio_cluster.workers",
                str(child_sock.fileno()),
                str(worker_id),
                log_label(worker_id, generation),
                str(child_health.fileno()),
                str(NO_HANDOFF if handoff_child is None else handoff_child.fileno()),
                str(key),
                pass_fds=tuple(
                    s.fileno() for s in (child_sock, child_health, handoff_child) if s is not None
                ),
                env={**os.environ, WORKER_CONFIG_ENV: self.config.to_json()},
            )
        except BaseException:
            if handoff is not None:
                handoff.close()
            raise
        finally:
            child_sock.close()
            child_health.close()
            if handoff_child is not None:
                handoff_child.close()
        link = FrameLink(
            lambda frame, body: self._dispatch(handle, frame, body),
            lambda exc: handle.pipe_closed.set(),
            self.config.worker_buffer_bytes,
            on_bad_frame=self._bad_frame,
        )
        health = FrameLink(
            lambda frame, body: self._on_health(handle, frame),
            lambda exc: None,
            self.config.worker_buffer_bytes,
            on_bad_frame=self._bad_frame,
        )
        rpc = Rpc(
            lambda frame: link.send(frame, droppable=False),
            lambda operation: self._events.handle_request(key, operation),
        )
        handle = WorkerHandle(
            key,
            worker_id,
            generation,
            port,
            process,
            link,
            health,
            rpc,
            respawn=respawn,
            handoff=handoff,
        )
        self._handles[key] = handle
        await link.attach(parent_sock)  # the handle exists before any frame is read
        await health.attach(parent_health)
        log.info(
            "worker %d started (pid %d, port %d, logs as %s)",
            worker_id,
            process.pid,
            port,
            handle.label,
        )
        self._spawn_task(self._watch(handle))
        return handle

    def _bad_frame(self, exc: FrameError) -> None:
        self.metrics.bad_frames.inc()
        log.error("unreadable frame from a worker: %s", exc)

    def _dispatch(self, handle: WorkerHandle, frame: Frame, body: bytes) -> None:
        """Every frame a worker sends is handled here, by its class."""
        if not handle.alive:
            return  # late frames of a dead generation must not touch the routing table
        worker = handle.key
        match frame:
            case Join() | Leave():
                self._events.on_membership(worker, frame)
            case Broadcast():
                self._events.on_broadcast(worker, frame, body)
            case Recoverable() | SessionData() | KeepSession() | Restore():
                self._events.on_recovery(worker, frame)
            case Request():
                handle.rpc.on_request(frame)
            case Response():
                handle.rpc.on_response(frame)
            case Sync(token):
                handle.link.send(Synced(token).encode(), droppable=False)
            case Failed(reason):
                handle.failure = reason
            case Ready():
                handle.ready.set()
                self._startup_progress.set()
                if not self._starting and handle.respawn:
                    log.info("worker %d ready again on port %d", handle.worker_id, handle.port)
            case Hello(_, _, namespaces):
                handle.namespaces = namespaces
                self._events.on_hello()
            case _:
                self.metrics.bad_frames.inc()
                name = type(frame).__name__
                log.error("unexpected %s frame from worker %d", name, handle.worker_id)

    def _on_health(self, handle: WorkerHandle, frame: Frame) -> None:
        """The health channel carries Pongs only: the worker's loop runs, and its counters."""
        if isinstance(frame, Pong):
            handle.unanswered_since = None
            handle.stats = frame.stats
        else:
            self.metrics.bad_frames.inc()
            log.error(
                "unexpected %s frame on worker %d's health channel",
                type(frame).__name__,
                handle.worker_id,
            )

    def _count_lost(self, handle: WorkerHandle) -> None:
        """Messages sent to a worker that died and not read by it as of its last report.

        An estimate, never below the truth: what the worker read after its last Pong (at
        most a ping interval before) is counted as lost too. A stop the master asked for
        (shutdown, rolling restart) is not counted.
        """
        if self._stopping or not handle.respawn:
            return
        lost = handle.sent - int(handle.stats.get(BROADCASTS_READ, 0))
        self.metrics.loss_events.labels(reason="worker_lost").inc()
        if lost > 0:
            self.metrics.lost.labels(reason="worker_lost").inc(lost)
            log.error(
                "worker %d (pid %d) is gone with about %d messages sent to it and not read "
                "(counted as lost: reason worker_lost)",
                handle.worker_id,
                handle.pid,
                lost,
            )

    async def _watch(self, handle: WorkerHandle) -> None:
        await handle.process.wait()
        handle.alive = False
        self._startup_progress.set()
        handle.rpc.fail_all(f"worker {handle.worker_id} died")
        handle.link.close()
        handle.health.close()
        if handle.ready.is_set():
            self._count_lost(handle)
        self._events.on_worker_exit(handle.key)
        if handle.handoff is not None:
            handle.handoff.close()  # after the acceptor forgot it (on_worker_exit)
        if self._starting:
            return  # start() reports it
        self._handles.pop(handle.key, None)
        if self._stopping or not handle.respawn:
            return
        log.error("%s %s; respawning", handle.name, await handle.exit_status())
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

    # ---- rolling restart (SIGHUP) -------------------------------------------------

    async def rolling_restart(self) -> bool:
        """Replace every worker by a new process, one at a time; False if stopped short.

        The new process of a port listens beside the old one (SO_REUSEPORT) and is ready
        before the old one is told to stop, so the port never refuses a connection; the
        old one then closes its clients (they reconnect, to the new one) and exits. A new
        process that does not get ready is killed, the old one keeps serving, and the
        restart stops there: reported, never half-applied to one port.
        """
        if self._rolling or self._stopping or self._starting:
            log.warning("rolling restart: not now (one is running, or starting or stopping)")
            return False
        self._rolling = True
        try:
            log.info("rolling restart of %d workers", self.config.workers)
            for worker_id in range(self.config.workers):
                if self._stopping or not await self._replace(worker_id):
                    return False
            log.info("rolling restart done")
            return True
        finally:
            self._rolling = False

    async def _replace(self, worker_id: int) -> bool:
        olds = [h for h in self._handles.values() if h.worker_id == worker_id and h.alive]
        new = await self._spawn(worker_id, respawn=False)
        if not await self._ready_or_dead(new):
            if new.process.returncode is None:
                how = f"not ready after {STARTUP_TIMEOUT:.0f} s"
                with contextlib.suppress(ProcessLookupError):
                    new.process.kill()
            else:
                how = await new.exit_status()
            log.error(
                "rolling restart: the new %s %s; the old one keeps serving and the restart "
                "stops here",
                new.name,
                how,
            )
            return False
        new.respawn = True
        for old in olds:
            old.respawn = False
            old.stopping = True
            with contextlib.suppress(ProcessLookupError):
                old.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(old.process.wait(), self.config.graceful_timeout + 1)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    old.process.kill()
            log.info(
                "rolling restart: worker %d replaced (pid %d -> %d)", worker_id, old.pid, new.pid
            )
        return True

    async def _ready_or_dead(self, handle: WorkerHandle) -> bool:
        """Wait until ``handle`` is ready (True), or exits or times out (False)."""
        ready = asyncio.create_task(handle.ready.wait())
        dead = asyncio.create_task(handle.process.wait())
        await asyncio.wait(
            {ready, dead}, timeout=STARTUP_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
        )
        ready.cancel()
        dead.cancel()
        return handle.ready.is_set() and handle.process.returncode is None

    async def _health_loop(self) -> None:
        """Ping every ready worker on its health channel; kill one silent for the timeout.

        A worker is judged by its oldest unanswered ping, and only after the master has read
        what its sockets hold: under a flood the master's own loop can stall for seconds,
        and a timer that fires first must not take an answer still unread for silence.
        With the timeout off (0), workers are still pinged, for their counters. Each round
        is also when the master, if quiet after a burst, gives memory back (``memtrim``).
        """
        timeout = self.config.worker_health_timeout
        interval = min(timeout / 3, PING_INTERVAL_CAP) if timeout else PING_INTERVAL_CAP
        token = 0
        received = self.metrics.hot.received
        while True:
            await asyncio.sleep(interval)
            await asyncio.sleep(0)  # one pass over the sockets: read the answers already in
            now = time.monotonic()
            token += 1
            if self.metrics.hot.received - received < QUIET_MESSAGES and not any(
                self.backlogs().values()
            ):
                self._trimmer.quiet()
            received = self.metrics.hot.received
            for handle in list(self._handles.values()):
                if not (handle.alive and handle.ready.is_set()) or handle.killed:
                    continue
                waited = 0.0 if handle.unanswered_since is None else now - handle.unanswered_since
                if timeout and waited > timeout:
                    handle.killed = True
                    self.metrics.health_kills.labels(worker=str(handle.worker_id)).inc()
                    log.error(
                        "worker %d (pid %d) silent for %.0f s; killing it",
                        handle.worker_id,
                        handle.pid,
                        waited,
                    )
                    with contextlib.suppress(ProcessLookupError):
                        handle.process.kill()
                else:
                    if handle.unanswered_since is None:
                        handle.unanswered_since = now
                    handle.health.send(Ping(token).encode(), droppable=False)

    async def stop(self) -> None:
        """SIGTERM every worker, wait for the graceful timeout, SIGKILL what is left."""
        self._stopping = True
        if self._health_task is not None:
            self._health_task.cancel()
        handles = [h for h in self._handles.values() if h.process.returncode is None]
        for handle in handles:
            handle.stopping = True
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
        for handle in self._handles.values():
            handle.link.close()
            handle.health.close()
            if handle.handoff is not None:
                handle.handoff.close()

    def kill_all(self) -> None:
        """Last resort on an unexpected master error: no worker may outlive us."""
        for handle in self._handles.values():
            with contextlib.suppress(ProcessLookupError):
                if handle.process.returncode is None:
                    os.kill(handle.pid, signal.SIGKILL)
