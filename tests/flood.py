"""A `ch:*` flood and the cheap clients that count it (tests/integration/test_overload.py).

Why raw sockets: python-socketio clients cost far more CPU per event than a worker spends
sending it, so 49 of them in the test process would fall behind and be aborted as slow
clients. A :class:`CountingClient` speaks just enough websocket and engine.io to join a room,
then counts the flood's packets in each read with ``bytes.count`` (C speed) and answers
engine.io's pings. A :class:`PacedPublisher` writes pre-encoded PUBLISH commands to Redis in
batches every 10 ms, so the test controls the rate exactly.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import struct
import time

FLOOD_EVENT = "f"
MARK = b'42["f",'  # the start of every flood packet as the client sees it
PING = b"\x81\x012"  # a one-byte text frame "2": engine.io's ping


def _client_frame(payload: bytes) -> bytes:
    """A masked text frame, as a websocket client must send."""
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x81, 0x80 | length)
    else:
        header = struct.pack("!BBH", 0x81, 0x80 | 126, length)
    return header + mask + masked


async def _server_frame(reader: asyncio.StreamReader) -> bytes:
    """One unmasked frame from the server (the handshake's frames only)."""
    head = await reader.readexactly(2)
    length = head[1] & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", await reader.readexactly(2))
    elif length == 127:
        (length,) = struct.unpack("!Q", await reader.readexactly(8))
    return await reader.readexactly(length)


class CountingClient:
    """One websocket Socket.IO client in ``room`` that counts flood packets (or never reads)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self.count = 0
        self.closed = False
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def join(cls, port: int, room: str, reading: bool = True) -> CountingClient:
        """Connect and join ``room``; a client that does not read also keeps a small receive
        buffer, so its backlog builds up in the worker (which must abort it) at once."""
        sock = socket.socket()
        if not reading:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n"
                f"Host: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        assert (await _server_frame(reader)).startswith(b"0{")
        writer.write(_client_frame(b"40"))
        assert (await _server_frame(reader)).startswith(b"40{")
        writer.write(_client_frame(b'420["join","' + room.encode() + b'"]'))
        assert (await _server_frame(reader)).startswith(b"430")
        client = cls(reader, writer)
        if reading:
            client._task = asyncio.create_task(client._count())
        return client

    async def _count(self) -> None:
        tail = b""
        keep = len(MARK) - 1
        while data := await self._reader.read(1 << 18):
            buf = tail + data
            self.count += buf.count(MARK)
            for _ in range(buf.count(PING)):
                self._writer.write(_client_frame(b"3"))
            tail = buf[-keep:]
        self.closed = True

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._writer.transport.abort()


class _Discard(asyncio.Protocol):
    """Reads and forgets Redis's replies to the publishes."""

    def data_received(self, data: bytes) -> None:
        pass


class PacedPublisher:
    """PUBLISHes ``{"to": room, "args": [n, pad]}`` on ``ch:f``, n = 0, 1, ..., at a steady
    rate (``pad``: filler that makes each packet as large as the test needs)."""

    def __init__(self, host: str, port: int, room: str, pad: int = 0) -> None:
        self._host = host
        self._port = port
        self._room = room
        self._pad = b"x" * pad
        self.sent = 0

    def _command(self, n: int) -> bytes:
        body = b'{"to":"%s","args":[%d,"%s"]}' % (self._room.encode(), n, self._pad)
        return b"*3\r\n$7\r\nPUBLISH\r\n$4\r\nch:f\r\n$%d\r\n%s\r\n" % (len(body), body)

    async def run(self, rate: int, seconds: float) -> None:
        """Publish ``rate * seconds`` messages, ``rate / 100`` every 10 ms."""
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_connection(_Discard, self._host, self._port)
        total = int(rate * seconds)
        started = time.monotonic()
        try:
            while self.sent < total:
                due = min(total, int((time.monotonic() - started) * rate) + rate // 100)
                if due > self.sent:
                    transport.write(b"".join(self._command(n) for n in range(self.sent, due)))
                    self.sent = due
                await asyncio.sleep(0.01)
        finally:
            transport.close()
