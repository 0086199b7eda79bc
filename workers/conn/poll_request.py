"""One long-polling request on a kept-alive connection, for the layer's sessions
(:mod:`workers.conn.polling`).

A POST's body is read (at most engine.io's ``max_http_buffer_size``, within the header timeout
plus a second per :data:`MIN_BODY_RATE` bytes), a GET is held until its session has something
to answer; the answer carries engine.io's CORS headers and compression. After it the connection
reads its next request (a new :class:`~workers.conn.front.Front`, with the connection's one
idle timer), or ends: a refused body's connection lingers, so the client reads the refusal
rather than a reset.
"""

from __future__ import annotations

import asyncio
import gzip
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sio_cluster.workers.conn import http_head
from sio_cluster.workers.conn.front import Front, KeepAlive
from sio_cluster.workers.transport import fast_ws

if TYPE_CHECKING:
    from sio_cluster.workers.conn.front import ProtocolFactory
    from sio_cluster.workers.conn.layer import Layer
    from sio_cluster.workers.conn.polling import PollingSession


MAX_EARLY = 64 * 1024  # bytes a client may send ahead of an answer (a pipelined request)
CLOSE_WAIT = 2.0  # seconds a refused request's connection waits for the client to close
MIN_BODY_RATE = 16 * 1024  # bytes a second a POST's body must at least come at
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class PollRequest(asyncio.Protocol):
    """One long-polling request (see the module docstring)."""

    __slots__ = (
        "layer",
        "transport",
        "head",
        "fallback",
        "client",
        "session",
        "_body",
        "_need",
        "_on_body",
        "_timer",
        "_done",
        "_counted",
        "_early",
        "kept",
        "cookie",
    )

    def __init__(
        self,
        layer: Layer,
        transport: asyncio.Transport,
        head: http_head.Head,
        fallback: ProtocolFactory,
        client: str | None,
    ) -> None:
        self.layer = layer
        self.transport = transport
        self.head = head
        self.fallback = fallback
        self.client = client
        self.session: PollingSession | None = None
        self._body = bytearray()
        self._need = 0
        self._on_body: Callable[[bytes], None] = lambda body: None
        self._timer: asyncio.TimerHandle | None = None
        self._done = False  # answered (or the connection went)
        self._counted = True  # in the layer's connections (until re-fronted or closed)
        self._early = b""  # what the client sent after this request, before its answer
        self.kept: KeepAlive | None = None  # the connection's idle timer, once kept alive
        self.cookie: str | None = None  # a handshake's Set-Cookie (engine.io's cookie option)

    def read_body(self, length: int, rest: bytes, then: Callable[[bytes], None]) -> None:
        """Read a ``length``-byte body (``rest`` came with the head), then ``then(body)``.
        The body has the header timeout, plus a second per :data:`MIN_BODY_RATE` bytes; a
        client that does not send it in time is closed and counted as a late head."""
        self._need = length
        self._on_body = then
        if length == 0:
            self._early = rest  # a pipelined request: read once this one is answered
            self._body_done()
            return
        if self.head.headers.get("expect", "").lower() == "100-continue":
            self.transport.write(CONTINUE)  # what curl and .NET wait for before the body
        allowed = self.layer.header_timeout + length / MIN_BODY_RATE
        self._timer = self.layer.loop.call_later(allowed, self._late)
        if rest:
            self.data_received(rest)

    def data_received(self, data: bytes) -> None:
        if self._done:
            return  # the answer is written: the connection closes, what comes is dropped
        missing = self._need - len(self._body)
        if missing > 0:
            self._body += data[:missing]
            data = data[missing:]
            if len(self._body) < self._need:
                return
            self._early += data
            self._body_done()
            return
        self._early += data
        if len(self._early) > MAX_EARLY:  # a client that does not wait for answers
            self.transport.close()

    def _body_done(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        body, self._body = bytes(self._body), bytearray()
        self._on_body(body)

    def _late(self) -> None:
        self._timer = None
        self.layer.late_headers()
        self.transport.close()

    # ---- answers -----------------------------------------------------------------------

    def answer_packets(self, packets: list[Any]) -> None:
        """Answer a GET with engine.io ``packets`` (compressed as engine.io compresses)."""
        assert self.session is not None
        body, content_type = self.session.encode(packets)
        headers = [("Content-Type", content_type)]
        eio = self.layer.eio
        if eio.http_compression and len(body) >= eio.compression_threshold:
            accepted = self.head.headers.get("accept-encoding", "")
            for encoding in (e.split(";")[0].strip() for e in accepted.split(",")):
                if encoding in eio.compression_methods and encoding in ("gzip", "deflate"):
                    body = gzip.compress(body) if encoding == "gzip" else zlib.compress(body)
                    headers.append(("Content-Encoding", encoding))
                    break
        self.answer("200 OK", body, headers)

    def refuse_unread(self) -> None:
        """Answer 400 and end the connection, the request's body unread."""
        self.head.keep_alive = False
        self.answer("400 BAD REQUEST", b'"Bad Request"', linger=True)

    def answer_ok(self) -> None:
        """Answer a POST (engine.io's ``OK``)."""
        self.answer("200 OK", b"OK", [("Content-Type", "text/plain")])

    def answer(
        self,
        status: str,
        body: bytes,
        headers: list[tuple[str, str]] | None = None,
        linger: bool = False,
    ) -> None:
        """Write the answer; then the connection reads its next request, or ends (``linger``:
        the request's body is unread, see :meth:`_linger`)."""
        if self._done:
            return
        self._done = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        layer = self.layer
        transport = self.transport
        close = not self.head.keep_alive or layer.close_after_answer or layer.stopping
        every = list(headers or [("Content-Type", "text/plain")])
        every.extend(layer.cors_headers(self.head))
        if self.cookie is not None:
            every.append(("Set-Cookie", self.cookie))
        if fast_ws.abort_slow_client(transport, len(body)):  # earlier answers still unread
            return
        transport.write(http_head.answer(status, every, body, close))
        if close or transport.is_closing():  # counted out when it is closed
            if linger:
                self._linger()
            else:
                transport.close()  # after the answer is written
            return
        self._release()
        kept = self.kept or KeepAlive(transport, layer.loop, layer.keep_alive)
        front = Front(layer, self.fallback, self.client, kept)
        transport.set_protocol(front)
        front.connection_made(transport)
        if self._early:
            early, self._early = self._early, b""
            front.data_received(early)

    def _linger(self) -> None:
        """End the connection after a refusal without losing it: the server sends its end
        of stream and reads on (discarding) until the client closes, since closing a socket
        with unread bytes in it (the refused body) resets the connection before the client
        reads the answer; aborted after :data:`CLOSE_WAIT` seconds (the answer is small)."""
        transport = self.transport
        self._early = b""
        if transport.is_closing() or not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        self._timer = self.layer.loop.call_later(CLOSE_WAIT, transport.abort)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.session is not None:
            self.session.unpoll(self)
        if self.kept is not None:
            self.kept.cancel()
        self._done = True
        self._release()

    def _release(self) -> None:
        if self._counted:
            self._counted = False
            self.layer.lost(self)
