"""A socket.io 0.9 client's session, registered in engine.io's socket table as one of its own.

Why a virtual engine.io socket: python-socketio, the worker's delivery path and the cluster
operations all reach a client through engine.io's socket table (``eio.sockets[sid]``): they
``send()`` engine.io packets to it, put them on its ``queue``, ``close()`` it. A
:class:`V09Socket` answers those calls for a client that speaks no Engine.IO at all: every
Socket.IO 5 packet given to it is translated to protocol 1 (:mod:`workers.v09.translate`)
and kept in its outbox until the client's transport takes it: written at once to its
websocket, or answered to its pending xhr-polling GET (several as one U+FFFD payload). What
the client sends is translated the other way and handed to engine.io's ``message`` handler
(python-socketio's, behind the worker's guards), as engine.io would. So the socket is an
ordinary socket for handlers, rooms, emits, the master's routing and cluster operations.

Writes: where aiohttp shows a websocket's transport
(:func:`workers.patches.checks.v09_direct_writes`), the frames a websocket client is given
during one loop tick are written at the next, in one ``transport.write``, by one callback for
every 0.9 websocket (as :mod:`workers.transport.fast_ws` does for current clients), and a
client whose transport holds more than ``SLOW_CLIENT_BYTES`` unsent is dropped as slow.
Otherwise, and for what is left when the session ends, the websocket's writer task sends
them through aiohttp.

Heartbeats are 0.9's: the server sends ``2::`` every ping interval and closes the session if
the client has not echoed it within the ping timeout (the same engine.io settings that bound
a current client's silence). Being told a packet it cannot read closes the session, counted
by the caller.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from engineio import packet as eio_packet

from sio_cluster.wire.sio09 import packets as p09
from sio_cluster.workers.patches import engineio as eio_patches
from sio_cluster.workers.patches.aiohttp import ws_transport
from sio_cluster.workers.transport import fast_ws
from sio_cluster.workers.transport.ticks import TickWrites
from sio_cluster.workers.v09 import translate

log = logging.getLogger(__name__)

HEARTBEAT = p09.encode_packet(p09.Heartbeat())
NOOP = p09.encode_packet(p09.Noop())
GOODBYE = p09.encode_packet(p09.Disconnect())
CONNECTED = p09.encode_packet(p09.Connect())


downgraded = functools.lru_cache(maxsize=1)(translate.downgrade)
""":func:`translate.downgrade`, remembering the last packet: a broadcast hands every 0.9
recipient the same text, translated once."""


_tick_writes: TickWrites[V09Socket] = TickWrites(
    lambda socket: socket.write_pending(), "a 0.9 websocket"
)


class _Queue:
    """What engine.io's socket ``queue`` is to the worker: ``put_nowait`` of an engine.io
    packet (a delivery), or of None (end the transport: shutdown)."""

    __slots__ = ("_socket",)

    def __init__(self, socket: V09Socket) -> None:
        self._socket = socket

    def put_nowait(self, pkt: Any) -> None:
        if pkt is None:
            self._socket.end_transport()
        else:
            self._socket.deliver(pkt)

    def qsize(self) -> int:
        return len(self._socket.outbox)


class V09Socket:
    """One 0.9 client: engine.io's socket interface (``sid``, ``send``, ``close``, ``queue``,
    ``closed``, ``session``) over protocol 1 transports."""

    def __init__(
        self,
        eio: Any,
        sid: str,
        auth: dict[str, Any],
        bad_frame: Callable[[V09Socket, str], Awaitable[None]],
        outbox_limit: int,
        overflowed: Callable[[int], None],
        closed: Callable[[V09Socket], None],
    ) -> None:
        self.server = eio
        self.sid = sid
        self.auth = auth  # the handshake query: each namespace CONNECT's auth
        self.session: dict[str, Any] = {}
        self.queue = _Queue(self)
        self.connected = True
        self.upgraded = False  # True once on its websocket (engine.io's meaning)
        self.closing = False
        self.closed = False
        self.transport = ""
        self.outbox: list[str] = []
        self._outbox_bytes = 0
        self._outbox_limit = outbox_limit
        self._overflowed = overflowed
        self._bad_frame = bad_frame
        self._closed = closed  # told once the session is over and its last frames queued
        self._wake = asyncio.Event()
        self._ending = False
        self._polls = 0  # the newest poll's number: an older pending one gives way
        self._waiting_polls = 0  # GETs being answered: one will carry what is queued
        self._tasks: set[asyncio.Task[Any]] = set()
        self._direct: asyncio.Transport | None = None  # its websocket's, for tick writes
        self._queued = False  # in this tick's writes
        loop = asyncio.get_running_loop()
        self._heartbeat: asyncio.TimerHandle | None = loop.call_later(
            eio.ping_interval, self._send_heartbeat
        )
        self._deadline: asyncio.TimerHandle | None = None

    # -- engine.io's socket interface ------------------------------------------------------

    async def send(self, pkt: Any) -> None:
        """engine.io's ``send``: python-socketio's own packets to this client."""
        self.deliver(pkt)

    async def check_ping_timeout(self) -> bool:
        """engine.io's service task asks every socket; ours times itself (heartbeats)."""
        return True

    async def close(
        self, wait: bool = True, abort: bool = False, reason: str | None = None
    ) -> None:
        """End the session: python-socketio is told (engine.io's ``disconnect`` event),
        the client gets ``0::`` unless it is gone (``abort``), the transport ends."""
        if self.closing or self.closed:
            return
        self.closing = True
        self._stop_timers()
        handler = self.server.handlers.get("disconnect")
        if handler is not None:
            try:
                await handler(self.sid, reason or self.server.reason.SERVER_DISCONNECT)
            except Exception:
                log.exception("the disconnect handler of a 0.9 client failed")
        self.closed = True
        eio_patches.unregister_socket(self.server, self)
        if not abort:
            self._push(GOODBYE)
        self.end_transport()
        self._closed(self)

    # -- outgoing --------------------------------------------------------------------------

    def deliver(self, pkt: Any) -> None:
        """An engine.io MESSAGE packet (Socket.IO 5 text) for this client, translated."""
        if self.closed or pkt.packet_type != eio_packet.MESSAGE or not isinstance(pkt.data, str):
            return  # a binary attachment: its header was not translated either
        try:
            frame = downgraded(pkt.data)
        except ValueError:
            log.warning("a packet for a 0.9 client could not be translated: %.80r", pkt.data)
            return
        if frame is None:
            return
        self._push(frame)
        if frame == GOODBYE:  # python-socketio disconnected "/": the whole session, in 0.9
            self._spawn(self.close(abort=True, reason=self.server.reason.SERVER_DISCONNECT))

    def _push(self, frame: str) -> None:
        if self._ending:
            return
        self.outbox.append(frame)
        self._outbox_bytes += len(frame)
        if self._direct is not None:
            if not self._queued:
                self._queued = True
                _tick_writes.add(self, asyncio.get_running_loop())
        else:
            self._wake.set()
        if self._outbox_bytes > self._outbox_limit:
            self._overflowed(self._outbox_bytes)
            self.outbox.clear()
            self._outbox_bytes = 0
            self._spawn(self.close(abort=True, reason=self.server.reason.TRANSPORT_ERROR))

    def _take(self) -> list[str]:
        frames, self.outbox = self.outbox, []
        self._outbox_bytes = 0
        self._wake.clear()
        return frames

    def end_transport(self) -> None:
        """Let the transport send what is queued and end (websocket closed, poll answered)."""
        self._ending = True
        self._wake.set()

    def write_pending(self) -> None:
        """This tick's frames, in one write to the websocket's transport (see the module
        docstring); a client that leaves too much unread is dropped as slow."""
        self._queued = False
        transport = self._direct
        if transport is None or not self.outbox or self._ending:
            return  # the writer task sends what is left
        if transport.is_closing():
            self._direct = None
            return
        frames = self._take()
        transport.write(b"".join(fast_ws.frame(f.encode(), 0x1) for f in frames))
        unsent = transport.get_write_buffer_size()
        if unsent > fast_ws.SLOW_CLIENT_BYTES:
            self._overflowed(unsent)
            self._direct = None
            transport.abort()
            self._spawn(self.close(abort=True, reason=self.server.reason.TRANSPORT_ERROR))

    async def write_websocket(self, ws: web.WebSocketResponse, direct: bool) -> None:
        """The websocket's writer: each frame as one message, until the session ends (with
        ``direct``, frames go in tick writes and this only sends what is left at the end)."""
        if direct:
            for frame in self._take():  # queued before it opened: 1:: and the connect's emits
                await ws.send_str(frame)
            # from here on tick writes, and nothing is left to this task until the end: no
            # frame it sends can be overtaken by a tick's
            self._direct = ws_transport(ws)
            self._wake.clear()
            if self._ending:
                self._wake.set()
            elif self.outbox:
                self._queued = True
                _tick_writes.add(self, asyncio.get_running_loop())
        while True:
            await self._wake.wait()
            frames = self._take()
            for frame in frames:
                await ws.send_str(frame)
            if self._ending:
                self._direct = None
                self._wake.set()  # for whoever reads after us: nothing more comes
                await ws.close()
                return

    async def poll(self, duration: float) -> str:
        """An xhr-polling GET's answer: what is queued, else what comes within ``duration``
        seconds, else a noop (0.9's ``polling duration``); superseded by a newer GET."""
        self._polls += 1
        mine = self._polls
        self._waiting_polls += 1
        try:
            if not self.outbox and not self._ending:
                try:
                    await asyncio.wait_for(self._wake.wait(), duration)
                except TimeoutError:
                    pass
        finally:
            self._waiting_polls -= 1
        if mine != self._polls or not self.outbox:
            return NOOP
        return p09.encode_payload(self._take())

    def last_words(self) -> str | None:
        """Once closed: the polling answer its next GET is owed (the frames queued, ``0::``
        last), or None if it is owed nothing: a websocket client was written to, a pending
        GET takes them, or it was not told ``0::`` (it went away, or stopped answering)."""
        if self.transport == "websocket" or self._waiting_polls or self.outbox[-1:] != [GOODBYE]:
            return None
        return p09.encode_payload(self._take())

    # -- incoming --------------------------------------------------------------------------

    async def receive(self, body: str) -> bool:
        """A websocket message or POST body from the client; False if it was refused (the
        session is then closed, counted by ``bad_frame``)."""
        try:
            for text in p09.decode_payload(body):
                if not await self._receive_packet(p09.decode_packet(text)):
                    return True
        except ValueError as exc:  # PacketError, bad JSON in a downgrade
            await self._bad_frame(self, str(exc))
            return False
        return True

    async def _receive_packet(self, packet: p09.Packet) -> bool:
        """Handle one packet; False once the session is over."""
        if self.closing or self.closed:
            return False
        match packet:
            case p09.Heartbeat():
                self._heartbeat_answered()
                return True
            case p09.Disconnect(""):
                await self.close(abort=True, reason=self.server.reason.CLIENT_DISCONNECT)
                return False
        upgraded = translate.upgrade(packet, self.auth)
        if upgraded.reply is not None:
            self._push(upgraded.reply)
        if upgraded.socketio is not None:
            await self.hand_over(upgraded.socketio)
        return True

    async def hand_over(self, text: str) -> None:
        """Socket.IO 5 text to engine.io's ``message`` handler, as engine.io would: in a task
        of its own with ``async_handlers`` (a handler awaiting this client's ack must not
        stop its reads)."""
        handler = self.server.handlers["message"]
        if self.server.async_handlers:
            self._spawn(handler(self.sid, text))
        else:
            await handler(self.sid, text)

    async def hand_over_now(self, text: str) -> None:
        """Socket.IO 5 text to engine.io's ``message`` handler, awaited (the handshake's
        CONNECT to ``/``, whose answer decides the handshake's)."""
        await self.server.handlers["message"](self.sid, text)

    def refusal(self) -> str | None:
        """None if ``/`` accepted this client (its ``1::`` is queued), else why not."""
        return None if CONNECTED in self.outbox else "handshake unauthorized"

    def _spawn(self, work: Awaitable[Any]) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- heartbeats ------------------------------------------------------------------------

    def _send_heartbeat(self) -> None:
        self._heartbeat = None
        if self.closing or self.closed:
            return
        self._push(HEARTBEAT)
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(self.server.ping_timeout, self._silent)

    def _heartbeat_answered(self) -> None:
        if self._deadline is None:
            return  # an echo nobody asked for: harmless, as in 0.9
        self._deadline.cancel()
        self._deadline = None
        loop = asyncio.get_running_loop()
        self._heartbeat = loop.call_later(self.server.ping_interval, self._send_heartbeat)

    def _silent(self) -> None:
        self._deadline = None
        self._spawn(self.close(abort=True, reason=self.server.reason.PING_TIMEOUT))

    def _stop_timers(self) -> None:
        for timer in (self._heartbeat, self._deadline):
            if timer is not None:
                timer.cancel()
        self._heartbeat = self._deadline = None
