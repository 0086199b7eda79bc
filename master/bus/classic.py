"""The classic redis-adapter form of the bus: its channels, encoding and subscription.

- A worker's broadcast is published once (``[uid, packet, opts]``); every other
  master delivers it to its own sockets; our own echo is dropped by uid before
  decoding. Room channels for rooms we hold no socket of are skipped undecoded.
- Cross-host operations go out as adapter requests on ``<key>-request#<nsp>#`` and
  come back as responses (:mod:`master.bus.classic_wire` maps one to the other);
  what is asked and how answers combine is :class:`master.bus.core.HostBus`'s.
- Everything arrives on the master's classic subscriber: broadcasts through one
  pattern, requests and responses on exact channels, and recovery handovers
  (:mod:`master.recovery.handover_wire`) on a channel only our masters read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sio_cluster.master.bus.classic_wire import (
    AdapterFormatError,
    AdapterMessage,
    Channels,
    RequestType,
    answer_of,
    broadcast_channel,
    channel_room_candidates,
    decode_broadcast,
    decode_message,
    decode_request,
    encode_ack,
    encode_all_rooms_response,
    encode_broadcast,
    encode_client_count,
    encode_request,
    encode_response,
    pack,
    room_matches,
    work_of,
)
from sio_cluster.master.bus.core import (
    REQUESTS_TIMEOUT,
    HostBus,
    decode_parts,
    encode_parts,
)
from sio_cluster.master.bus.listeners import BusTransport
from sio_cluster.master.host_ops import HostOperations
from sio_cluster.master.metrics import Metrics
from sio_cluster.master.recovery import handover_wire
from sio_cluster.master.recovery.handover_wire import HandoverAnswer
from sio_cluster.master.routing.fanout import Fanout
from sio_cluster.wire.frames import Broadcast
from sio_cluster.wire.operations import ClusterOperation

log = logging.getLogger(__name__)


class ClusterBus(HostBus[AdapterMessage]):
    """The classic redis-adapter codec of the cross-host bus."""

    per_socket_requests = True

    def __init__(
        self,
        transport: BusTransport,
        channels: Channels,
        host: HostOperations,
        fanout: Fanout,
        metrics: Metrics,
        buffer_bytes: int,
    ) -> None:
        super().__init__(transport, host, fanout, metrics, buffer_bytes)
        self.channels = channels
        self._echo_prefix = b"\x93" + pack(self.uid)
        self.extra_patterns = [channels.broadcast_pattern]
        self._broadcast_pattern = channels.broadcast_pattern.encode()
        self._markers: dict[str, Callable[[], None]] = {}  # request id -> its marker

    # ---- channels and subscription ----------------------------------------------

    def server_channels(self, namespace: str) -> tuple[str, str]:
        return self.channels.request(namespace), self.channels.masters(namespace)

    def channels_for(self, namespaces: list[str]) -> list[str]:
        """The exact channels to SUBSCRIBE for ``namespaces`` (from now on, this master
        counts itself among their servers)."""
        self.namespaces.update(namespaces)
        names = []
        for namespace in namespaces:
            names += [
                self.channels.request(namespace),
                self.channels.response(namespace),
                self.channels.response(namespace, self.uid),
                self.channels.masters(namespace),
            ]
        return names

    def on_classic(self, pattern: bytes | None, channel: str, body: bytes) -> None:
        """A request or response (exact channels), or a broadcast (the adapter pattern)."""
        if pattern is None:
            namespace = self.channels.parse_masters(channel)
            if namespace is None:
                self.on_request_or_response(channel, body)
            else:
                self.on_masters(namespace, channel, body)
        elif pattern == self._broadcast_pattern:
            self.on_broadcast(channel, body)

    # ---- broadcasts -----------------------------------------------------------

    def relay_worker_broadcast(self, broadcast: Broadcast) -> bytes:
        """Publish a worker's broadcast for the other hosts; return the body published."""
        namespace, data = decode_parts(broadcast.parts)
        body = encode_broadcast(self.uid, namespace, data, broadcast.rooms, broadcast.exclude)
        self.publish(broadcast_channel(self.channels, namespace, broadcast.rooms), body)
        return body

    def on_broadcast(self, channel: str, body: bytes) -> None:
        """A broadcast from another server or an emitter: deliver to our sockets."""
        if body.startswith(self._echo_prefix):
            self.handovers.echoed(body)
            return
        parsed = self.channels.parse_broadcast(channel)
        if parsed is None:
            return
        namespace, room = parsed
        if room and not self.fanout.wanted_here(namespace, channel_room_candidates(room)):
            return  # no socket of that room here: not worth decoding
        try:
            message = decode_broadcast(body)
        except AdapterFormatError as exc:
            self.unreadable(channel, exc)
            return
        if message.uid == self.uid or message.namespace != namespace:
            return
        rooms: list[Any] | None = message.rooms or None
        exclude = list(message.exclude)
        if room and rooms and len(rooms) > 1:
            index = next((i for i, r in enumerate(rooms) if room_matches(room, r)), None)
            if index is not None:
                # old emitters publish one copy per room, each with all rooms: this copy is
                # for that room only, minus the rooms listed before it, so nobody gets two
                exclude += rooms[:index]
                rooms = [rooms[index]]
        self.fanout.deliver(
            namespace, rooms, exclude, lambda: encode_parts(namespace, message.data)
        )

    # ---- recovery handovers (connection state recovery across hosts) --------------

    async def handover(
        self,
        namespace: str,
        pid: str,
        offset: str,
        sent: Callable[[], None],
        returned: Callable[[], None],
    ) -> HandoverAnswer | None:
        """Ask our other masters for the session ``pid`` and what it missed after ``offset``
        (see :mod:`master.recovery.handover_wire`). ``sent()`` runs as the request is queued, behind
        every broadcast published before it; ``returned()`` when it comes back from Redis:
        the point of Redis's order up to which the owner answers."""
        _, masters = await self.other_servers(namespace)
        if masters == 0:
            return None

        def send(request_id: str) -> None:
            self._markers[request_id] = returned
            body = handover_wire.encode_request(self.uid, request_id, pid, offset)
            self.publish(self.channels.masters(namespace), body)
            sent()

        answers = await self.ask_with(
            send, lambda message: handover_wire.read_answer(namespace, message.fields), masters, 3.0
        )
        return next((answer for answer in answers if answer.outcome is not None), None)

    def on_masters(self, namespace: str, channel: str, body: bytes) -> None:
        """A handover request, answered at once: its place in Redis's order is the point
        up to which this host's log answers for it."""
        try:
            request = handover_wire.read_request(decode_request(body))
        except AdapterFormatError as exc:
            self.unreadable(channel, exc)
            return
        if request is None:
            self.unreadable(channel, AdapterFormatError("not a handover request"))
            return
        if request.uid == self.uid:
            marker = self._markers.pop(request.request_id, None)
            if marker is not None:
                marker()
            return
        outcome, found = self.handovers.answer_handover(namespace, request)
        answer = handover_wire.encode_answer(request.request_id, outcome, found)
        self.publish(self.channels.response(namespace, request.uid), answer)

    # ---- requests and responses ---------------------------------------------------

    def send(self, operation: ClusterOperation, request_id: str | None) -> None:
        body = encode_request(self.uid, operation, request_id)
        self.publish(self.channels.request(operation.namespace), body)

    def answer_of(self, operation: ClusterOperation, response: AdapterMessage) -> Any:
        return answer_of(operation, response)

    def on_request_or_response(self, channel: str, body: bytes) -> None:
        parsed = self.channels.parse_request_or_response(channel)
        if parsed is None:
            return
        kind, namespace = parsed
        try:
            message = decode_message(body)
        except AdapterFormatError as exc:
            self.unreadable(channel, exc)
            return
        if kind == "response":
            self.answered(message.request_id, message)
        elif message.uid == self.uid:
            return  # our own request (emitters send no uid; Node servers their own)
        elif message.kind == RequestType.ALL_ROOMS:
            rooms = self.fanout.table.room_names(namespace)
            self._respond(namespace, encode_all_rooms_response(message, rooms))
        else:
            try:
                work = work_of(namespace, message, REQUESTS_TIMEOUT)
            except AdapterFormatError as exc:
                self.unreadable(channel, exc)
                return
            self.serve(channel, message, work, f"type {message.kind!r}")

    def _respond(self, namespace: str, body: bytes | None) -> None:
        if body is not None:
            self.publish(self.channels.response(namespace), body)

    def reply(self, request: AdapterMessage, operation: ClusterOperation, result: Any) -> None:
        self._respond(operation.namespace, encode_response(request, operation, result))

    def reply_count(self, request: AdapterMessage, namespace: str, count: int) -> None:
        self._respond(namespace, encode_client_count(request, count))

    def reply_ack(self, request: AdapterMessage, namespace: str, args: list[Any]) -> None:
        self._respond(namespace, encode_ack(request, args))
