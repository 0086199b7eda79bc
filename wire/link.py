"""An asyncio transport for frames over one end of a socketpair.

Why batching here: a Redis read can bring hundreds of messages; writing each one
to a worker's pipe separately would cost a syscall per message. :class:`FrameLink`
queues what is sent during one event-loop tick and writes it with ONE write at the
start of the next tick. Why a bound: a peer that stops reading must not make its
sender's memory grow without end, so droppable frames are refused (the caller
counts and logs them) once the unsent backlog passes ``max_buffer_bytes``.
Control frames (membership reports, pings, stop) are never droppable.

Why a budget per tick: when a backlog waits in the socket, the event loop would read it
in one go (libuv reads a ready stream up to 32 times per callback, megabytes) and handle
every frame before anything else runs: timers, the health channel, other sockets. A
worker catching up on a flood spent seconds per loop iteration that way. At most
:data:`FRAMES_PER_TICK` frames are handled per tick; the rest wait, in order, with
reading paused, so the loop stays responsive while a backlog drains.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import deque
from collections.abc import Callable
from typing import Any, cast

from sio_cluster.wire.frames import MAX_FRAME_BYTES, Frame, FrameDecoder, FrameError, decode_body

log = logging.getLogger(__name__)

FrameHandler = Callable[[Frame, bytes], None]

FRAMES_PER_TICK = 500  # a worker delivers each to many clients: ~0.1 s of work at most


class FrameLink(asyncio.Protocol):
    """One duplex frame channel; ``on_frame(frame, body)`` is called per decoded frame."""

    def __init__(
        self,
        on_frame: FrameHandler,
        on_lost: Callable[[Exception | None], None],
        max_buffer_bytes: int,
        on_bad_frame: Callable[[FrameError], None] | None = None,
    ) -> None:
        self._on_frame = on_frame
        self._on_lost = on_lost
        self._on_bad_frame = on_bad_frame
        self._max_buffer = max_buffer_bytes
        self._decoder = FrameDecoder(MAX_FRAME_BYTES)
        self._backlog: deque[bytes] = deque()  # frames read, not yet handled (see above)
        self._reading_paused = False
        self._transport: asyncio.Transport | None = None
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._flush_scheduled = False
        self._loop: asyncio.AbstractEventLoop  # set with the transport, in connection_made
        self.closed = False

    @classmethod
    async def open(cls, sock: socket.socket, *args: Any, **kwargs: Any) -> FrameLink:
        """A link on a connected AF_UNIX stream socket (one end of a socketpair)."""
        link = cls(*args, **kwargs)
        await link.attach(sock)
        return link

    async def attach(self, sock: socket.socket) -> None:
        """Start reading and writing ``sock``.

        Frames already waiting in the socket are handed to ``on_frame`` at once
        (uvloop reads before this returns), so whatever ``on_frame`` needs must
        exist before this is called.
        """
        loop = asyncio.get_running_loop()
        await loop.create_unix_connection(lambda: self, sock=sock)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        # kept: Python 3.11's get_running_loop() makes a getpid() system call each time
        self._loop = asyncio.get_running_loop()

    def data_received(self, data: bytes) -> None:
        try:
            bodies = self._decoder.feed(data)
        except FrameError as exc:
            log.error("closing pipe: %s", exc)
            self._report_bad(exc)
            self.close()
            return
        slicing = bool(self._backlog)  # then a slice is already scheduled
        self._backlog.extend(bodies)
        if not slicing:
            self._handle_slice()

    def _handle_slice(self, budget: int = FRAMES_PER_TICK) -> None:
        """Handle up to ``budget`` waiting frames; pause reading while more wait."""
        backlog = self._backlog
        for _ in range(min(budget, len(backlog))):
            body = backlog.popleft()
            try:
                frame = decode_body(body)
            except FrameError as exc:
                self._report_bad(exc)
                continue
            self._on_frame(frame, body)
        transport = self._transport
        if backlog:
            if not self._reading_paused and transport is not None and not self.closed:
                transport.pause_reading()
                self._reading_paused = True
            self._loop.call_soon(self._handle_slice)
        elif self._reading_paused:
            self._reading_paused = False
            if transport is not None and not transport.is_closing():
                transport.resume_reading()

    def _report_bad(self, exc: FrameError) -> None:
        if self._on_bad_frame is not None:
            self._on_bad_frame(exc)
        else:
            log.warning("dropped a bad frame: %s", exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._handle_slice(len(self._backlog))  # what the peer sent before it went, in order
        self._pending.clear()
        self._pending_bytes = 0
        self._on_lost(exc)

    def backlog_bytes(self) -> int:
        """Bytes accepted for sending and not yet taken by the peer."""
        if self._transport is None:
            return self._pending_bytes
        return self._transport.get_write_buffer_size() + self._pending_bytes

    def send(self, frame: bytes, droppable: bool = True) -> bool:
        """Queue one encoded frame for the next tick's write; False if refused."""
        if self.closed or self._transport is None:
            return False
        if droppable and self.backlog_bytes() + len(frame) > self._max_buffer:
            return False
        self._pending.append(frame)
        self._pending_bytes += len(frame)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        return True

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self.closed or self._transport is None or not self._pending:
            return
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending.clear()
        self._pending_bytes = 0
        self._transport.write(data)

    def close(self) -> None:
        """Write what is queued, then close."""
        if self._transport is not None and not self.closed:
            self._flush()
            self._transport.close()
