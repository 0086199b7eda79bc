"""The cross-host bus, written once: requests, membership, server counts, answers, the buffer.

The classic redis-adapter bus (:mod:`master.bus.classic`) and the sharded one
(:mod:`master.bus.sharded`) are two codecs of one protocol (the way python-socketio's
``AsyncPubSubManager`` leaves ``_publish``/``_listen`` to each backend): each names its
channels, encodes and decodes its messages and subscribes its own way; everything
else is here. Both publish through a bounded :class:`common.outbox.Outbox` that holds
messages while Redis is unreachable, count the servers of a namespace by their
subscriptions, wait for a known number of answers to a request within a timeout, and
count unreadable messages instead of failing on them.

Node servers on the same Redis are members too. They answer per-socket requests,
fetches and acks, but carry room-wide join/leave/disconnect out without answering: those
wait only for our other masters (a channel only our masters subscribe to tells them
apart), and with Node servers present the sockets are counted by a fetch first.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Generic, TypeVar

from socketio import packet as sio_packet

from sio_cluster.common.outbox import Outbox
from sio_cluster.common.ratelimit import RateLimitedLogger
from sio_cluster.master.bus.classic_wire import AckedEmit, AdapterFormatError
from sio_cluster.master.bus.listeners import BusTransport, Listeners
from sio_cluster.master.host_ops import HostOperations
from sio_cluster.master.metrics import Metrics
from sio_cluster.master.recovery.handover_wire import HandoverAnswer
from sio_cluster.master.recovery.off import NO_HANDOVERS, HandoverPeer
from sio_cluster.master.routing.fanout import Fanout
from sio_cluster.wire.frames import Broadcast, Room
from sio_cluster.wire.operations import (
    ClusterOperation,
    DisconnectSockets,
    EmitWithAck,
    FetchSockets,
    JoinRooms,
    LeaveRooms,
    OperationError,
    ServerEmit,
    SocketInfo,
)

log = logging.getLogger(__name__)

REQUESTS_TIMEOUT = 5.0  # the Node adapter's default requestsTimeout
PUBLISH_BATCH = 500
LISTENERS_SAMPLE_INTERVAL = 5.0  # how often the servers listening are counted, while healthy

Message = TypeVar("Message")  # a codec's decoded request or response
Membership = JoinRooms | LeaveRooms | DisconnectSockets
Work = ClusterOperation | AckedEmit  # what another server's request asks of this host


@dataclass
class Pending:
    """A request we sent, waiting for ``expected`` answers (or the first one ``enough``
    says settles it); ``read`` turns a response into an answer, or None when it is not one."""

    expected: int
    future: asyncio.Future[None]
    read: Callable[[Any], Any]
    enough: Callable[[Any], bool]
    answers: list[Any] = field(default_factory=list)

    def accept(self, response: Any) -> None:
        answer = self.read(response)
        if answer is None:
            return
        self.answers.append(answer)
        done = len(self.answers) >= self.expected or self.enough(answer)
        if done and not self.future.done():
            self.future.set_result(None)


def decode_parts(parts: Sequence[str | bytes]) -> tuple[str, list[Any]]:
    """Namespace and ``[event, *args]`` of an encoded Socket.IO packet (with attachments)."""
    pkt = sio_packet.Packet(encoded_packet=parts[0])
    for attachment in parts[1:]:
        pkt.add_attachment(attachment)
    return pkt.namespace or "/", pkt.data


def encode_parts(namespace: str, data: list[Any]) -> list[str | bytes]:
    """The Socket.IO encoding of an event, binary attachments split out."""
    encoded = sio_packet.Packet(sio_packet.EVENT, data=data, namespace=namespace).encode()
    return encoded if isinstance(encoded, list) else [encoded]


def readable_sockets(entries: list[Any]) -> tuple[list[dict[str, Any]], int]:
    """The readable sockets of a fetch answer (SocketInfo wire maps), and how many entries
    were unreadable."""
    sockets, unreadable = [], 0
    for entry in entries:
        try:
            sockets.append(SocketInfo.from_wire(entry).to_wire())
        except OperationError:
            unreadable += 1
    return sockets, unreadable


def per_room(operation: Membership) -> list[Membership]:
    """A per-socket request names one room (Node's form): one request per room."""
    if isinstance(operation, DisconnectSockets):
        return [operation]
    return [replace(operation, rooms=(room,)) for room in operation.rooms]


class HostBus(Generic[Message]):
    """This master's side of the cross-host protocol; a codec subclass fills in the wire."""

    per_socket_requests: ClassVar[bool]  # the wire has Node's per-socket join/leave/disconnect

    def __init__(
        self,
        transport: BusTransport,
        host: HostOperations,
        fanout: Fanout,
        metrics: Metrics,
        buffer_bytes: int,
    ) -> None:
        self.uid = secrets.token_hex(8)
        self.transport = transport
        self.host = host
        self.fanout = fanout
        self.metrics = metrics
        self.extra_patterns: list[str] = []  # for the classic subscriber, beside ch:*
        self.handovers: HandoverPeer = NO_HANDOVERS
        self.namespaces: set[str] = set()  # those this master serves (counted among servers)
        self.listeners = Listeners(transport, self.listener_channels)
        metrics.watch_listeners(lambda: self.listeners.known)
        self.outbox: Outbox[tuple[str, bytes]] = Outbox(
            "publishing to other hosts",
            transport.publish,
            limit=buffer_bytes,
            size=lambda item: len(item[1]),
            overflow="oldest",
            keep_on_failure=True,
            on_drop=metrics.redis_buffer_dropped.inc,
            batch=PUBLISH_BATCH,
            ready=self.listeners.back,
        )
        metrics.redis_outbox.set_function(lambda: len(self.outbox))
        self._pending: dict[str, Pending] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._limiter = RateLimitedLogger(log)

    # ---- what each codec provides ------------------------------------------------

    def server_channels(self, namespace: str) -> tuple[str, str]:
        """The channel every server of ``namespace`` subscribes to, and the one only our
        masters do: their subscriber counts are how many servers, and masters, there are."""
        raise NotImplementedError

    def channels_for(self, namespaces: list[str]) -> list[str]:
        """Serve these namespaces too; the channels the classic subscriber must add."""
        raise NotImplementedError

    def send(self, operation: ClusterOperation, request_id: str | None) -> None:
        """Publish the request that carries ``operation`` (None: nobody answers it)."""
        raise NotImplementedError

    def answer_of(self, operation: ClusterOperation, response: Message) -> Any:
        """What ``response`` answers to ``operation``, or None if it is not an answer:
        a count (membership), socket wire maps (fetch), the ack's arguments (emit)."""
        raise NotImplementedError

    def reply(self, request: Message, operation: ClusterOperation, result: Any) -> None:
        """Publish this host's ``result`` for another server's request, unless it wants none."""
        raise NotImplementedError

    def reply_count(self, request: Message, namespace: str, count: int) -> None:
        """How many sockets of this host another server's emit with acks reaches."""
        raise NotImplementedError

    def reply_ack(self, request: Message, namespace: str, args: list[Any]) -> None:
        """One client's ack to another server's emit with acks."""
        raise NotImplementedError

    def relay_worker_broadcast(self, broadcast: Broadcast) -> bytes | None:
        """Publish a worker's broadcast for other hosts; the body, if it comes back to us."""
        raise NotImplementedError

    def on_classic(self, pattern: bytes | None, channel: str, body: bytes) -> None:
        """A message of the classic subscriber that is not a ``ch:*`` one."""

    def subscribed(self) -> bool:
        """Whether the bus's own subscriptions (beyond the classic subscriber's) are live."""
        return True

    def silent_for(self) -> float:
        """How long the bus's own subscriber has not heard from Redis (0: it has none; the
        classic subscriber's silence is its own to report)."""
        return 0.0

    def own_channels(self, namespace: str) -> list[str]:
        """The channels the bus's own subscriber subscribes for ``namespace`` (none)."""
        return []

    def room_opened(self, namespace: str, room: Room, is_sid: bool) -> None:
        """This host holds ``room`` now."""

    def room_closed(self, namespace: str, room: Room) -> None:
        """This host holds no socket of ``room`` any more."""

    async def handover(
        self,
        namespace: str,
        pid: str,
        offset: str,
        sent: Callable[[], None],
        returned: Callable[[], None],
    ) -> HandoverAnswer | None:
        """Ask our other masters for a recoverable session (see :mod:`master.recovery.host`);
        None where this form has no order across channels to hand it over in."""
        return None

    # ---- publishing -------------------------------------------------------------

    def publish(self, channel: str, body: bytes) -> None:
        """Queue a publish; never blocks. Over the bound the oldest are dropped."""
        self.outbox.put((channel, body))

    def listener_channels(self) -> list[str]:
        """The channels every server of a namespace this host serves subscribes to (see
        :class:`master.bus.listeners.Listeners`)."""
        return [self.server_channels(namespace)[0] for namespace in sorted(self.namespaces)]

    async def run(self) -> None:
        """Publish queued messages in batches; hold them while Redis is away and, after an
        outage, until the servers that listened before are back."""
        await asyncio.gather(self.outbox.run(), self._count_listeners())

    async def _count_listeners(self) -> None:
        while True:
            if not self.outbox.in_outage:
                await self.listeners.count()
            await asyncio.sleep(LISTENERS_SAMPLE_INTERVAL)

    # ---- requests to other hosts ------------------------------------------------

    async def request(self, operation: ClusterOperation) -> Any:
        """Carry out ``operation`` on the other hosts; the answer combines theirs."""
        others, masters = await self.other_servers(operation.namespace)
        if others == 0:
            if isinstance(operation, EmitWithAck):
                raise KeyError(f"no socket {operation.sid!r} in the cluster")
            return operation.combine([])
        match operation:
            case JoinRooms() | LeaveRooms() | DisconnectSockets() if operation.single_sid:
                return 1 if await self._owner_confirms(operation, others, masters) else 0
            case JoinRooms() | LeaveRooms() | DisconnectSockets():
                return await self._room_wide(operation, others, masters)
            case EmitWithAck():
                answers = await self.ask(operation, 1, operation.timeout)
                if not answers:
                    raise TimeoutError(f"no ack from {operation.sid!r}")
                return answers[0]
            case ServerEmit():
                self.send(operation, None)
                return others
            case _:  # every server answers (a fetch ...); answers combine as the operation says
                return operation.combine(await self.ask(operation, others, REQUESTS_TIMEOUT))

    async def other_servers(self, namespace: str) -> tuple[int, int]:
        """How many other servers serve ``namespace``, and how many of them are our masters."""
        every, masters = self.server_channels(namespace)
        servers = await self.transport.subscribers([every, masters])
        me = 1 if namespace in self.namespaces else 0
        return max(servers.get(every, 0) - me, 0), max(servers.get(masters, 0) - me, 0)

    async def _owner_confirms(self, operation: Membership, others: int, masters: int) -> bool:
        """Whether the server holding the one socket carried out a per-socket request.

        Node's rule (@socket.io/redis-adapter 8.x): only that server answers, with a bare
        confirmation (``{requestId}``, no count), and the requester is done at that answer,
        or fails when none comes in time. So the answer is the confirmation itself, never
        a sum of counts, and nobody else is waited for. The sharded wire has no per-socket
        form: there the room-wide one over the sid goes out, and the owner confirms with a
        count (our masters) or by listing the socket in a fetch (Node's servers).
        """
        if self.per_socket_requests:
            requests = per_room(operation)
            confirmed = await asyncio.gather(
                *(self.ask(request, 1, REQUESTS_TIMEOUT) for request in requests)
            )
            return bool(requests) and all(confirmed)
        if isinstance(operation, JoinRooms | LeaveRooms) and not operation.rooms:
            return False  # nothing to confirm, as on the per-socket wire
        on_node = False
        if others > masters:
            fetch = FetchSockets(operation.namespace, operation.selector, ids_only=True)
            on_node = any(await self.ask(fetch, others, REQUESTS_TIMEOUT, bool))
        counts = await self.ask(operation, masters, REQUESTS_TIMEOUT, bool)
        return on_node or any(counts)

    async def _room_wide(self, operation: Membership, others: int, masters: int) -> int:
        """Join/leave/disconnect the matching sockets of every other server; how many.

        Node servers carry these out without answering, so when any is present the
        sockets are counted first with a fetch (which every server answers); our
        masters' confirmations are still awaited, so the change is applied cluster-wide
        (on our hosts) when this returns.
        """
        counted: int | None = None
        if others > masters:
            fetch = FetchSockets(operation.namespace, operation.selector, ids_only=True)
            counted = len(fetch.combine(await self.ask(fetch, others, REQUESTS_TIMEOUT)))
        counts = await self.ask(operation, masters, REQUESTS_TIMEOUT)
        return counted if counted is not None else sum(counts)

    async def ask(
        self,
        operation: ClusterOperation,
        expected: int,
        timeout: float,
        enough: Callable[[Any], bool] = lambda answer: False,
    ) -> list[Any]:
        """Send ``operation``, then collect up to ``expected`` answers within ``timeout``
        (or until one answer is ``enough``)."""
        return await self.ask_with(
            lambda request_id: self.send(operation, request_id),
            lambda response: self._read(operation, response),
            expected,
            timeout,
            enough,
        )

    async def ask_with(
        self,
        send: Callable[[str], None],
        read: Callable[[Any], Any],
        expected: int,
        timeout: float,
        enough: Callable[[Any], bool] = lambda answer: False,
    ) -> list[Any]:
        """``send(request_id)``, then collect what ``read`` makes of the responses."""
        request_id = secrets.token_hex(6)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        pending = Pending(expected, future, read, enough)
        self._pending[request_id] = pending
        send(request_id)
        try:
            if expected > 0:
                await asyncio.wait_for(future, timeout)
        except TimeoutError:
            log.debug("request %s: %d of %d answers", request_id, len(pending.answers), expected)
        finally:
            self._pending.pop(request_id, None)
        return pending.answers

    def answered(self, request_id: str | None, response: Any) -> None:
        """A response arrived: hand it to the request waiting for it, if any."""
        pending = self._pending.get(request_id or "")
        if pending is not None:
            pending.accept(response)

    def _read(self, operation: ClusterOperation, response: Any) -> Any:
        """The codec's answer, and of a fetch answer only the readable sockets (the others
        are counted: one bad entry must not fail the whole fetch)."""
        answer = self.answer_of(operation, response)
        if isinstance(operation, FetchSockets) and answer is not None:
            answer, unreadable = readable_sockets(answer)
            if unreadable:
                self.unreadable("a fetch answer", AdapterFormatError(f"{unreadable} bad sockets"))
        return answer

    def unreadable(self, channel: str, exc: AdapterFormatError) -> None:
        """Count and log (rate-limited) an adapter message we cannot read."""
        self.metrics.rejected.labels(reason="bad_adapter_message").inc()
        self._limiter.log(logging.WARNING, channel, "unreadable message on %r: %s", channel, exc)

    # ---- requests from other servers --------------------------------------------

    def serve(self, channel: str, request: Message, work: Work | None, what: str) -> None:
        """Carry out another server's request in the background, and answer it."""
        if work is not None:
            self.spawn(self._carry_out(request, work), channel, what)

    async def _carry_out(self, request: Message, work: Work) -> None:
        if isinstance(work, AckedEmit):
            await self._relay_acks(request, work)
            return
        self.reply(request, work, await self.host.on_host(work))

    async def _relay_acks(self, request: Message, emit: AckedEmit) -> None:
        """Another server's emit with acks, on this host: count the recipients, then relay
        each client's answer as it comes (a client that does not answer: nothing)."""
        namespace = emit.fetch.namespace
        sockets = await self.host.on_host(emit.fetch)
        self.reply_count(request, namespace, len(sockets))

        async def one(sid: str) -> None:
            operation = EmitWithAck(namespace, sid, emit.data, emit.timeout)
            try:
                args = await self.host.on_host(operation)
            except Exception as exc:
                log.debug("no ack from %s: %s", sid, exc)
                return
            self.reply_ack(request, namespace, args)

        await asyncio.gather(*(one(SocketInfo.from_wire(s).id) for s in sockets))

    def spawn(self, work: Coroutine[Any, Any, None], channel: str, what: str) -> None:
        """Answer another server in the background; a bad request costs its answer only."""

        async def guarded() -> None:
            try:
                await work
            except AdapterFormatError as exc:
                self.unreadable(channel, exc)
            except Exception:  # never the master
                log.exception("could not answer a request (%s)", what)

        task = asyncio.create_task(guarded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
