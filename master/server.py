"""The master: wires Redis, the routing table, the workers and the metrics together.

Hot path, all synchronous within one event-loop tick: a ``ch:*`` message is
parsed once (:mod:`master.messages`), routed once (:mod:`master.router`), framed
once, and the same frame bytes are queued on the pipe of each target worker;
each pipe is written once per tick (:mod:`wire.link`). A worker's broadcast is
routed the same way and forwarded byte for byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import uuid
from typing import Any

import redis.asyncio as aioredis
from prometheus_client import Counter

from legacy_store.schema import Schema
from legacy_store.socket_store import SocketStore
from master.adapter_wire import Channels
from master.cluster_bus import ClusterBus
from master.config import Config
from master.embedded_redis import EmbeddedRedis
from master.host_ops import HostOperations
from master.messages import ANY_NAMESPACE, Rejected, event_prefix, parse_message
from master.metrics import Metrics, serve_metrics
from master.ratelimit import RateLimitedLogger
from master.redis_commands import command_client
from master.redis_source import RedisSource
from master.rejects import RejectSink
from master.router import RoutingTable
from master.supervisor import StartupError, Supervisor, WorkerHandle
from wire.frames import HEADER, Kind, encode_frame

log = logging.getLogger(__name__)

COMMAND_CONNECTIONS = 2  # plus the subscriber: 3 Redis connections per host, whatever N


def _is_room(value: Any) -> bool:
    return value is None or isinstance(value, str | int)


def _is_room_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str | int) for v in value)


class Master:
    """One per host. :meth:`run` returns the process exit status."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.metrics = Metrics()
        self.table = RoutingTable()
        self.supervisor = Supervisor(
            config,
            self.metrics,
            self._on_worker_frame,
            self._on_worker_exit,
            self._on_hello,
            self._on_worker_request,
        )
        self.operations = HostOperations(self.table, self.supervisor)
        self.metrics.watch_state(
            self.table.sockets_per_worker,
            self.supervisor.alive_count,
            lambda: {w: h.stats for w, h in self.supervisor.handles.items()},
        )
        self.namespaces: frozenset[str] | str = frozenset()
        self._prefixes = {p.encode(): event_prefix(p) for p in config.patterns}
        self._routed: dict[int, Counter] = {}
        self._dropped: dict[int, Counter] = {}
        self._drop_log = RateLimitedLogger(log)
        self._stop = asyncio.Event()
        self.rejects: RejectSink | None = None
        self.store: SocketStore | None = None
        self.bus: ClusterBus | None = None
        self.source: RedisSource | None = None
        self._adapter_pattern = b""
        self._subscribed_namespaces: set[str] = set()
        self._subscriptions = 0
        self._background: set[asyncio.Task[None]] = set()

    # ---- workers -> master ----------------------------------------------------

    def _on_hello(self) -> None:
        names: set[str] = set()
        for handle in self.supervisor.handles.values():
            if handle.namespaces == ANY_NAMESPACE:
                self.namespaces = ANY_NAMESPACE
                return
            names.update(handle.namespaces)
        self.namespaces = frozenset(names)

    async def _on_worker_request(
        self, handle: WorkerHandle, operation: str, args: dict[str, Any]
    ) -> Any:
        return await self.operations.handle(handle, operation, args)

    def _on_worker_exit(self, handle: WorkerHandle) -> None:
        dropped = self.table.drop_worker(handle.worker_id)
        if dropped:
            log.info("forgot %d sockets of worker %d", len(dropped), handle.worker_id)
        if self.store is not None:
            for namespace, sid in dropped:
                self.store.leave(namespace, sid, None)

    def _on_worker_frame(
        self, handle: WorkerHandle, kind: Kind, fields: list[Any], body: bytes
    ) -> None:
        worker = handle.worker_id
        if kind in (Kind.JOIN, Kind.LEAVE) and len(fields) == 3:
            namespace, sid, room = fields
            if isinstance(namespace, str) and isinstance(sid, str) and _is_room(room):
                if kind is Kind.JOIN:
                    if room is None and namespace not in self._subscribed_namespaces:
                        self._subscribe_namespaces([namespace])
                    self.table.join(worker, namespace, sid, room)
                    if self.store is not None:
                        self.store.join(namespace, sid, room)
                else:
                    self.table.leave(worker, namespace, sid, room)
                    if self.store is not None:
                        self.store.leave(namespace, sid, room)
                return
        elif kind is Kind.BROADCAST and len(fields) == 4:
            namespace, rooms, exclude, _ = fields
            if (
                isinstance(namespace, str)
                and (rooms is None or _is_room_list(rooms))
                and (_is_room_list(exclude))
            ):
                self.metrics.worker_broadcasts.inc()
                targets = self.table.route(namespace, rooms, exclude, skip_worker=worker)
                if targets:
                    self._send(targets, HEADER.pack(len(body)) + body)
                if self.bus is not None:
                    self.bus.relay_worker_broadcast(rooms, exclude, fields[3])
                return
        self.metrics.bad_frames.inc()
        log.error("malformed %s frame from worker %d: %r", kind.name, worker, fields[:4])

    # ---- Redis -> workers -----------------------------------------------------

    def _on_redis_message(self, pattern: bytes | None, channel: bytes, body: bytes) -> None:
        self.metrics.received.inc()
        name = channel.decode("utf-8", "replace")
        try:
            if self.bus is not None and pattern is None:
                self.bus.on_request_or_response(name, body)
            elif self.bus is not None and pattern == self._adapter_pattern:
                self.bus.on_broadcast(name, body)
            else:
                self._route_message(pattern or b"", name, body)
        except Exception:  # a bug here must cost one message, never the subscriber
            self.metrics.rejected.labels(reason="internal_error").inc()
            log.exception("internal error on a message from %r", name)

    def _route_message(self, pattern: bytes, name: str, body: bytes) -> None:
        try:
            delivery = parse_message(
                name,
                body,
                self._prefixes.get(pattern, ""),
                self.config.max_message_bytes,
                self.namespaces,
            )
        except Rejected as rejected:
            assert self.rejects is not None
            self.rejects.reject(name, body, rejected)
            return
        targets = self.table.route(delivery.namespace, delivery.to, delivery.exclude)
        if targets:
            frame = encode_frame(
                Kind.BROADCAST,
                delivery.namespace,
                delivery.to,
                delivery.exclude,
                [delivery.packet],
            )
            self._send(targets, frame)

    def _send(self, targets: list[int], frame: bytes) -> None:
        handles = self.supervisor.handles
        for worker in targets:
            handle = handles.get(worker)
            if handle is not None and handle.alive and handle.link.send(frame):
                counter = self._routed.get(worker)
                if counter is None:
                    counter = self._routed[worker] = self.metrics.routed.labels(str(worker))
                counter.inc()
            else:
                counter = self._dropped.get(worker)
                if counter is None:
                    counter = self._dropped[worker] = self.metrics.dropped.labels(str(worker))
                counter.inc()
                self._drop_log.log(
                    logging.WARNING,
                    worker,
                    "worker %d is not keeping up (pipe backlog over %d bytes): dropping messages",
                    worker,
                    self.config.worker_buffer_bytes,
                )

    # ---- lifecycle ------------------------------------------------------------

    async def run(self) -> int:
        """Start everything, serve until SIGTERM/SIGINT, stop gracefully; return 0."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._handle_stop_signal, sig)
        embedded: EmbeddedRedis | None = None
        metrics_runner = None
        commands: aioredis.Redis | None = None
        tasks: list[asyncio.Task[None]] = []
        try:
            url = self.config.redis_url
            if url is None:
                embedded = EmbeddedRedis().start()
                url = embedded.url
                log.info("no --redis-url: started an embedded Redis at %s", url)
            if self.config.metrics_port:
                try:
                    metrics_runner = await serve_metrics(
                        self.metrics, self.config.metrics_host, self.config.metrics_port
                    )
                except OSError as exc:
                    log.error("cannot serve metrics on port %d: %s", self.config.metrics_port, exc)
                    return 1
            name = f"sio-master:{socket.gethostname()}:{os.getpid()}"
            commands = command_client(
                url, max_connections=COMMAND_CONNECTIONS, client_name=f"{name}:cmd"
            )
            self.rejects = RejectSink(commands, self.config.rejected_key, self.metrics)
            channels = Channels(self.config.adapter_key)
            self._adapter_pattern = channels.broadcast_pattern.encode()
            self.bus = ClusterBus(
                commands,
                channels,
                self.table,
                self.operations,
                self._send,
                self.metrics,
                self.config.redis_buffer_bytes,
            )
            self.source = RedisSource(
                url,
                [*self.config.patterns, channels.broadcast_pattern],
                self._on_redis_message,
                on_subscribed=self._on_subscribed,
                client_name=f"{name}:sub",
            )
            if not await self._start_workers():
                return 1
            if self._stop.is_set():
                return 0
            log.info(
                "cluster ready: %d workers on %s ports %d-%d",
                self.config.workers,
                self.config.host,
                self.config.port,
                self.config.worker_port(self.config.workers - 1),
            )
            self._subscribe_namespaces(
                sorted(
                    {
                        n
                        for h in self.supervisor.handles.values()
                        if h.namespaces != "*"
                        for n in h.namespaces
                    }
                )
            )
            tasks = [
                asyncio.create_task(self.source.run()),
                asyncio.create_task(self.rejects.run()),
                asyncio.create_task(self.bus.run_publisher()),
            ]
            if self.config.store:
                self.store = SocketStore(
                    commands,
                    Schema(self.config.key_prefix),
                    uuid.uuid4().hex,
                    self.config.node_ttl,
                    self.table.sockets,
                )
                log.info("store: node %s, keys %s#...", self.store.node_id, self.config.key_prefix)
                tasks.append(asyncio.create_task(self.store.run()))
            await self._stop.wait()
            log.info("stopping")
            return 0
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.supervisor.stop()
            self.supervisor.kill_all()
            if self.store is not None:
                await self.store.close()
            if commands is not None:
                with contextlib.suppress(Exception):
                    await commands.aclose()
            if metrics_runner is not None:
                await metrics_runner.cleanup()
            if embedded is not None:
                embedded.close()
            log.info("stopped")

    async def _start_workers(self) -> bool:
        """Start the workers unless a stop signal comes first; False if they cannot start."""
        start = asyncio.create_task(self.supervisor.start())
        stop = asyncio.create_task(self._stop.wait())
        await asyncio.wait({start, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
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

    def _on_subscribed(self) -> None:
        if self._subscriptions:
            self.metrics.redis_reconnects.inc()
        self._subscriptions += 1

    def _subscribe_namespaces(self, namespaces: list[str]) -> None:
        """SUBSCRIBE the adapter's request/response channels of newly seen namespaces."""
        new = [n for n in namespaces if n not in self._subscribed_namespaces]
        if not new or self.bus is None or self.source is None:
            return
        self._subscribed_namespaces.update(new)
        task = asyncio.create_task(self.source.add_channels(self.bus.subscriptions(new)))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _handle_stop_signal(self, sig: signal.Signals) -> None:
        if self._stop.is_set():
            log.warning("%s again: killing workers now", sig.name)
            self.supervisor.kill_all()
            return
        log.info("%s received: stopping gracefully", sig.name)
        self._stop.set()
