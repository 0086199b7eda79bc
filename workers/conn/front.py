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


class Front(asyncio.Protocol):
    """A connection until its head is read (see the module docstring)."""

    __slots__ = ("_layer", "_fallback", "_client", "_reused", "_transport", "_buffer", "_timer")

    def __init__(
        self, layer: Layer, fallback: ProtocolFactory, client: str | None, reused: bool = False
    ) -> None:
        self._layer = layer
        self._fallback = fallback
        self._client = client  # who the master's PROXY header named, for a hand-off
        self._reused = reused  # a kept-alive connection, idle between two requests
        self._transport: asyncio.Transport | None = None
        self._buffer = b""
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        layer = self._layer
        if self._reused:  # idle until the next request starts: aiohttp's keep-alive timeout
            self._timer = layer.loop.call_later(layer.keep_alive, self._idle)
        else:
            self._timer = layer.loop.call_later(layer.header_timeout, self._late)

    def data_received(self, data: bytes) -> None:
        if self._layer.stopping:  # the worker is stopping: nothing new starts
            self._disarm()
            if self._transport is not None:
                self._transport.close()
            return
        if self._reused:  # the next request starts: its head has the header timeout
            self._reused = False
            self._disarm()
            self._timer = self._layer.loop.call_later(self._layer.header_timeout, self._late)
        buffer = self._buffer + data if self._buffer else data
        end = http_head.head_end(buffer)
        if end < 0 or end > http_head.MAX_HEAD:
            if len(buffer) > http_head.MAX_HEAD:
                self._hand_over(buffer)  # aiohttp refuses what is too long, as before
            else:
                self._buffer = buffer
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
        self._layer.accept(transport, head, route, buffer[end:], self._client, self._fallback)

    def _hand_over(self, buffer: bytes) -> None:
        """aiohttp serves this connection from now on, starting with ``buffer``."""
        self._disarm()
        transport = self._transport
        assert transport is not None
        handler = self._fallback()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        if buffer and isinstance(handler, asyncio.Protocol):
            handler.data_received(buffer)

    def _idle(self) -> None:
        self._timer = None
        if self._transport is not None:
            self._transport.close()

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
        self._buffer = b""
