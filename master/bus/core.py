"""What both forms of the cross-host bus share: the outage buffer, requests and answers.

The classic redis-adapter bus (:mod:`master.bus.classic`) and the sharded one
(:mod:`master.bus.sharded`) differ in channels and message shapes only; both
publish through a bounded :class:`common.outbox.Outbox` that holds messages
while Redis is unreachable, wait for a known number of answers to a request
within a timeout, and count unreadable messages instead of failing on them.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from socketio import packet as sio_packet

from sio_cluster.common.outbox import Outbox
from sio_cluster.common.ratelimit import RateLimitedLogger
from sio_cluster.master.bus.classic_wire import AdapterFormatError
from sio_cluster.master.host_ops import HostOperations
from sio_cluster.master.metrics import Metrics
from sio_cluster.wire.frames import Broadcast, Room
from sio_cluster.wire.operations import (
    ClusterOperation,
    EmitWithAck,
    FetchSockets,
    OperationError,
    SocketInfo,
)

log = logging.getLogger(__name__)

REQUESTS_TIMEOUT = 5.0  # the Node adapter's default requestsTimeout
PUBLISH_BATCH = 500
LISTENERS_SAMPLE_INTERVAL = 5.0  # how often the servers listening are counted, while healthy
RESUBSCRIBE_GRACE = 10.0  # the longest held publishes wait for them after an outage


class BusTransport(Protocol):
    """What the bus needs of Redis: the narrow edge that unit tests replace in memory."""

    async def publish(self, messages: list[tuple[str, bytes]]) -> None: ...

    async def subscribers(self, channels: list[str]) -> dict[str, int]: ...


class HostBus(Protocol):
    """What the master asks of its bus, whichever form (classic or sharded) it has."""

    extra_patterns: list[str]  # for the classic subscriber, beside ch:*

    def channels_for(self, namespaces: list[str]) -> list[str]:
        """Serve these namespaces too: the channels the classic subscriber must add."""
        ...

    def on_classic(self, pattern: bytes | None, channel: str, body: bytes) -> None:
        """A message of the classic subscriber that is not a ``ch:*`` one."""
        ...

    def room_opened(self, namespace: str, room: Room, is_sid: bool) -> None: ...

    def subscribed(self) -> bool:
        """Whether the bus's own subscriptions (beyond the classic subscriber's) are live."""
        ...

    def room_closed(self, namespace: str, room: Room) -> None: ...

    def relay_worker_broadcast(self, broadcast: Broadcast) -> bytes | None:
        """Publish a worker's broadcast for other hosts; the body, if it comes back to us."""
        ...

    async def request(self, operation: ClusterOperation) -> Any: ...

    async def run(self) -> None: ...


class Listeners:
    """How many servers listened on each namespace before an outage, and whether they are back.

    Why: publishes held through a Redis outage could be written as soon as this master can
    write again, which is often before the other servers' subscribers are back (our masters
    retry after 0.2, 0.4, 0.8 s ...), and Redis delivers a message only to whoever is
    subscribed at that moment: the chaos soak lost 63-65 handler emits per Redis restart that
    way. So the channels each server of a namespace subscribes to (``channels()``) are counted
    while Redis is healthy, and after an outage the held publishes wait until the counts are
    back, or at most ``grace`` seconds from when Redis answers again (a server that went away
    meanwhile does not hold them longer).
    """

    def __init__(
        self,
        transport: BusTransport,
        channels: Callable[[], list[str]],
        grace: float = RESUBSCRIBE_GRACE,
    ) -> None:
        self._transport = transport
        self._channels = channels
        self._grace = grace
        self.known: dict[str, int] = {}
        self._answering_since: float | None = None

    async def count(self) -> None:
        """Note how many listen now (Redis healthy); a failed count keeps the last one."""
        channels = self._channels()
        try:
            self.known = await self._transport.subscribers(channels) if channels else {}
        except Exception as exc:  # Redis away: what was known before is what counts
            log.debug("could not count the listening servers: %s", exc)

    async def back(self) -> bool:
        """After an outage: True once every server counted before is subscribed again, or
        the grace period since Redis answers again is over; False while Redis is away."""
        loop = asyncio.get_running_loop()
        try:
            now = await self._transport.subscribers(list(self.known)) if self.known else {}
        except Exception:  # still away
            self._answering_since = None
            return False
        missing = {c: n - now.get(c, 0) for c, n in self.known.items() if now.get(c, 0) < n}
        if self._answering_since is None:
            self._answering_since = loop.time()
            if missing:
                log.warning(
                    "Redis answers again: holding the buffered publishes for at most %.0f s,"
                    " until the servers listening before are subscribed again (missing: %s)",
                    self._grace,
                    missing,
                )
        if missing and loop.time() - self._answering_since < self._grace:
            return False
        if missing:
            log.warning("publishing held messages: servers still not back on %s", missing)
        self._answering_since = None
        return True


@dataclass
class Pending:
    """A request we sent, waiting for ``expected`` answers; ``read`` turns a response
    into an answer, or None when the response is not one."""

    expected: int
    future: asyncio.Future[None]
    read: Callable[[Any], Any]
    answers: list[Any] = field(default_factory=list)

    def accept(self, response: Any) -> None:
        answer = self.read(response)
        if answer is None:
            return
        self.answers.append(answer)
        if len(self.answers) >= self.expected and not self.future.done():
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


def readable_sockets(entries: Any) -> tuple[list[dict[str, Any]], int]:
    """The readable sockets of a fetch answer (SocketInfo wire maps), and how many entries
    were unreadable (left out: one bad entry must not fail the whole fetch)."""
    sockets, unreadable = [], 0
    for entry in entries if isinstance(entries, list) else []:
        try:
            sockets.append(SocketInfo.from_wire(entry).to_wire())
        except OperationError:
            unreadable += 1
    return sockets, unreadable


class BusCore:
    """The publishing buffer, the pending requests and the error accounting of a bus."""

    def __init__(self, transport: BusTransport, metrics: Metrics, buffer_bytes: int) -> None:
        self.uid = secrets.token_hex(8)
        self.transport = transport
        self.metrics = metrics
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

    def publish(self, channel: str, body: bytes) -> None:
        """Queue a publish; never blocks. Over the bound the oldest are dropped."""
        self.outbox.put((channel, body))

    def listener_channels(self) -> list[str]:
        """The channels every server of a namespace this host serves subscribes to: their
        subscriber counts are how many servers listen (see :class:`Listeners`)."""
        raise NotImplementedError

    async def run(self) -> None:
        """Publish queued messages in batches; hold them while Redis is away and, after an
        outage, until the servers that listened before are back."""
        await asyncio.gather(self.outbox.run(), self._count_listeners())

    async def _count_listeners(self) -> None:
        while True:
            if not self.outbox.in_outage:
                await self.listeners.count()
            await asyncio.sleep(LISTENERS_SAMPLE_INTERVAL)

    async def ask(
        self,
        send: Callable[[str], None],
        read: Callable[[Any], Any],
        expected: int,
        timeout: float,
    ) -> list[Any]:
        """``send(request_id)``, then collect up to ``expected`` answers within ``timeout``."""
        request_id = secrets.token_hex(6)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        pending = Pending(expected, future, read)
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

    def fetched(self, socket_lists: list[Any]) -> list[dict[str, Any]]:
        """Every readable socket of the answers to a fetch; unreadable ones are counted."""
        found: list[dict[str, Any]] = []
        for entries in socket_lists:
            sockets, unreadable = readable_sockets(entries)
            found += sockets
            if unreadable:
                self.unreadable("a fetch answer", AdapterFormatError(f"{unreadable} bad sockets"))
        return found

    def unreadable(self, channel: str, exc: AdapterFormatError) -> None:
        """Count and log (rate-limited) an adapter message we cannot read."""
        self.metrics.rejected.labels(reason="bad_adapter_message").inc()
        self._limiter.log(logging.WARNING, channel, "unreadable message on %r: %s", channel, exc)

    async def relay_acks(
        self,
        host: HostOperations,
        fetch: FetchSockets,
        data: list[Any],
        timeout: float,
        count: Callable[[int], None],
        ack: Callable[[list[Any]], None],
    ) -> None:
        """Another server's emit with acks, on this host: ``count`` the recipients, then
        ``ack`` each client's answer as it comes (a client that does not answer: nothing)."""
        sockets = await host.on_host(fetch)
        count(len(sockets))

        async def one(sid: str) -> None:
            try:
                args = await host.on_host(EmitWithAck(fetch.namespace, sid, data, timeout))
            except Exception as exc:
                log.debug("no ack from %s: %s", sid, exc)
                return
            ack(args)

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
