"""engine.io's aiohttp websocket, writing each tick's frames to a connection in ONE write.

Why: delivering a broadcast costs one ``transport.write`` (a syscall) per recipient
per message through aiohttp's ``send_str``; when a pipe read brings many messages,
a busy connection receives several in the same loop tick. Here the frames a
connection gets during one tick are joined and written once, at the start of the
next tick. The frame bytes are built here (servers do not mask); a connection that
negotiated permessage-deflate goes through aiohttp's own compressing path.

Deliveries may skip engine.io's per-socket queue and writer task altogether
(:data:`direct_writers`, :meth:`CoalescingWebSocket.idle`): only when that writer is
idle, waiting on an empty queue, so nothing can be ahead of the new frame.

Backpressure: a client that does not read lets the transport's buffer grow; past
:data:`SLOW_CLIENT_BYTES` the connection is aborted and counted instead of growing
the worker's memory without bound.

The engine.io and aiohttp internals this needs are reached through :mod:`workers.patches`,
which checks them at start; :func:`install` applies what that check allows.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Sequence
from typing import Any, Protocol

from aiohttp import WSCloseCode

from sio_cluster.common.ratelimit import RateLimitedLogger
from sio_cluster.workers.conn.ws_frames import frame
from sio_cluster.workers.eio3 import codec as eio3_codec
from sio_cluster.workers.eio3.translate import Eio3Clients, Eio3Session
from sio_cluster.workers.patches import aiohttp as aiohttp_patches
from sio_cluster.workers.patches import checks
from sio_cluster.workers.patches import engineio as eio_patches
from sio_cluster.workers.transport import ws_session
from sio_cluster.workers.transport.ticks import TickWrites

log = logging.getLogger(__name__)
client_refusals = RateLimitedLogger(log)  # a line per 10 s per kind, however many clients

SLOW_CLIENT_BYTES = 4 * 1024 * 1024


def message_frames(parts: Sequence[str | bytes], eio3: bool = False) -> bytes:
    """A Socket.IO packet's ``parts`` as the websocket frames of engine.io MESSAGE packets,
    ready for :meth:`~CoalescingWebSocket.write`: text ``4<text>``, and each binary
    attachment as it is (``eio3``: for an Engine.IO 3 client, whose binary frames start with
    their type). Built straight from the parts: no engine.io packet object on the way."""
    out = []
    for part in parts:
        if isinstance(part, str):
            out.append(frame(b"4" + part.encode(), 0x1))
        else:
            out.append(frame(eio3_codec.websocket_binary(part) if eio3 else part, 0x2))
    return out[0] if len(out) == 1 else b"".join(out)


class Counters:
    """Per-process counts that show each fast path really runs (tests read them)."""

    direct_writes = 0  # deliveries to one connection that skipped engine.io's queue
    flushes = 0  # transport writes made here: at most one per connection per tick
    coalesced_flushes = 0  # of those, the writes that carried several deliveries
    dropped = 0  # connections aborted for not reading (reported to the master)
    dropped_bytes = 0  # what those connections had unsent when aborted (reported too)
    bad_clients = 0  # websockets closed for an undecodable packet (reported to the master)
    refused = 0  # connections refused at --max-connections (reported to the master)
    header_timeouts = 0  # connections closed at --header-timeout (reported to the master)


def bad_client(why: str) -> None:
    """A client sent what cannot be used (``why``) and is being closed: counted, and logged
    at most once per 10 s however many do it."""
    Counters.bad_clients += 1
    client_refusals.log(logging.WARNING, "refused", "closed a client that sent %s", why)


class DirectWriter(Protocol):
    """A connection a delivery may write its frames to straight away."""

    @property
    def eio3(self) -> bool: ...

    @property
    def deflate_window(self) -> int:
        """permessage-deflate's window when agreed (frames must be compressed); 0: none."""
        ...

    def idle(self) -> bool: ...

    def write(self, data: bytes) -> None: ...


def write_tick(transport: asyncio.Transport, frames: list[bytes]) -> None:
    """Write a connection's frames of one tick in one ``transport.write``; abort a client
    that leaves more than :data:`SLOW_CLIENT_BYTES` unsent, counted."""
    if len(frames) == 1:
        transport.write(frames[0])
    else:
        transport.write(b"".join(frames))
        Counters.coalesced_flushes += 1
    Counters.flushes += 1
    abort_slow_client(transport)


def abort_slow_client(transport: asyncio.Transport, unwritten: int = 0) -> bool:
    """Abort the connection if more than :data:`SLOW_CLIENT_BYTES` wait unsent in it (the
    client does not read), counting what is lost, with ``unwritten`` bytes not yet given to
    it; True if it was aborted."""
    unsent = transport.get_write_buffer_size()
    if unsent <= SLOW_CLIENT_BYTES:
        return False
    Counters.dropped += 1
    Counters.dropped_bytes += unsent + unwritten
    log.warning("a client is not reading (over %d bytes unsent): closing it", SLOW_CLIENT_BYTES)
    transport.abort()
    return True


direct_writers: dict[str, DirectWriter] = {}
"""This process's websockets that accept direct writes, by engine.io sid."""


_tick_flush: TickWrites[CoalescingWebSocket] = TickWrites(lambda ws: ws._flush(), "a websocket")


def install(eio: Any, paths: checks.FastPaths, eio3: Eio3Clients | None = None) -> None:
    """Serve ``eio``'s websockets with :class:`CoalescingWebSocket`, as far as ``paths`` allow.

    ``paths`` is what :func:`workers.patches.checks.check` returned; with no coalesced writes,
    engine.io keeps its own websocket class (``--allow-eio3`` needs ours: the worker checks).
    ``eio3``: the worker serves Engine.IO 3 clients too.
    """
    if paths.coalesced_writes:
        factory = functools.partial(
            CoalescingWebSocket,
            direct_writes=paths.direct_writes,
            session_loop=paths.session_loop,
            eio3=eio3,
        )
        eio_patches.install_websocket_class(eio, factory)


class CoalescingWebSocket(eio_patches.EngineIoWebSocket):  # type: ignore[misc]
    """Drop-in for engine.io's aiohttp ``WebSocket`` (see :func:`install`)."""

    def __init__(
        self,
        handler: Any,
        server: Any,
        direct_writes: bool = False,
        session_loop: bool = False,
        eio3: Eio3Clients | None = None,
    ) -> None:
        super().__init__(self._serve, server)
        self._session_loop = session_loop
        self._eio3 = eio3
        self._eio3_session: Eio3Session | None = None  # set if the client speaks Engine.IO 3
        self._eio_handler = handler
        self._served = eio_patches.served_socket(handler)
        served = self._served if direct_writes else None
        self._sid: str | None = None if served is None else served[0]
        self._eio_socket: Any = None if served is None else served[1]
        self._transport: asyncio.Transport | None = None  # None: aiohttp's own send path
        self._frames: list[bytes] = []
        self._flush_scheduled = False
        # kept: Python 3.11's get_running_loop() makes a getpid() system call each time
        self.loop = asyncio.get_running_loop()

    async def _serve(self, ws: Any) -> None:
        """The socket's session (:mod:`workers.transport.ws_session`, or engine.io's own
        handler), run once the websocket is open: its transport is known here."""
        if self._eio3 is not None:
            self._eio3_session = self._eio3.current()
        response = eio_patches.aiohttp_response(self)
        if not response.compress:
            self._transport = aiohttp_patches.ws_transport(response)
        sid = self._sid if self._transport is not None else None
        if sid is not None:
            direct_writers[sid] = self
        try:
            if self._session_loop and self._served is not None:
                await ws_session.serve(self._served[1], ws)
            else:
                await self._eio_handler(ws)
        except ValueError as exc:  # python-engineio's "Invalid empty packet received", ...
            await self._drop_bad_client(exc)
        finally:
            if sid is not None:
                direct_writers.pop(sid, None)

    async def _drop_bad_client(self, exc: ValueError) -> None:
        """engine.io's reader raised on a packet it cannot decode and left its socket open:
        a ghost in the rooms until the ping timeout. Close it now, as a transport error."""
        Counters.bad_clients += 1
        client_refusals.log(logging.WARNING, "bad packet", "closed a websocket: %s", exc)
        if self._served is None:
            return
        eio_socket = self._served[1]
        await eio_socket.close(wait=False, abort=True, reason=self.server.reason.TRANSPORT_ERROR)
        eio_patches.stop_writer(eio_socket)  # its writer ends and closes the websocket

    deflate_window = 0  # aiohttp compresses what it sends itself; direct writes are plain

    @property
    def eio3(self) -> bool:
        """True if the client speaks Engine.IO 3 (its deliveries need v3 frames)."""
        return self._eio3_session is not None

    async def wait(self) -> str | bytes:
        """The next message, as engine.io's own ``wait``; one over ``maxPayload``, which
        aiohttp refuses by closing the websocket (1009), is also counted and logged.

        An Engine.IO 3 client's message is translated; its PINGs are answered here."""
        session, clients = self._eio3_session, self._eio3
        message = await self._receive()
        if session is not None and clients is not None:
            if message == "2":
                clients.pinged(session)
                await self._send("3")
                # engine.io's reader gives up on a client silent for its ping interval +
                # timeout: it is told of this sign of life as of a PONG
                return "3"
            try:
                return eio3_codec.websocket_message(message)
            except eio3_codec.PayloadError as exc:
                bad_client(f"an undecodable Engine.IO 3 frame ({exc})")
                raise OSError("the websocket sent an undecodable frame") from None
        return message

    async def _receive(self) -> str | bytes:
        message = await eio_patches.aiohttp_response(self).receive()
        if isinstance(message.data, str | bytes):
            return message.data
        if getattr(message.data, "code", None) == WSCloseCode.MESSAGE_TOO_BIG:
            Counters.bad_clients += 1
            client_refusals.log(
                logging.WARNING,
                "too big",
                "closed a websocket that sent a message over %d bytes",
                self.server.max_http_buffer_size,
            )
        raise OSError("the websocket is closed")  # engine.io's reader ends on this

    def idle(self) -> bool:
        """True if a delivery may be written now, bypassing engine.io without overtaking it."""
        transport = self._transport
        return (
            transport is not None
            and not transport.is_closing()
            and eio_patches.writer_is_parked(self._eio_socket)
        )

    def write(self, data: bytes) -> None:
        """Queue a delivery's :func:`frames` for this tick's write; call only when :meth:`idle`."""
        Counters.direct_writes += 1
        self._append(data)

    def _append(self, data: bytes) -> None:
        self._frames.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            _tick_flush.add(self, self.loop)

    async def send(self, message: str | bytes) -> None:
        """engine.io's writer task sending one packet: joins this tick's write.

        To an Engine.IO 3 client: binary frames start with their type, and engine.io's PING
        is not sent (see :meth:`workers.eio3.translate.Eio3Clients.server_pinged`)."""
        session, clients = self._eio3_session, self._eio3
        if session is not None and clients is not None:
            if message == "2":
                clients.server_pinged(session)
                return
            if isinstance(message, bytes):
                message = eio3_codec.websocket_binary(message)
        await self._send(message)

    async def _send(self, message: str | bytes) -> None:
        transport = self._transport
        if transport is None:
            await super().send(message)
        elif transport.is_closing():
            raise ConnectionResetError("websocket is closed")
        elif isinstance(message, str):
            self._append(frame(message.encode(), 0x1))
        else:
            self._append(frame(message, 0x2))

    def _flush(self) -> None:
        self._flush_scheduled = False
        pending, self._frames = self._frames, []
        transport = self._transport
        if not pending or transport is None or transport.is_closing():
            return
        write_tick(transport, pending)

    async def close(self) -> None:
        self._flush()  # frames of this tick first, then the close frame
        await super().close()
