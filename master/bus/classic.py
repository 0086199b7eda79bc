"""Masters of several hosts form one cluster through Redis, in the redis-adapter format.

- A worker's broadcast is published once (``[uid, packet, opts]``); every other
  master delivers it to its own sockets; our own echo is dropped by uid before
  decoding. Room channels for rooms we hold no socket of are skipped undecoded.
- Cross-host operations go out as adapter requests and come back as responses;
  a master answers as ONE server, combining its workers
  (:class:`master.host_ops.HostOperations`). The request/operation mapping is
  :mod:`master.bus.classic_wire`'s.
- Node servers on the same Redis are members too. They answer per-socket
  requests, fetches and acks, but carry room-wide join/leave/disconnect out
  without answering: those wait only for our other masters (a channel only our
  masters subscribe to tells them apart, by ``PUBSUB NUMSUB``), and with Node
  servers present the sockets are counted by a fetch first.
- Outbound messages wait in a bounded :class:`common.outbox.Outbox` while Redis
  is unreachable and are published on recovery; what overflows is counted
  (oldest dropped first).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from sio_cluster.master.bus.classic_wire import (
    AdapterFormatError,
    Channels,
    EmitRequest,
    RequestType,
    answer_to,
    broadcast_channel,
    channel_room_candidates,
    count_of,
    decode_broadcast,
    decode_emit_request,
    decode_request,
    encode_all_rooms_response,
    encode_broadcast,
    encode_request,
    encode_requests,
    encode_response,
    is_own,
    operation_of_request,
    pack,
    request_id_of,
    room_matches,
    type_of,
)
from sio_cluster.master.bus.core import (
    REQUESTS_TIMEOUT,
    BusCore,
    BusTransport,
    decode_parts,
    encode_parts,
)
from sio_cluster.master.host_ops import HostOperations
from sio_cluster.master.metrics import Metrics
from sio_cluster.master.recovery import handover_wire
from sio_cluster.master.recovery.handover_wire import HandoverAnswer, HandoverRequest
from sio_cluster.master.recovery.log import Outcome, Restoration
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
    ServerEmit,
)

log = logging.getLogger(__name__)


class HandoverPeer(Protocol):
    """What the bus asks of connection state recovery (:mod:`master.recovery.host`)."""

    def answer_handover(
        self, namespace: str, request: HandoverRequest
    ) -> tuple[Outcome | None, Restoration | None]: ...

    def echoed(self, body: bytes) -> None: ...


class RedisTransport:
    """The bus's edge on the master's command connections.

    On a Redis Cluster (``cluster``) redis-py refuses PUBLISH in a pipeline, so a
    batch goes one PUBLISH after the other, in order, and all of them to ONE node
    (redis-py's default node, replaced when it fails): the cluster forwards each node's
    messages to the others in order, while messages published on different nodes can
    overtake each other. And a node counts only its own subscribers, so
    ``PUBSUB NUMSUB`` is asked of every node and summed.

    ``sharded``: SPUBLISH and ``PUBSUB SHARDNUMSUB`` instead. On a Cluster each
    SPUBLISH goes to the primary owning its channel (redis-py routes it by key), so
    messages of one channel keep their order, and those of different channels may not.
    """

    def __init__(self, redis: aioredis.Redis, cluster: bool = False, sharded: bool = False) -> None:
        self._redis = redis
        self._cluster = cluster
        self._publish = "SPUBLISH" if sharded else "PUBLISH"
        # one word, as redis-py's own pubsub_numsub sends it: redis-py 8.2's Cluster pairs a
        # node's reply only for that form (docs/upstream/redis-py-cluster-numsub.md)
        self._numsub = "PUBSUB SHARDNUMSUB" if sharded else "PUBSUB NUMSUB"
        # on a Cluster: SPUBLISH goes where redis-py routes it, PUBLISH through one node
        self._route: dict[str, Any] = {} if sharded else {"target_nodes": "default-node"}
        self._counting = asyncio.Lock()  # one count at a time: the per-node pools stay small

    async def publish(self, messages: list[tuple[str, bytes]]) -> None:
        """PUBLISH (or SPUBLISH) each message, in order."""
        if self._cluster:
            for channel, body in messages:  # one at a time: see the class docstring
                await self._redis.execute_command(self._publish, channel, body, **self._route)
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for channel, body in messages:
                pipe.execute_command(self._publish, channel, body)
            await pipe.execute()

    async def _cluster_subscribers(self, channels: list[str]) -> dict[str, int]:
        """``PUBSUB NUMSUB`` asked of every node, summed (each node knows only its own
        subscribers, and a Node server's may sit on a replica)."""
        total = dict.fromkeys(channels, 0)
        cluster: Any = self._redis
        replies = []
        async with self._counting:
            await cluster.initialize()  # the node list is empty until the first command
            for node in cluster.get_nodes():  # a subscriber is on exactly one node
                try:
                    replies.append(
                        await cluster.execute_command(self._numsub, *channels, target_nodes=node)
                    )
                except (RedisError, OSError):
                    continue  # a failed node has no subscribers left to count
        for reply in replies:
            total = _add_counts(total, reply)
        return total

    async def subscribers(self, channels: list[str]) -> dict[str, int]:
        """``PUBSUB NUMSUB`` (or ``SHARDNUMSUB``) of each channel."""
        if self._cluster:
            return await self._cluster_subscribers(channels)
        reply = await self._redis.execute_command(self._numsub, *channels)
        return _add_counts(dict.fromkeys(channels, 0), reply)


def _add_counts(total: dict[str, int], reply: Any) -> dict[str, int]:
    """Add a ``PUBSUB NUMSUB`` reply (flat, or pairs in some redis-py versions) to ``total``."""
    if reply and isinstance(reply[0], tuple | list):
        reply = [value for pair in reply for value in pair]
    for name, count in zip(reply[::2], reply[1::2], strict=True):
        key = name.decode() if isinstance(name, bytes) else str(name)
        total[key] = total.get(key, 0) + int(count)
    return total


class ClusterBus(BusCore):
    """This master's side of the cross-host protocol (classic redis-adapter form)."""

    def __init__(
        self,
        transport: BusTransport,
        channels: Channels,
        table: RoutingTable,
        host: HostOperations,
        fanout: Fanout,
        metrics: Metrics,
        buffer_bytes: int,
    ) -> None:
        super().__init__(transport, metrics, buffer_bytes)
        self.channels = channels
        self.table = table
        self.host = host
        self.fanout = fanout
        self._namespaces: set[str] = set()
        self._echo_prefix = b"\x93" + pack(self.uid)
        self.extra_patterns = [channels.broadcast_pattern]
        self._broadcast_pattern = channels.broadcast_pattern.encode()
        # connection state recovery across hosts, when on (set by the master)
        self.handovers: HandoverPeer | None = None
        self._markers: dict[str, Callable[[], None]] = {}  # request id -> its marker

    def channels_for(self, namespaces: list[str]) -> list[str]:
        """The exact channels to SUBSCRIBE for ``namespaces`` (from now on, this master
        counts itself among their servers)."""
        self._namespaces.update(namespaces)
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

    def subscribed(self) -> bool:
        """Everything is on the classic subscriber."""
        return True

    def room_opened(self, namespace: str, room: Room, is_sid: bool) -> None:
        """Every broadcast channel is read through one pattern: nothing to subscribe."""

    def room_closed(self, namespace: str, room: Room) -> None:
        """See :meth:`room_opened`."""

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
            if self.handovers is not None:
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
        _, masters = await self._other_servers(namespace)
        if masters == 0:
            return None

        def send(request_id: str) -> None:
            self._markers[request_id] = returned
            body = handover_wire.encode_request(self.uid, request_id, pid, offset)
            self.publish(self.channels.masters(namespace), body)
            sent()

        answers = await self.ask(
            send, lambda message: handover_wire.read_answer(namespace, message), masters, 3.0
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
        outcome, found = None, None
        if self.handovers is not None:
            outcome, found = self.handovers.answer_handover(namespace, request)
        answer = handover_wire.encode_answer(request.request_id, outcome, found)
        self.publish(self.channels.response(namespace, request.uid), answer)

    # ---- requests to other hosts ------------------------------------------------

    def listener_channels(self) -> list[str]:
        return [self.channels.request(namespace) for namespace in sorted(self._namespaces)]

    async def _other_servers(self, namespace: str) -> tuple[int, int]:
        """How many other servers serve ``namespace``, and how many of them are our masters."""
        servers = await self.transport.subscribers(
            [self.channels.request(namespace), self.channels.masters(namespace)]
        )
        me = 1 if namespace in self._namespaces else 0
        total = servers.get(self.channels.request(namespace), 0)
        ours = servers.get(self.channels.masters(namespace), 0)
        return max(total - me, 0), max(ours - me, 0)

    async def _ask(
        self, namespace: str, request: dict[str, Any], expected: int, timeout: float
    ) -> list[Any]:
        """Publish a request and collect up to ``expected`` answers within ``timeout``."""
        channel = self.channels.request(namespace)

        def send(request_id: str) -> None:
            self.publish(channel, encode_request(self.uid, request, request_id))

        kind = type_of(request)
        return await self.ask(send, lambda message: answer_to(kind, message), expected, timeout)

    def _fetched(self, answers: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return self.fetched([answer.get("sockets") for answer in answers])

    def _tell(self, namespace: str, request: dict[str, Any]) -> None:
        """Publish a request that nobody answers."""
        self.publish(self.channels.request(namespace), encode_request(self.uid, request))

    async def request(self, operation: ClusterOperation) -> Any:
        """Carry out ``operation`` on the other hosts; the answer combines theirs."""
        namespace = operation.namespace
        others, masters = await self._other_servers(namespace)
        requests = encode_requests(operation)
        if others == 0:
            if isinstance(operation, EmitWithAck):
                raise KeyError(f"no socket {operation.sid!r} in the cluster")
            return operation.combine([])
        match operation:
            case JoinRooms() | LeaveRooms() | DisconnectSockets() if operation.single_sid:
                owners = await asyncio.gather(
                    *(self._ask(namespace, r, 1, REQUESTS_TIMEOUT) for r in requests)
                )
                return 1 if all(owners) else 0
            case JoinRooms() | LeaveRooms() | DisconnectSockets():
                return await self._room_wide(operation, requests[0], others, masters)
            case FetchSockets():
                answers = await self._ask(namespace, requests[0], others, REQUESTS_TIMEOUT)
                return self._fetched(answers)
            case EmitWithAck():
                answers = await self._ask(namespace, requests[0], 1, operation.timeout)
                if not answers:
                    raise TimeoutError(f"no ack from {operation.sid!r}")
                return answers[0]
            case ServerEmit():
                self._tell(namespace, requests[0])
                return others
        raise ValueError(f"unknown operation {operation!r}")

    async def _room_wide(
        self,
        operation: JoinRooms | LeaveRooms | DisconnectSockets,
        request: dict[str, Any],
        others: int,
        masters: int,
    ) -> int:
        """Join/leave/disconnect the matching sockets of every other server; how many.

        Node servers carry these out without answering, so when any is present the
        sockets are counted first with a fetch (which every server answers); our
        masters' confirmations are still awaited, so the change is applied cluster-wide
        (on our hosts) when this returns.
        """
        namespace = operation.namespace
        counted: int | None = None
        if others > masters:
            fetch = encode_requests(FetchSockets(namespace, operation.selector))[0]
            fetched = await self._ask(namespace, fetch, others, REQUESTS_TIMEOUT)
            counted = len(self._fetched(fetched))
        answers = await self._ask(namespace, request, masters, REQUESTS_TIMEOUT)
        if counted is not None:
            return counted
        return sum(count_of(answer) for answer in answers)

    # ---- requests from other servers, and their responses -----------------------

    def on_request_or_response(self, channel: str, body: bytes) -> None:
        parsed = self.channels.parse_request_or_response(channel)
        if parsed is None:
            return
        kind, namespace = parsed
        try:
            message = decode_request(body)
        except AdapterFormatError as exc:
            self.unreadable(channel, exc)
            return
        if kind == "response":
            self.answered(request_id_of(message), message)
        elif not is_own(message, self.uid):
            what = f"type {type_of(message)!r}"
            self.spawn(self._answer(namespace, message), channel, what)

    def _respond(self, namespace: str, body: bytes | None) -> None:
        if body is not None:
            self.publish(self.channels.response(namespace), body)

    async def _answer(self, namespace: str, request: dict[str, Any]) -> None:
        kind = type_of(request)
        if kind == RequestType.ALL_ROOMS:
            rooms = self.table.room_names(namespace)
            self._respond(namespace, encode_all_rooms_response(request, rooms))
        elif kind == RequestType.BROADCAST:
            emit = decode_emit_request(namespace, request, REQUESTS_TIMEOUT)
            await self._answer_emit_with_ack(namespace, emit)
        else:
            operation = operation_of_request(namespace, request)
            if operation is None:
                return  # a type for requesters only (BROADCAST_CLIENT_COUNT, ...) or unknown
            result = await self.host.on_host(operation)
            self._respond(namespace, encode_response(request, operation, result))

    async def _answer_emit_with_ack(self, namespace: str, emit: EmitRequest) -> None:
        """An emit with acks from another server: count our recipients, relay each ack."""
        await self.relay_acks(
            self.host,
            emit.fetch,
            emit.data,
            emit.timeout,
            lambda count: self._respond(namespace, emit.client_count(count)),
            lambda args: self._respond(namespace, emit.ack(args)),
        )
