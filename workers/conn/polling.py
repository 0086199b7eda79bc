"""Engine.IO long-polling on the layer: the session, and the HTTP requests that carry it.

Why the layer serves it: most browsers start on long-polling (socket.io-client's default
transports) and upgrade; with engine.io serving that start, every such session was engine.io's
socket with its queue, its tasks and the worker's patches of both until the upgrade, and the
upgrade swapped one kind of socket for another. Here a long-polling session is an
:class:`~workers.conn.session.EioSession` like a websocket one, and the upgrade hands the same
kind of state to the websocket.

- :class:`PollingSession` keeps the packets not yet fetched and the GET waiting for them
  (at most one: a second GET takes over, the first is answered with a NOOP). Packets given
  during one loop tick go in one answer.
- :class:`~workers.conn.poll_request.PollRequest` is one request of a keep-alive connection
  (:mod:`workers.conn.poll_request`).
- A request for a session of the layer's that the layer does not read itself (a chunked POST,
  a JSONP poll) reaches engine.io, which calls the session's ``handle_get_request`` /
  ``handle_post_request``, as it calls its own sockets'.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Protocol

from engineio import exceptions as eio_exceptions
from engineio import packet as eio_packet

from sio_cluster.workers.conn import payload
from sio_cluster.workers.conn.session import EioSession, UnknownPacket
from sio_cluster.workers.eio3 import codec as eio3_codec
from sio_cluster.workers.transport import fast_ws
from sio_cluster.workers.transport.ticks import TickWrites

if TYPE_CHECKING:
    from sio_cluster.workers.conn.layer import Layer
    from sio_cluster.workers.conn.poll_request import PollRequest

TEXT_PLAIN = "text/plain; charset=UTF-8"
NOOP = eio_packet.Packet(eio_packet.NOOP)


class Waiter(Protocol):
    """A GET waiting for packets."""

    def answer_packets(self, packets: list[Any]) -> None: ...


_ticks: TickWrites[PollingSession] = TickWrites(lambda s: s.flush(), "a long-poll")


class PollingSession(EioSession):
    """An Engine.IO session on long-polling (4, or 3) (see the module docstring)."""

    __slots__ = ("upgrading", "_out", "_waiter", "_flushing", "_held_post", "_binary")

    upgraded = False  # engine.io's flag: not (yet) on a websocket

    def __init__(self, layer: Layer, sid: str, eio3: bool = False, binary: bool = True) -> None:
        super().__init__(layer, sid, eio3)
        self._binary = binary  # an Engine.IO 3 client takes binary payloads (not b64=1)
        self.upgrading = False  # a websocket is probing: polls are answered with a NOOP
        self._out: list[Any] = []  # engine.io packets the client has not fetched
        self._waiter: Waiter | None = None
        self._flushing = False  # an answer to the waiter is scheduled for the next tick
        self._held_post: PollRequest | None = None  # answered when the handlers catch up

    # ---- the transport -----------------------------------------------------------------

    def send_packet(self, pkt: Any) -> None:
        if self.closed or self._ending:
            return
        self._out.append(pkt)
        if self._waiter is not None and not self._flushing:
            self._flushing = True
            _ticks.add(self, self.layer.loop)

    def put_first(self, pkt: Any) -> None:
        """``pkt`` before everything queued (the OPEN packet, after the connect handler)."""
        self._out.insert(0, pkt)

    def ping(self) -> None:
        self.send_packet(eio_packet.Packet(eio_packet.PING))

    def say_close(self) -> None:
        self.send_packet(eio_packet.Packet(eio_packet.CLOSE))

    def finish(self) -> None:
        """What is queued goes to a waiting GET; a later GET finds no session (engine.io
        answers it 400, as it does a session it has dropped)."""
        if self._ending:
            return
        self._ending = True
        out, self._out = self._out, []
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            waiter.answer_packets(out)
        self.resume()

    def resume(self) -> None:
        held, self._held_post = self._held_post, None
        if held is not None:
            held.answer_ok()

    def flush(self) -> None:
        """The tick's packets, to the waiting GET."""
        self._flushing = False
        waiter = self._waiter
        if waiter is None or not self._out:
            return
        self._waiter = None
        out, self._out = self._out, []
        waiter.answer_packets(out)

    # ---- the client's requests -----------------------------------------------------------

    def poll(self, waiter: Waiter) -> None:
        """A GET: answered at once with what is queued, else when something is. The state is
        settled before any answer is written: an answer may hand its connection back to a
        :class:`~workers.conn.front.Front`, whose next request (pipelined) polls again."""
        if self.upgrading:  # engine.io's answer while a websocket probes
            waiter.answer_packets([NOOP])
            return
        previous, self._waiter = self._waiter, None
        out = self._out
        if out:
            self._out = []
        else:
            self._waiter = waiter
        if previous is not None:
            previous.answer_packets([NOOP])
        if out:
            waiter.answer_packets(out)

    def unpoll(self, waiter: Waiter) -> None:
        """``waiter``'s client went: what would have gone to it waits for the next GET."""
        if self._waiter is waiter:
            self._waiter = None

    def encode(self, packets: list[Any]) -> tuple[bytes, str]:
        """The body answering a poll with ``packets``, and its content type."""
        if self.eio3:
            return eio3_codec.encode_payload(packets, self._binary)
        return payload.encode(packets), TEXT_PLAIN

    def receive(self, body: bytes, content_type: str) -> None:
        """A POST's packets (for the websocket that took the session over, if the upgrade
        completed while the POST came). Raises :class:`~workers.conn.payload.PayloadError`
        or :class:`~workers.conn.session.UnknownPacket`; the packets before the bad one are
        handled."""
        owner = self.heir or self
        if self.eio3:
            packets = self._eio3_packets(body, content_type)
        else:
            packets = payload.decode(body)
        for item in packets:
            if isinstance(item, bytes):
                self.layer.on_message(owner, item)
            else:
                owner.on_packet(item)

    @staticmethod
    def _eio3_packets(body: bytes, content_type: str) -> list[str | bytes]:
        try:
            packets = eio3_codec.decode_payload(body, content_type)
        except eio3_codec.PayloadError as exc:
            raise payload.PayloadError(f"an undecodable Engine.IO 3 payload ({exc})") from None
        return [
            pkt.data if pkt.packet_type == eio_packet.MESSAGE and pkt.binary else pkt.encode()
            for pkt in packets
        ]

    def received(self, body: bytes, content_type: str) -> bool:
        """:meth:`receive`, and False (counted and logged) if the client broke the protocol."""
        try:
            self.receive(body, content_type)
        except (payload.PayloadError, UnknownPacket) as exc:
            fast_ws.bad_client(str(exc))
            return False
        return True

    def posted(self, request: PollRequest, body: bytes) -> None:
        """A POST ``request`` with ``body``: handled, then answered ``OK`` (once the handlers
        have caught up, if :data:`~workers.conn.session.PAUSE_AT` messages wait)."""
        if not self.received(body, request.head.headers.get("content-type", "")):
            request.answer("400 BAD REQUEST", b'"Bad Request"')
            (self.heir or self).end_session(self.layer.eio.reason.TRANSPORT_ERROR)
            return
        if self.paused() and not self._ending:
            self._held_post = request
        else:
            request.answer_ok()

    def hand_over(self) -> list[Any]:
        """A websocket takes this session (the upgrade is complete): this object is done, and
        what the client had not fetched is returned, for the websocket to send."""
        self.closed = True  # no disconnect: the session goes on, on the websocket
        self.upgrading = False
        out, self._out = self._out, []
        self.finish()
        return out

    # ---- requests engine.io reads for the session (see the module docstring) -------------

    async def handle_get_request(self, environ: Any) -> list[Any]:
        """A GET engine.io read; a websocket upgrade the layer did not take (a malformed
        handshake) is answered with no packets, and the session goes on polling."""
        if environ.get("HTTP_UPGRADE", "").lower() == "websocket":
            return []
        future: asyncio.Future[list[Any]] = self.layer.loop.create_future()
        waiter = _FutureWaiter(future)
        self.poll(waiter)
        try:
            return await future
        finally:
            self.unpoll(waiter)

    async def handle_post_request(self, environ: Any) -> None:
        """A POST engine.io read: a chunked one (which engine.io's own sockets read as
        empty) is read to its end, at most ``maxPayload`` bytes."""
        limit = self.layer.max_payload
        stream = environ["wsgi.input"]
        length = environ.get("CONTENT_LENGTH")
        if length:
            if int(length) > limit:
                raise eio_exceptions.ContentTooLongError()
            body = await stream.readexactly(int(length))
        else:
            body = b""
            while chunk := await stream.read(limit + 1 - len(body)):
                body += chunk
                if len(body) > limit:
                    raise eio_exceptions.ContentTooLongError()
        if not self.received(body, environ.get("CONTENT_TYPE", "")):
            raise eio_exceptions.UnknownPacketError()


class _FutureWaiter:
    """A GET engine.io serves: its packets go to a future it awaits."""

    __slots__ = ("future",)

    def __init__(self, future: asyncio.Future[list[Any]]) -> None:
        self.future = future

    def answer_packets(self, packets: list[Any]) -> None:
        if not self.future.done():
            self.future.set_result(packets)
