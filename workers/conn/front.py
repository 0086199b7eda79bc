"""The first protocol of every connection a worker accepts: read the request head, then keep
the connection (an Engine.IO websocket or long-poll, :mod:`workers.conn.layer`) or give it
to aiohttp. A long-poll's connection comes back here for its next request (kept alive).

Why a front: the worker's own layer serves the Engine.IO sessions (the connections that
hold the memory: thousands of idle websockets), and aiohttp keeps serving everything else
exactly as before: Engine.IO 3 and socket.io 0.9 clients, the user's routes, ``/healthz``, the
Admin UI's files, and every request the layer does not recognise or refuses to judge (it is
conservative: anything unusual goes to aiohttp, which answers as it always did). Giving a
connection to aiohttp uses asyncio's public protocol contract: ``transport.set_protocol``,
then the handler's ``connection_made`` and ``data_received`` with the bytes read so far.

A connection that sends no complete head within the header timeout is closed and counted
here, as aiohttp's connections were (:mod:`workers.header_deadline`); a kept-alive one that
sends nothing for aiohttp's keep-alive timeout is closed quietly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from sio_cluster.workers.conn import http_head

if TYPE_CHECKING:
    from sio_cluster.workers.conn.layer import Layer

ProtocolFactory = Callable[[], asyncio.BaseProtocol]


class KeepAlive:
    """A kept-alive connection's one idle timer, re-armed lazily.

    Why not a timer per request: a long-polling client makes a request per message it gets,
    and a ``call_later`` per request was 12% of a worker's CPU under broadcasts. Here a
    request only marks the connection busy, or idle since now; the timer, when it fires,
    closes the connection only if it has been idle for the whole keep-alive time, and
    otherwise fires again when that time would be up."""

    __slots__ = ("_transport", "_loop", "_limit", "_since", "_idle", "_handle")

    def __init__(
        self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop, limit: float
    ) -> None:
        self._transport = transport
        self._loop = loop
        self._limit = limit
        self._since = loop.time()
        self._idle = True
        self._handle = loop.call_later(limit, self._fire)

    def rest(self) -> None:
        """The connection waits for its next request from now."""
        self._idle = True
        self._since = self._loop.time()

    def busy(self) -> None:
        """A request is being served."""
        self._idle = False

    def cancel(self) -> None:
        self._handle.cancel()

    def _fire(self) -> None:
        if self._transport.is_closing():
            return
        left = self._limit
        if self._idle:
            left = self._since + self._limit - self._loop.time()
            if left <= 0:
                self._transport.close()
                return
        self._handle = self._loop.call_later(left, self._fire)


class Front(asyncio.Protocol):
    """A connection until its head is read (see the module docstring)."""

    __slots__ = ("_layer", "_fallback", "_client", "_kept", "_transport", "_buffer", "_timer")

    def __init__(
        self,
        layer: Layer,
        fallback: ProtocolFactory,
        client: str | None,
        kept: KeepAlive | None = None,
    ) -> None:
        self._layer = layer
        self._fallback = fallback
        self._client = client  # who the master's PROXY header named, for a hand-off
        self._kept = kept  # a kept-alive connection's idle timer (between two requests)
        self._transport: asyncio.Transport | None = None
        self._buffer = b""
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        if self._kept is not None:  # idle until the next request: aiohttp's keep-alive time
            self._kept.rest()
        else:
            layer = self._layer
            self._timer = layer.loop.call_later(layer.header_timeout, self._late)

    def data_received(self, data: bytes) -> None:
        if self._layer.stopping:  # the worker is stopping: nothing new starts
            self._disarm()
            if self._transport is not None:
                self._transport.close()
            return
        if self._kept is not None:
            self._kept.busy()
        buffer = self._buffer + data if self._buffer else data
        end = http_head.head_end(buffer)
        if end < 0 or end > http_head.MAX_HEAD:
            if len(buffer) > http_head.MAX_HEAD:
                self._hand_over(buffer)  # aiohttp refuses what is too long, as before
            else:
                self._buffer = buffer
                if self._timer is None:  # a kept-alive connection's next head is coming
                    self._timer = self._layer.loop.call_later(
                        self._layer.header_timeout, self._late
                    )
            return
        self._buffer = b""
        head = http_head.parse(buffer[:end])
        transport = self._transport
        assert transport is not None
        route = None if head is None else self._layer.takes(head)
        if route is None:
            self._hand_over(buffer)
            return
        self._disarm()
        assert head is not None
        self._layer.accept(
            transport, head, route, buffer[end:], self._client, self._fallback, self._kept
        )
        if self._kept is not None and route.transport != "polling":
            self._kept.cancel()  # a websocket now: its heartbeat watches it

    def _hand_over(self, buffer: bytes) -> None:
        """aiohttp serves this connection from now on, starting with ``buffer`` (and
        closes it after its own keep-alive time)."""
        self._disarm()
        if self._kept is not None:
            self._kept.cancel()
        transport = self._transport
        assert transport is not None
        handler = self._fallback()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        if buffer and isinstance(handler, asyncio.Protocol):
            handler.data_received(buffer)

    def _late(self) -> None:
        self._timer = None
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()
            self._layer.late_headers()

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._kept is not None:
            self._kept.cancel()
        self._buffer = b""
