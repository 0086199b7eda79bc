"""The sharded form of the bus (``--adapter sharded``): its channels, encoding and subscription.

The format is Node's ``createShardedAdapter`` (:mod:`master.bus.sharded_wire`), so
Node servers using it on the same Redis (>= 7, one server or a Cluster) are
members too. What is asked and how answers combine is :class:`master.bus.core.HostBus`'s;
what differs from the classic form (:mod:`master.bus.classic`):

- Broadcasts to one public room go to that room's channel, which only servers
  holding the room subscribe to ("dynamic" mode, Node's default): this host
  subscribes to a room's channel when its first socket joins the room and
  unsubscribes when the last one leaves.
- Everything arrives on a subscriber of its own (SSUBSCRIBE), and servers are
  counted with ``PUBSUB SHARDNUMSUB``.
- There is no per-socket join/leave/disconnect: the room-wide form over the sid goes
  out. Node servers never answer those; our masters answer them (an extension Node
  ignores) so the change is applied on our hosts when a request returns.
- No recovery handovers: shards give no order across channels to hand a session over in.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

from sio_cluster.master.bus.classic_wire import (
    AdapterFormatError,
    channel_room_candidates,
    event_of,
)
from sio_cluster.master.bus.core import (
    REQUESTS_TIMEOUT,
    HostBus,
    decode_parts,
    encode_parts,
)
from sio_cluster.master.bus.listeners import BusTransport
from sio_cluster.master.bus.sharded_wire import (
    MessageType,
    ShardChannels,
    ShardMessage,
    answer_of,
    decode,
    echo_prefixes,
    encode,
    encode_operation,
    event_packet,
    opts_of,
    response_to,
    selector_of,
    work_of,
)
from sio_cluster.master.host_ops import HostOperations
from sio_cluster.master.metrics import Metrics
from sio_cluster.master.routing.fanout import Fanout
from sio_cluster.wire.frames import Broadcast, Room
from sio_cluster.wire.operations import ClusterOperation, Selector

log = logging.getLogger(__name__)

IGNORED_TYPES = (MessageType.INITIAL_HEARTBEAT, MessageType.HEARTBEAT, MessageType.ADAPTER_CLOSE)


class ShardSubscriber(Protocol):
    """The part of :class:`master.pubsub.sharded_source.ShardedSource` the bus drives."""

    connected: bool  # every wanted channel subscribed, as far as it knows

    def silent_for(self) -> float: ...

    def deliver_to(self, handler: Callable[[bytes, bytes], None]) -> None: ...

    def add_channels(self, names: list[str]) -> None: ...

    def remove_channels(self, names: list[str]) -> None: ...

    async def run(self) -> None: ...


class ShardedBus(HostBus[ShardMessage]):
    """The sharded codec of the cross-host bus."""

    per_socket_requests = False

    def __init__(
        self,
        transport: BusTransport,
        channels: ShardChannels,
        subscriber: ShardSubscriber,
        host: HostOperations,
        fanout: Fanout,
        metrics: Metrics,
        buffer_bytes: int,
    ) -> None:
        super().__init__(transport, host, fanout, metrics, buffer_bytes)
        self.channels = channels
        self.subscriber = subscriber
        self._echo_json, self._echo_msgpack = echo_prefixes(self.uid)
        subscriber.deliver_to(self._on_item)

    # ---- channels and subscription ----------------------------------------------

    async def run(self) -> None:
        """Publish (with the outage buffer) and keep the shard channels subscribed."""
        await asyncio.gather(super().run(), self.subscriber.run())

    def server_channels(self, namespace: str) -> tuple[str, str]:
        return self.channels.namespace(namespace), self.channels.masters(namespace)

    def channels_for(self, namespaces: list[str]) -> list[str]:
        """Subscribe the namespaces' shard channels (from now on, this master is one of
        their servers); the classic subscriber has nothing to add."""
        self.namespaces.update(namespaces)
        self.subscriber.add_channels([c for n in namespaces for c in self.own_channels(n)])
        return []

    def own_channels(self, namespace: str) -> list[str]:
        return [
            self.channels.namespace(namespace),
            self.channels.response(namespace, self.uid),
            self.channels.masters(namespace),
        ]

    def subscribed(self) -> bool:
        return self.subscriber.connected

    def silent_for(self) -> float:
        return self.subscriber.silent_for()

    def room_opened(self, namespace: str, room: Room, is_sid: bool) -> None:
        """This host holds ``room`` now: read its channel if Node's servers would."""
        if self.channels.subscribes_room(room, is_sid):
            self.subscriber.add_channels([self.channels.room(namespace, room)])

    def room_closed(self, namespace: str, room: Room) -> None:
        self.subscriber.remove_channels([self.channels.room(namespace, room)])

    # ---- broadcasts -----------------------------------------------------------

    def relay_worker_broadcast(self, broadcast: Broadcast) -> None:
        """Publish a worker's broadcast for the other hosts, on Node's channel for it. (Its
        echo is not tracked: no handovers with this form, see the module docstring.)"""
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
            if message.uid == self.uid or message.namespace not in self.namespaces:
                return
            if is_response:
                self.answered(message.request_id, message)
            elif message.kind == MessageType.BROADCAST and message.request_id is None:
                self._deliver(message)
            elif message.kind not in IGNORED_TYPES:
                work = work_of(message, REQUESTS_TIMEOUT)
                self.serve(channel, message, work, f"type {message.kind}")
        except AdapterFormatError as exc:
            self.unreadable(channel, exc)

    def _deliver(self, message: ShardMessage) -> None:
        data = event_of(message.data.get("packet"))
        selector = selector_of(message.data)
        namespace = message.namespace
        self.fanout.deliver(
            namespace, selector.rooms, selector.exclude, lambda: encode_parts(namespace, data)
        )

    # ---- requests and responses ---------------------------------------------------

    def send(self, operation: ClusterOperation, request_id: str | None) -> None:
        namespace = operation.namespace
        kind, data = encode_operation(operation, request_id)
        self.publish(self.channels.namespace(namespace), encode(self.uid, namespace, kind, data))

    def answer_of(self, operation: ClusterOperation, response: ShardMessage) -> Any:
        return answer_of(operation, response)

    def _respond(self, to: ShardMessage, kind: MessageType, data: dict[str, Any]) -> None:
        if to.request_id is None:
            return  # nobody waits for it
        data["requestId"] = to.data.get("requestId")
        channel = self.channels.response(to.namespace, to.uid)
        self.publish(channel, encode(self.uid, to.namespace, kind, data))

    def reply(self, request: ShardMessage, operation: ClusterOperation, result: Any) -> None:
        self._respond(request, *response_to(operation, result))

    def reply_count(self, request: ShardMessage, namespace: str, count: int) -> None:
        self._respond(request, MessageType.BROADCAST_CLIENT_COUNT, {"clientCount": count})

    def reply_ack(self, request: ShardMessage, namespace: str, args: list[Any]) -> None:
        data = {"packet": args[0] if args else None, "args": args}
        self._respond(request, MessageType.BROADCAST_ACK, data)
