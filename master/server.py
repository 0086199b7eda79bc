"""The master: wires Redis, the routing table, the workers and the metrics together.

Lifecycle (the uvicorn shape): :func:`serve` resolves what the master needs from
outside (the Redis URL, starting the embedded Redis if none is given; the metrics
endpoint; the command connections), then :class:`Master` builds every component
once, so nothing on the hot path is optional, and runs startup, main loop and
shutdown.

Hot path, all synchronous within one event-loop tick: a ``ch:*`` message is
parsed once (:mod:`master.routing.messages`), then routed, framed once and queued on
the pipe of each target worker (:mod:`master.routing.fanout`); each pipe is written once
per tick (:mod:`wire.link`). A worker's broadcast takes the same path and is
forwarded byte for byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import uuid
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis

from sio_cluster.common.config import Config
from sio_cluster.common.forwarded import TrustedHosts
from sio_cluster.common.redis.topology import Topology, topology_for
from sio_cluster.legacy_store.schema import Schema
from sio_cluster.legacy_store.socket_store import MembershipStore, NoStore, SocketStore
from sio_cluster.master.acceptor.listener import Acceptor
from sio_cluster.master.bus.classic import ClusterBus
from sio_cluster.master.bus.classic_wire import Channels
from sio_cluster.master.bus.core import HostBus
from sio_cluster.master.bus.sharded import ShardedBus
from sio_cluster.master.bus.sharded_wire import ShardChannels
from sio_cluster.master.bus.transport import RedisTransport
from sio_cluster.master.embedded_redis import EmbeddedRedis, EmbeddedRedisError
from sio_cluster.master.first_contact import RedisRefused, first_contact
from sio_cluster.master.host_ops import ClusterOperations, HostOperations
from sio_cluster.master.metrics import Metrics, serve_metrics
from sio_cluster.master.pubsub.liveness import Bounds
from sio_cluster.master.pubsub.sharded_source import ShardedSource
from sio_cluster.master.pubsub.source import RedisSource
from sio_cluster.master.recovery.host import HostRecovery
from sio_cluster.master.recovery.log import RecoveryLog
from sio_cluster.master.recovery.off import NullRecovery, Recovery
from sio_cluster.master.routing.fanout import Fanout
from sio_cluster.master.routing.messages import Rejected, event_prefix, parse_message
from sio_cluster.master.routing.rejects import RejectSink
from sio_cluster.master.routing.router import RoutingTable
from sio_cluster.master.store09.bridge import LegacyFleet
from sio_cluster.master.supervisor import StartupError, Supervisor
from sio_cluster.wire.frames import Broadcast, Join, Leave, RecoveryFrame, is_room
from sio_cluster.wire.operations import ClusterOperation

log = logging.getLogger(__name__)

STOP_TASKS_SECONDS = 5.0  # how long the subscriber, publisher and store get to stop
COMMAND_CONNECTIONS = 2  # plus the subscriber: 3 Redis connections per host, whatever N
# On a Cluster, redis-py keeps a pool per node that refuses a user beyond its size instead of
# making it wait, so each node's pool holds one connection per user that may run at once:
# the publisher, the rejected list and the server count (one count at a time); with --store
# also the store's writer and its heartbeat.
NODE_COMMAND_USERS = 3
STORE_COMMAND_USERS = 2


class Master:
    """One per host: every component, built once; :meth:`run` returns the exit status."""

    def __init__(
        self, config: Config, topology: Topology, commands: aioredis.Redis, metrics: Metrics
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.table = RoutingTable()
        self.supervisor = Supervisor(config, metrics, self)
        self.recovery: Recovery = NullRecovery(metrics.bad_frames)
        if config.connection_state_recovery:
            recovery_log = RecoveryLog(
                config.connection_state_recovery, config.recovery_buffer_bytes
            )
            self.recovery = HostRecovery(
                recovery_log, self.on_membership, self.supervisor.send_control
            )
            metrics.watch_recovery(recovery_log)
        self.fanout = Fanout(
            self.table, self.supervisor, metrics, config.worker_buffer_bytes, self.recovery.log
        )
        self.host = HostOperations(self.table, self.supervisor)
        bounds = Bounds(config.redis_stall_timeout, config.redis_health_check_interval)
        transport = RedisTransport(
            commands, cluster=topology.is_cluster, sharded=config.adapter == "sharded"
        )
        self.bus: HostBus[Any]
        if config.adapter == "sharded":
            self.bus = ShardedBus(
                transport,
                ShardChannels(config.adapter_key, config.subscription_mode),
                ShardedSource(
                    topology,
                    self._reconnect_counter(),
                    f"{client_name()}:ssub",
                    bounds,
                    self._subscriber_loss,
                ),
                self.host,
                self.fanout,
                metrics,
                config.redis_buffer_bytes,
            )
        else:
            self.bus = ClusterBus(
                transport,
                Channels(config.adapter_key),
                self.host,
                self.fanout,
                metrics,
                config.redis_buffer_bytes,
            )
        self.recovery.hand_over_through(self.bus)
        # None unless --redis-store-09: the hot path pays one test for it
        self.legacy_fleet = (
            LegacyFleet(
                self.bus.publish,
                transport,
                commands,
                self.fanout,
                metrics,
                config.redis_store_09_roll_call,
            )
            if config.redis_store_09
            else None
        )
        self.operations = ClusterOperations(
            self.host, self.bus, self.legacy_fleet.fetch if self.legacy_fleet else None
        )
        self.rejects = RejectSink(commands, config.rejected_key, metrics)
        self.store: MembershipStore = NoStore()
        if config.store:
            self.store = SocketStore(
                commands,
                Schema(config.key_prefix),
                uuid.uuid4().hex,
                config.node_ttl,
                self.table.sockets,
            )
        self.patterns = [*config.patterns, *self.bus.extra_patterns]
        self.source = RedisSource(
            topology,
            self.patterns,
            self._on_redis_message,
            on_subscribed=self._reconnect_counter(),
            client_name=f"{client_name()}:sub",
            bounds=bounds,
            on_loss=self._subscriber_loss,
        )
        metrics.watch_state(
            lambda: self.supervisor.per_worker(self.table.sockets_per_worker()),
            self.supervisor.alive_count,
            self.supervisor.stats,
        )
        self.namespaces: frozenset[str] | str = frozenset()
        self._prefixes = {p.encode(): event_prefix(p) for p in config.patterns}
        self._subscribed_namespaces: set[str] = set()
        self._background: set[asyncio.Task[None]] = set()
        self.acceptor: Acceptor | None = None
        if not config.worker_ports:
            self.acceptor = Acceptor(
                config.host,
                config.port,
                config.header_timeout,
                self.supervisor,
                lambda outcome: metrics.connections.labels(outcome=outcome).inc(),
                TrustedHosts(config.forwarded_allow_ips) if config.proxy_protocol else None,
            )

    # ---- workers -> master (called by the supervisor's dispatch) ----------------

    def on_hello(self) -> None:
        self.namespaces = self.supervisor.namespaces()

    def on_membership(self, worker: int, report: Join | Leave) -> None:
        namespace, sid, room = report.namespace, report.sid, report.room
        if isinstance(report, Join):
            if room is None and namespace not in self._subscribed_namespaces:
                self._subscribe_namespaces([namespace])
            if self.table.join(worker, namespace, sid, room) and room is not None:
                self.bus.room_opened(namespace, room, is_sid=room == sid)
            self.store.join(namespace, sid, room)
            if self.legacy_fleet is not None:
                self.legacy_fleet.our_join(namespace, sid, room)
        else:
            if self.table.leave(worker, namespace, sid, room) and room is not None:
                self.bus.room_closed(namespace, room)
            self.store.leave(namespace, sid, room)
            if self.legacy_fleet is not None:
                self.legacy_fleet.our_leave(namespace, sid, room)
            if room is None:
                self.recovery.socket_left(namespace, sid)

    def on_broadcast(self, worker: int, broadcast: Broadcast, body: bytes) -> None:
        self.metrics.worker_broadcasts.inc()
        seq = self.recovery.deliver_own(self.fanout, worker, broadcast, body)
        self.recovery.published(seq, self.bus.relay_worker_broadcast(broadcast))
        if self.legacy_fleet is not None:
            self.legacy_fleet.relay_broadcast(broadcast)

    def on_recovery(self, worker: int, frame: RecoveryFrame) -> None:
        self.recovery.on_frame(worker, frame)

    def on_worker_exit(self, worker: int) -> None:
        if self.acceptor is not None:
            self.acceptor.forget(worker)
        self.recovery.worker_lost(self.table.sockets_of_worker(worker))
        dropped, emptied = self.table.drop_worker(worker)
        for namespace, room in emptied:
            if is_room(room):
                self.bus.room_closed(namespace, room)
        if dropped:
            log.info("forgot %d sockets of %s", len(dropped), self.supervisor.describe(worker))
        for namespace, sid in dropped:
            self.store.leave(namespace, sid, None)
            if self.legacy_fleet is not None:
                self.legacy_fleet.our_leave(namespace, sid, None)

    async def handle_request(self, worker: int, operation: ClusterOperation) -> Any:
        return await self.operations.handle(worker, operation)

    # ---- Redis -> workers -----------------------------------------------------

    def _on_redis_message(self, pattern: bytes | None, channel: bytes, body: bytes) -> None:
        self.metrics.hot.received += 1
        name = channel.decode("utf-8", "replace")
        try:
            if pattern in self._prefixes:
                self._route_message(pattern, channel, name, body)
            elif self.legacy_fleet is not None and pattern is None and name in LegacyFleet.channels:
                self.legacy_fleet.on_message(name, body)
            else:
                self.bus.on_classic(pattern, name, body)
        except Exception:  # a bug here must cost one message, never the subscriber
            self.metrics.rejected.labels(reason="internal_error").inc()
            log.exception("internal error on a message from %r", name)

    def _route_message(self, pattern: bytes, channel: bytes, name: str, body: bytes) -> None:
        try:
            if "\ufffd" in name and not _is_utf8(channel):
                raise Rejected("bad_event", "the channel name (the event) is not UTF-8")
            delivery = parse_message(
                name,
                body,
                self._prefixes.get(pattern, ""),
                self.config.max_message_bytes,
                self.namespaces,
            )
        except Rejected as rejected:
            self.rejects.reject(name, body, rejected)
            return
        self.fanout.deliver(delivery.namespace, delivery.to, delivery.exclude, [delivery.packet])
        if self.legacy_fleet is not None:
            self.legacy_fleet.relay_channel_message(delivery)

    def _reconnect_counter(self) -> Callable[[], None]:
        """What one subscriber calls on every (re)subscription: all but its first count as
        reconnects (each subscriber has its own, so a second one starting is not one)."""
        first = True

        def subscribed() -> None:
            nonlocal first
            if not first:
                self.metrics.redis_reconnects.inc()
            first = False

        return subscribed

    def _subscribe_namespaces(self, namespaces: list[str]) -> None:
        """SUBSCRIBE the adapter's request/response channels of newly seen namespaces."""
        new = [n for n in namespaces if n not in self._subscribed_namespaces]
        if not new:
            return
        self._subscribed_namespaces.update(new)
        task = asyncio.create_task(self.source.add_channels(self.bus.channels_for(new)))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ---- lifecycle ------------------------------------------------------------

    def _subscriber_loss(self, reason: str, estimate: int) -> None:
        """The subscriber's connection ended and cost about ``estimate`` messages."""
        self.metrics.loss_events.labels(reason=reason).inc()
        self.metrics.lost.labels(reason=reason).inc(estimate)

    def readiness(self, stop: asyncio.Event) -> dict[str, Any]:
        """What ``/readyz`` answers: ready while every worker serves, every subscriber is
        subscribed and hears from Redis (a paused Redis delivers nothing, though still
        connected), and no stop has begun (so a balancer drains this host first)."""
        workers = self.supervisor.alive_count()
        subscribed = self.source.connected and self.bus.subscribed()
        silent = max(self.source.silent_for(), self.bus.silent_for())
        stalled = silent > self.config.redis_stall_timeout
        stopping = stop.is_set()
        state: dict[str, Any] = {
            "ready": workers == self.config.workers and subscribed and not stalled and not stopping,
            "workers": workers,
            "workers_expected": self.config.workers,
            "redis_subscribed": subscribed,
            "redis_stalled": stalled,
            "stopping": stopping,
        }
        if stalled:  # why: how long Redis has been mute
            state["redis_silent_seconds"] = round(silent, 1)
        return state

    async def run(self, stop: asyncio.Event) -> int:
        """Startup, main loop until ``stop`` is set, shutdown; return the exit status."""
        tasks: list[asyncio.Task[None]] = []
        config = self.config
        if self.acceptor is not None:
            try:
                self.acceptor.listen()  # before any worker starts: a taken port fails at once
            except OSError as exc:
                log.error("cannot listen on %s:%d: %s", config.host, config.port, exc)
                return 1
        try:
            if not await self._start_workers(stop):
                return 1
            if stop.is_set():
                return 0
            if self.acceptor is not None:
                self.acceptor.start()
                log.info(
                    "cluster ready: %d workers behind %s port %d",
                    config.workers,
                    config.host,
                    config.port,
                )
            else:
                log.info(
                    "cluster ready: %d workers on %s ports %d-%d",
                    config.workers,
                    config.host,
                    config.port,
                    config.worker_port(config.workers - 1),
                )
            served = self.namespaces
            self._subscribe_namespaces(sorted(served) if isinstance(served, frozenset) else [])
            tasks = [
                asyncio.create_task(self.source.run()),
                asyncio.create_task(self.rejects.run()),
                asyncio.create_task(self.bus.run()),
                asyncio.create_task(self.store.run()),
            ]
            if self.legacy_fleet is not None:
                await self.source.add_channels(LegacyFleet.channels)
                tasks.append(asyncio.create_task(self.legacy_fleet.run()))
            await stop.wait()
            log.info("stopping")
            return 0
        finally:
            if self.acceptor is not None:
                self.acceptor.close()  # stop accepting: a stopping host takes no new clients
            await _cancel(tasks)
            if self.legacy_fleet is not None and tasks:
                await self.legacy_fleet.close({sid for _, sid, _ in self.table.sockets()})
            await self.supervisor.stop()
            self.supervisor.kill_all()
            if tasks:  # the store wrote something only if the cluster got ready
                await self.store.close()

    async def _start_workers(self, stop: asyncio.Event) -> bool:
        """Start the workers unless a stop signal comes first; False if they cannot start."""
        start = asyncio.create_task(self.supervisor.start())
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({start, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not start.done():
            start.cancel()
            await asyncio.gather(start, return_exceptions=True)
            return True
        try:
            start.result()
        except StartupError as exc:
            log.error("cluster failed to start: %s", exc)
            return False
        return True


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel ``tasks`` and wait for them, a bounded time: on Python 3.11 a cancellation that
    meets a completing ``wait_for`` (redis-py has some) can be lost, and the stop must not hang
    on it (a test's loop once went on for 23 minutes after its cancel)."""
    for task in tasks:
        task.cancel()
    if not tasks:
        return
    done, pending = await asyncio.wait(tasks, timeout=STOP_TASKS_SECONDS)
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            log.error("%s ended with %r", task.get_coro(), task.exception())
    if pending:
        log.warning("%d background tasks did not stop when asked; going on", len(pending))


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def command_connections(config: Config, topology: Topology) -> int:
    """The size of the command pool: shared by every user on one Redis; per node, one
    connection per concurrent user, on a Cluster (see NODE_COMMAND_USERS)."""
    if not topology.is_cluster:
        return COMMAND_CONNECTIONS
    return NODE_COMMAND_USERS + (STORE_COMMAND_USERS if config.store else 0)


def client_name() -> str:
    """How this master's Redis connections are named in ``CLIENT LIST``."""
    return f"sio-master:{socket.gethostname()}:{os.getpid()}"


async def serve(config: Config) -> int:
    """Run a master until SIGTERM/SIGINT; a second signal kills the workers at once.
    SIGHUP replaces the workers one at a time (see ``Supervisor.rolling_restart``)."""
    stop = asyncio.Event()
    master: Master | None = None

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set():
            log.warning("%s again: killing workers now", sig.name)
            if master is not None:
                master.supervisor.kill_all()
            return
        log.info("%s received: stopping gracefully", sig.name)
        stop.set()

    restarts: set[asyncio.Task[bool]] = set()

    def on_hup() -> None:
        if master is None or stop.is_set():
            log.warning("SIGHUP: no workers to restart now")
            return
        task = asyncio.create_task(master.supervisor.rolling_restart())
        restarts.add(task)
        task.add_done_callback(restarts.discard)

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    loop.add_signal_handler(signal.SIGHUP, on_hup)
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(log.info, "stopped")
        url = config.redis_url
        if url is None:
            try:
                embedded = EmbeddedRedis().start()
            except EmbeddedRedisError as exc:
                log.error("cannot start: no --redis-url and no embedded Redis: %s", exc)
                return 1
            stack.callback(embedded.close)
            url = embedded.url
            log.info("no --redis-url: started an embedded Redis at %s", url)
        metrics = Metrics()
        if config.metrics_port:
            try:
                runner = await serve_metrics(
                    metrics,
                    config.metrics_host,
                    config.metrics_port,
                    lambda: master.readiness(stop) if master is not None else {"ready": False},
                )
            except OSError as exc:
                log.error("cannot serve metrics on port %d: %s", config.metrics_port, exc)
                return 1
            stack.push_async_callback(runner.cleanup)
        topology = topology_for(url)
        stack.push_async_callback(topology.close)
        log.info("Redis: %s", topology.describe)
        commands = topology.commands(command_connections(config, topology), f"{client_name()}:cmd")
        stack.push_async_callback(_close_quietly, commands)
        master = Master(config, topology, commands, metrics)
        try:
            if not await first_contact(
                commands,
                topology,
                master.patterns,
                f"{client_name()}:sub",
                stop,
                master.bus.own_channels("/"),
            ):
                return 0  # stopped while waiting for Redis
        except RedisRefused as exc:
            log.error("cannot start: %s", exc)
            return 1
        return await master.run(stop)
    return 1  # unreachable: the exit stack does not swallow exceptions


async def _close_quietly(client: aioredis.Redis) -> None:
    with contextlib.suppress(Exception):
        await client.aclose()
