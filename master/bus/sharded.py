"""Masters of several hosts form one cluster over sharded pub/sub (``--adapter sharded``).

The format is Node's ``createShardedAdapter`` (:mod:`master.bus.sharded_wire`), so
Node servers using it on the same Redis (>= 7, one server or a Cluster) are
members too. What differs from the classic bus (:mod:`master.bus.classic`):

- Broadcasts to one public room go to that room's channel, which only servers
  holding the room subscribe to ("dynamic" mode, Node's default): this host
  subscribes to a room's channel when its first socket joins the room and
  unsubscribes when the last one leaves (:class:`RoomSubscriptions`).
- Servers are counted with ``PUBSUB SHARDNUMSUB``.
- Node servers never answer join/leave/disconnect, so with Node servers present
  the sockets are counted by a fetch first; our masters answer them (an extension
  Node ignores) so the change is applied on our hosts when a request returns.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

from sio_cluster.master.bus.classic_wire import AdapterFormatError, channel_room_candidates
from sio_cluster.master.bus.core import (
    REQUESTS_TIMEOUT,
    BusCore,
    BusTransport,
    decode_parts,
    encode_parts,
)
from sio_cluster.master.bus.sharded_wire import (
    MessageType,
    ShardChannels,
    ShardMessage,
    answer_of,
    decode,
    echo_prefixes,
    encode,
    encode_operation,
    event_of,
    event_packet,
    operation_of,
    opts_of,
    response_to,
    selector_of,
)
from sio_cluster.master.host_ops import HostOperations
from sio_cluster.master.metrics import Metrics
from sio_cluster.master.routing.fanout import Fanout
from sio_cluster.master.routing.router import RoutingTable
from sio_cluster.wire.frames import Broadcast, Room
from sio_cluster.wire.operations import (
    ClusterOperation,
    DisconnectSockets,
    EmitWithAck,
    FetchSockets,
    JoinRooms,
    LeaveRooms,
    Selector,
    ServerEmit,
)

log = logging.getLogger(__name__)

IGNORED_TYPES = (MessageType.INITIAL_HEARTBEAT, MessageType.HEARTBEAT, MessageType.ADAPTER_CLOSE)


class ShardSubscriber(Protocol):
    """The part of :class:`master.pubsub.sharded_source.ShardedSource` the bus drives."""

    connected: bool  # every wanted channel subscribed, as far as it knows

    def deliver_to(self, handler: Callable[[bytes, bytes], None]) -> None: ...

    def add_channels(self, names: list[str]) -> None: ...

    def remove_channels(self, names: list[str]) -> None: ...

    async def run(self) -> None: ...


class ShardedBus(BusCore):
    """This master's side of the sharded cross-host protocol."""

    def __init__(
        self,
        transport: BusTransport,
        channels: ShardChannels,
        subscriber: ShardSubscriber,
        table: RoutingTable,
        host: HostOperations,
        fanout: Fanout,
        metrics: Metrics,
        buffer_bytes: int,
    ) -> None:
        super().__init__(transport, metrics, buffer_bytes)
        self.channels = channels
        self.subscriber = subscriber
        self.table = table
        self.host = host
        self.fanout = fanout
        self.extra_patterns: list[str] = []
        self._namespaces: set[str] = set()
        self._echo_json, self._echo_msgpack = echo_prefixes(self.uid)
        subscriber.deliver_to(self._on_item)

    async def run(self) -> None:
        """Publish (with the outage buffer) and keep the shard channels subscribed."""
        await asyncio.gather(super().run(), self.subscriber.run())

    def channels_for(self, namespaces: list[str]) -> list[str]:
        """Subscribe the namespaces' shard channels (from now on, this master is one of
        their servers); the classic subscriber has nothing to add."""
        self._namespaces.update(namespaces)
        names = []
        for namespace in namespaces:
            names += [
                self.channels.namespace(namespace),
                self.channels.response(namespace, self.uid),
                self.channels.masters(namespace),
            ]
        self.subscriber.add_channels(names)
        return []

    def on_classic(self, pattern: bytes | None, channel: str, body: bytes) -> None:
        """Nothing of this bus is on the classic subscriber."""

    def subscribed(self) -> bool:
        return self.subscriber.connected

    def room_opened(self, namespace: str, room: Room, is_sid: bool) -> None:
        """This host holds ``room`` now: read its channel if Node's servers would."""
        if self.channels.subscribes_room(room, is_sid):
            self.subscriber.add_channels([self.channels.room(namespace, room)])

    def room_closed(self, namespace: str, room: Room) -> None:
        self.subscriber.remove_channels([self.channels.room(namespace, room)])

    def _send(self, namespace: str, kind: MessageType, data: dict[str, Any]) -> None:
        self.publish(self.channels.namespace(namespace), encode(self.uid, namespace, kind, data))

    def _respond(self, to: ShardMessage, kind: MessageType, data: dict[str, Any]) -> None:
        data["requestId"] = to.data.get("requestId")
        channel = self.channels.response(to.namespace, to.uid)
        self.publish(channel, encode(self.uid, to.namespace, kind, data))

    # ---- broadcasts -----------------------------------------------------------

    def relay_worker_broadcast(self, broadcast: Broadcast) -> None:
        """Publish a worker's broadcast for the other hosts, on Node's channel for it. (Its
        echo is not tracked: shards give no order across channels, so recovery across
        hosts, which needs one, is not offered with this bus.)"""
        namespace, data = decode_parts(broadcast.parts)
        rooms = None if broadcast.rooms is None else tuple(broadcast.rooms)
        selector = Selector(rooms, tuple(broadcast.exclude))
        body = encode(
            self.uid,
            namespace,
            MessageType.BROADCAST,
            {"packet": event_packet(namespace, data), "opts": opts_of(selector)},
        )
        self.publish(self.channels.broadcast(namespace, broadcast.rooms), body)

    # ---- everything that arrives on a shard channel ------------------------------

    def _on_item(self, channel: bytes, body: bytes) -> None:
        self.metrics.hot.received += 1
        name = channel.decode("utf-8", "replace")
        try:
            self.on_message(name, body)
        except Exception:  # a bug here must cost one message, never the subscriber
            self.metrics.rejected.labels(reason="internal_error").inc()
            log.exception("internal error on a message from %r", name)

    def on_message(self, channel: str, body: bytes) -> None:
        """A message on one of our shard channels."""
        if body.startswith(self._echo_json) or body[1:].startswith(self._echo_msgpack):
            return
        parsed = self.channels.room_of(channel)
        is_response = parsed is not None and parsed[1] == self.uid
        if parsed is not None and not is_response:
            namespace, room = parsed
            if not self.fanout.wanted_here(namespace, channel_room_candidates(room)):
                return  # no socket of that room here (any more): not worth decoding
        try:
            message = decode(body)
        except AdapterFormatError as exc:
            self.unreadable(channel, exc)
            return
        if message.uid == self.uid or message.namespace not in self._namespaces:
            return
        if is_response:
            self.answered(message.request_id, message)
        elif message.kind == MessageType.BROADCAST:
            self._on_broadcast(channel, message)
        elif message.kind not in IGNORED_TYPES:
            self.spawn(self._answer(message), channel, f"type {message.kind}")

    def _on_broadcast(self, channel: str, message: ShardMessage) -> None:
        try:
            data = event_of(message.data.get("packet"))
        except AdapterFormatError as exc:
            self.unreadable(channel, exc)
            return
        selector = selector_of(message.data)
        if message.request_id is not None:
            self.spawn(self._answer_emit_with_ack(message, selector, data), channel, "an emit")
            return
        namespace = message.namespace
        self.fanout.deliver(
            namespace, selector.rooms, selector.exclude, lambda: encode_parts(namespace, data)
        )

    async def _answer(self, message: ShardMessage) -> None:
        operation = operation_of(message)
        if operation is None:
            return  # a type for requesters only, or unknown
        result = await self.host.on_host(operation)
        if message.request_id is not None:
            self._respond(message, *response_to(operation, result))

    async def _answer_emit_with_ack(
        self, message: ShardMessage, selector: Selector, data: list[Any]
    ) -> None:
        """An emit with acks from another server: count our recipients, relay each ack."""
        namespace = message.namespace
        opts = message.data.get("opts")
        flags = opts.get("flags") if isinstance(opts, dict) else None
        milliseconds = flags.get("timeout") if isinstance(flags, dict) else None
        timeout = float(milliseconds) / 1000 if milliseconds else REQUESTS_TIMEOUT
        await self.relay_acks(
            self.host,
            FetchSockets(namespace, selector, ids_only=True),
            data,
            timeout,
            lambda count: self._respond(
                message, MessageType.BROADCAST_CLIENT_COUNT, {"clientCount": count}
            ),
            lambda args: self._respond(
                message,
                MessageType.BROADCAST_ACK,
                {"packet": args[0] if args else None, "args": args},
            ),
        )

    # ---- requests to other hosts ------------------------------------------------

    def listener_channels(self) -> list[str]:
        return [self.channels.namespace(namespace) for namespace in sorted(self._namespaces)]

    async def _other_servers(self, namespace: str) -> tuple[int, int]:
        """How many other servers serve ``namespace``, and how many of them are our masters."""
        main, masters = self.channels.namespace(namespace), self.channels.masters(namespace)
        servers = await self.transport.subscribers([main, masters])
        me = 1 if namespace in self._namespaces else 0
        return max(servers.get(main, 0) - me, 0), max(servers.get(masters, 0) - me, 0)

    async def _ask(self, operation: ClusterOperation, expected: int, timeout: float) -> list[Any]:
        kind, _ = encode_operation(operation, None)

        def send(request_id: str) -> None:
            self._send(operation.namespace, *encode_operation(operation, request_id))

        return await self.ask(send, lambda r: answer_of(kind, r), expected, timeout)

    async def request(self, operation: ClusterOperation) -> Any:
        """Carry out ``operation`` on the other hosts; the answer combines theirs."""
        namespace = operation.namespace
        others, masters = await self._other_servers(namespace)
        if others == 0:
            if isinstance(operation, EmitWithAck):
                raise KeyError(f"no socket {operation.sid!r} in the cluster")
            return operation.combine([])
        match operation:
            case JoinRooms() | LeaveRooms() | DisconnectSockets():
                count = await self._membership(operation, others, masters)
                return min(count, 1) if operation.single_sid else count
            case FetchSockets():
                answers = await self._ask(operation, others, REQUESTS_TIMEOUT)
                return self.fetched([answer["sockets"] for answer in answers])
            case EmitWithAck():
                answers = await self._ask(operation, 1, operation.timeout)
                if not answers:
                    raise TimeoutError(f"no ack from {operation.sid!r}")
                return answers[0]
            case ServerEmit():
                self._send(namespace, *encode_operation(operation, None))
                return others
        raise ValueError(f"unknown operation {operation!r}")

    async def _membership(
        self, operation: JoinRooms | LeaveRooms | DisconnectSockets, others: int, masters: int
    ) -> int:
        """Join/leave/disconnect the matching sockets of every other server; how many.

        With Node servers present (they do not answer) the sockets are counted by a
        fetch first; our masters' answers are awaited either way.
        """
        counted: int | None = None
        if others > masters:
            fetch = FetchSockets(operation.namespace, operation.selector, ids_only=True)
            answers = await self._ask(fetch, others, REQUESTS_TIMEOUT)
            counted = len(self.fetched([answer["sockets"] for answer in answers]))
        counts = await self._ask(operation, masters, REQUESTS_TIMEOUT)
        return counted if counted is not None else sum(counts)
