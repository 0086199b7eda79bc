"""engine.io's aiohttp websocket, writing each tick's frames to a connection in ONE write.

Why: delivering a broadcast costs one ``transport.write`` (a syscall) per recipient
per message through aiohttp's ``send_str``; when a pipe read brings many messages,
a busy connection receives several in the same loop tick. Here the frames a
connection gets during one tick are joined and written once, at the start of the
next tick. The frame bytes are built here (servers do not mask); a connection that
negotiated permessage-deflate goes through aiohttp's own compressing path.

Deliveries may skip engine.io's per-socket queue and writer task altogether
(:meth:`CoalescingWebSocket.can_write_now`): only when that writer is idle, waiting
on an empty queue, so nothing can be ahead of the new frame.

Backpressure: a client that does not read lets the transport's buffer grow; past
``slow_client_bytes`` the connection is aborted and counted instead of growing
the worker's memory without bound.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from typing import Any

from engineio.async_drivers import aiohttp as eio_aiohttp

log = logging.getLogger(__name__)

SLOW_CLIENT_BYTES = 4 * 1024 * 1024
_LEN1 = struct.Struct("!BB")
_LEN2 = struct.Struct("!BBH")
_LEN3 = struct.Struct("!BBQ")


def frame(payload: bytes, opcode: int) -> bytes:
    """One unmasked, final websocket frame (RFC 6455 section 5.2)."""
    first = 0x80 | opcode
    size = len(payload)
    if size < 126:
        return _LEN1.pack(first, size) + payload
    if size < 65536:
        return _LEN2.pack(first, 126, size) + payload
    return _LEN3.pack(first, 127, size) + payload


class SlowClients:
    """How many connections were aborted for not reading (reported to the master)."""

    dropped = 0


class CoalescingWebSocket(eio_aiohttp.WebSocket):  # type: ignore[misc]
    """Drop-in for engine.io's aiohttp ``WebSocket`` (set as ``eio._async['websocket']``)."""

    def __init__(self, handler: Any, server: Any) -> None:
        super().__init__(handler, server)
        self._frames: list[bytes] = []
        self._flush_scheduled = False
        owner = getattr(handler, "__self__", None)  # the engine.io socket this serves
        if owner is not None:
            owner.fast_ws = self

    def can_write_now(self, eio_socket: Any) -> bool:
        """True if a frame may bypass ``eio_socket``'s queue without overtaking anything.

        That is when its writer task is parked on an empty queue (a getter still
        waiting), the websocket is the live transport and needs no compression.
        """
        queue = eio_socket.queue
        if queue.qsize() or not eio_socket.upgraded:
            return False
        if not any(not getter.done() for getter in queue._getters):
            return False  # the writer holds packets it has not written yet
        sock = self._sock
        writer = getattr(sock, "_writer", None)
        if sock is None or writer is None or sock.compress or sock.closed:
            return False
        transport = writer.transport
        return transport is not None and not transport.is_closing()

    def write_now(self, message: str | bytes) -> None:
        """Queue a frame for this tick's write; call only after :meth:`can_write_now`."""
        if isinstance(message, str):
            self._frames.append(frame(message.encode(), 0x1))
        else:
            self._frames.append(frame(message, 0x2))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    async def send(self, message: str | bytes) -> None:
        sock = self._sock
        writer = getattr(sock, "_writer", None)
        if sock is None or writer is None or sock.compress:
            await super().send(message)
            return
        transport = writer.transport
        if sock.closed or transport is None or transport.is_closing():
            raise ConnectionResetError("websocket is closed")
        self.write_now(message)

    def _flush(self) -> None:
        self._flush_scheduled = False
        frames, self._frames = self._frames, []
        if not frames or self._sock is None:
            return
        writer = getattr(self._sock, "_writer", None)
        transport = None if writer is None else writer.transport
        if transport is None or transport.is_closing():
            return
        transport.write(frames[0] if len(frames) == 1 else b"".join(frames))
        if transport.get_write_buffer_size() > SLOW_CLIENT_BYTES:
            SlowClients.dropped += 1
            log.warning(
                "a client is not reading (over %d bytes unsent): closing it", SLOW_CLIENT_BYTES
            )
            transport.abort()

    async def close(self) -> None:
        self._flush()  # frames of this tick first, then the close frame
        await super().close()
