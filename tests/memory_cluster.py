"""In-memory stand-ins for the two I/O edges of a master, for sans-I/O unit tests.

Why (the httpcore way): the cluster bus and host operations are protocol logic;
with their edges replaced by in-memory pairs, every decision they make is tested
without processes, pipes or Redis, beside the real-process integration tests.

- :class:`MemoryWorkers` is a :class:`master.supervisor.WorkerPool` whose
  workers keep their sockets in dictionaries and carry out operations the way
  ``workers.local_ops`` does, reporting membership to the routing table as a
  real worker's Join/Leave frames would.
- :class:`MemoryRedis` is a pub/sub hub with the :class:`master.bus.listeners.BusTransport`
  shape: a publish reaches every bus subscribed to the channel (or, for
  broadcasts, to the pattern), on a later loop tick as over a network. The
  sharded form's subscriber (:class:`MemoryShards`) subscribes on it too, so
  one hub serves either form of the bus.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from sio_cluster.master.bus.classic import ClusterBus
from sio_cluster.master.bus.classic_wire import Channels
from sio_cluster.master.bus.core import HostBus
from sio_cluster.master.bus.sharded import ShardedBus
from sio_cluster.master.bus.sharded_wire import ShardChannels
from sio_cluster.master.host_ops import ClusterOperations, HostOperations
from sio_cluster.master.metrics import Metrics
from sio_cluster.master.routing.fanout import Fanout
from sio_cluster.master.routing.router import RoutingTable
from sio_cluster.wire.frames import Broadcast, Room, decode_body
from sio_cluster.wire.operations import (
    ClusterOperation,
    DisconnectSockets,
    EmitWithAck,
    FetchSockets,
    JoinRooms,
    LeaveRooms,
    Selector,
    ServerEmit,
    SocketInfo,
)


@dataclass
class MemoryWorker:
    """One worker's sockets: namespace -> sid -> rooms (the sid's own room included)."""

    sockets: dict[str, dict[str, set[Room]]] = field(default_factory=dict)
    received: list[Broadcast] = field(default_factory=list)
    calls: list[ClusterOperation] = field(default_factory=list)
    server_events: list[tuple[str, list[Any]]] = field(default_factory=list)
    acks: dict[str, list[Any]] = field(default_factory=dict)
    broken: bool = False

    def select(self, namespace: str, selector: Selector) -> list[str]:
        chosen = []
        for sid, rooms in self.sockets.get(namespace, {}).items():
            wanted = selector.rooms is None or any(r in rooms for r in selector.rooms)
            if wanted and not any(r in rooms for r in selector.exclude):
                chosen.append(sid)
        return chosen


class MemoryWorkers:
    """A WorkerPool of in-memory workers that report membership to ``table``."""

    def __init__(self, table: RoutingTable, count: int) -> None:
        self.table = table
        self.workers = {w: MemoryWorker() for w in range(count)}
        self.bus: HostBus[Any] | None = None  # told of rooms opened and closed, as a master does

    def connect(self, worker: int, namespace: str, sid: str, *rooms: Room) -> None:
        self.workers[worker].sockets.setdefault(namespace, {})[sid] = {sid}
        self.table.join(worker, namespace, sid, None)
        self._report_join(worker, namespace, sid, sid)
        for room in rooms:
            self._join(worker, namespace, sid, room)

    def _report_join(self, worker: int, namespace: str, sid: str, room: Room) -> None:
        if self.table.join(worker, namespace, sid, room) and self.bus is not None:
            self.bus.room_opened(namespace, room, is_sid=room == sid)

    def _report_leave(self, worker: int, namespace: str, sid: str, room: Room) -> None:
        if self.table.leave(worker, namespace, sid, room) and self.bus is not None:
            self.bus.room_closed(namespace, room)

    def _join(self, worker: int, namespace: str, sid: str, room: Room) -> None:
        self.workers[worker].sockets[namespace][sid].add(room)
        self._report_join(worker, namespace, sid, room)

    def _leave(self, worker: int, namespace: str, sid: str, room: Room) -> None:
        self.workers[worker].sockets[namespace][sid].discard(room)
        self._report_leave(worker, namespace, sid, room)

    def rooms_of(self, worker: int, namespace: str, sid: str) -> set[Room]:
        return self.workers[worker].sockets[namespace][sid]

    # ---- the WorkerPool view ----------------------------------------------------

    def alive(self) -> list[int]:
        return list(self.workers)

    def send(self, worker: int, frame: bytes) -> bool:
        decoded = decode_body(frame[4:])
        assert isinstance(decoded, Broadcast)
        self.workers[worker].received.append(decoded)
        return True

    async def call(self, worker: int, operation: ClusterOperation, timeout: float) -> Any:
        await asyncio.sleep(0)  # an answer comes back on a later tick, as over a pipe
        memory = self.workers[worker]
        memory.calls.append(operation)
        if memory.broken:
            raise RuntimeError(f"worker {worker} is broken")
        namespace = operation.namespace
        match operation:
            case JoinRooms(_, selector, rooms):
                chosen = memory.select(namespace, selector)
                for sid in chosen:
                    for room in rooms:
                        self._join(worker, namespace, sid, room)
                return len(chosen)
            case LeaveRooms(_, selector, rooms):
                chosen = memory.select(namespace, selector)
                for sid in chosen:
                    for room in rooms:
                        if room != sid:
                            self._leave(worker, namespace, sid, room)
                return len(chosen)
            case DisconnectSockets(_, selector):
                chosen = memory.select(namespace, selector)
                for sid in chosen:
                    for room in list(memory.sockets[namespace].pop(sid)):
                        self._report_leave(worker, namespace, sid, room)
                    self.table.leave(worker, namespace, sid, None)
                return len(chosen)
            case FetchSockets(_, selector):
                return [
                    SocketInfo(
                        sid,
                        tuple(sorted(memory.sockets[namespace][sid], key=str)),
                        {"address": f"127.0.0.{worker + 1}"},
                        {"worker": worker},
                    ).to_wire()
                    for sid in memory.select(namespace, selector)
                ]
            case EmitWithAck(_, sid, data):
                return [*memory.acks.get(sid, ["ack"]), data[0]]
            case ServerEmit(_, event, args):
                memory.server_events.append((event, args))
                return 1
        raise ValueError(f"unknown operation {operation!r}")


class MemoryRedis:
    """Pub/sub between buses in one process; also lets a test act as a Node server."""

    def __init__(self) -> None:
        self.subscriptions: dict[str, list[Callable[[str, bytes], None]]] = {}
        self.patterns: list[tuple[str, Callable[[str, bytes], None]]] = []
        self.published: list[tuple[str, bytes]] = []

    def attach(self, bus: HostBus[Any], namespaces: list[str]) -> None:
        """Subscribe ``bus`` as the master's classic subscriber connection would."""
        for pattern in bus.extra_patterns:
            self.patterns.append((pattern[:-1], partial(bus.on_classic, pattern.encode())))
        for channel in bus.channels_for(namespaces):
            self.subscribe(channel, partial(bus.on_classic, None))

    def subscribe(self, channel: str, handler: Callable[[str, bytes], None]) -> None:
        self.subscriptions.setdefault(channel, []).append(handler)

    def unsubscribe(self, channel: str, handler: Callable[[str, bytes], None]) -> None:
        handlers = self.subscriptions.get(channel, [])
        if handler in handlers:
            handlers.remove(handler)

    async def publish(self, messages: list[tuple[str, bytes]]) -> None:
        loop = asyncio.get_running_loop()
        for channel, body in messages:
            self.published.append((channel, body))
            for handler in self.subscriptions.get(channel, []):
                loop.call_soon(handler, channel, body)
            for prefix, handler in self.patterns:
                if channel.startswith(prefix):
                    loop.call_soon(handler, channel, body)

    async def subscribers(self, channels: list[str]) -> dict[str, int]:
        return {c: len(self.subscriptions.get(c, [])) for c in channels}


class MemoryShards:
    """The sharded bus's own subscriber (SSUBSCRIBE), on a :class:`MemoryRedis`."""

    connected = True

    def __init__(self, redis: MemoryRedis) -> None:
        self._redis = redis
        self._handler: Callable[[bytes, bytes], None] | None = None
        self.channels: set[str] = set()

    def deliver_to(self, handler: Callable[[bytes, bytes], None]) -> None:
        self._handler = handler

    def _on(self, channel: str, body: bytes) -> None:
        assert self._handler is not None
        self._handler(channel.encode(), body)

    def add_channels(self, names: list[str]) -> None:
        for name in names:
            if name not in self.channels:
                self.channels.add(name)
                self._redis.subscribe(name, self._on)

    def remove_channels(self, names: list[str]) -> None:
        for name in names:
            if name in self.channels:
                self.channels.discard(name)
                self._redis.unsubscribe(name, self._on)

    def silent_for(self) -> float:
        return 0.0  # memory always answers

    async def run(self) -> None:
        await asyncio.Event().wait()


FORMS = ("classic", "sharded")


@dataclass
class MemoryHost:
    """One master's logic on in-memory edges."""

    table: RoutingTable
    workers: MemoryWorkers
    bus: HostBus[Any]
    operations: ClusterOperations
    task: asyncio.Task[None]

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


def memory_host(
    redis: MemoryRedis,
    workers: int = 2,
    namespaces: tuple[str, ...] = ("/",),
    form: str = "classic",
) -> MemoryHost:
    """A master's table, workers, bus (``form``: classic or sharded) and operations,
    subscribed on ``redis``."""
    table = RoutingTable()
    metrics = Metrics()
    pool = MemoryWorkers(table, workers)
    host = HostOperations(table, pool)
    fanout = Fanout(table, pool, metrics, 1 << 20)
    bus: HostBus[Any]
    if form == "sharded":
        shards = MemoryShards(redis)
        bus = ShardedBus(redis, ShardChannels(), shards, host, fanout, metrics, 1 << 20)
    else:
        bus = ClusterBus(redis, Channels(), host, fanout, metrics, 1 << 20)
    pool.bus = bus
    redis.attach(bus, list(namespaces))
    task = asyncio.create_task(bus.run())
    return MemoryHost(table, pool, bus, ClusterOperations(host, bus), task)
