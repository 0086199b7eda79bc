"""A websocket client written from RFC 6455, byte by byte, for tests of the workers' own
connection layer: it sends what real clients never do and reads every frame the server
sends (``tests/integration/test_own_layer.py``, ``tests/workers/test_conn_pure.py``)."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
from typing import Any

from sio_cluster.workers.conn.http_head import accept_key

HANDSHAKE = (
    "GET /socket.io/?{query} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
    "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
    "Sec-WebSocket-Version: 13\r\n{extra}\r\n"
)


def client_frame(
    payload: bytes, opcode: int, fin: bool = True, masked: bool = True, rsv: int = 0
) -> bytes:
    first = (0x80 if fin else 0) | rsv | opcode
    size = len(payload)
    bit = 0x80 if masked else 0
    if size < 126:
        head = struct.pack("!BB", first, bit | size)
    elif size < 65536:
        head = struct.pack("!BBH", first, bit | 126, size)
    else:
        head = struct.pack("!BBQ", first, bit | 127, size)
    if not masked:
        return head + payload
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class RawWebsocket:
    """A websocket client written from RFC 6455, reading every frame the server sends."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.response_head = b""

    @classmethod
    async def open(
        cls,
        port: int,
        extra: str = "",
        then: bytes = b"",
        sid: str = "",
        rcvbuf: int = 0,
        eio: int = 4,
    ) -> RawWebsocket:
        sock = socket.socket()
        if rcvbuf:  # before connecting: the window the kernel offers follows it
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.connect(("127.0.0.1", port))
        sock.setblocking(False)
        reader, writer = await asyncio.open_connection(sock=sock)
        key = base64.b64encode(os.urandom(16)).decode()
        query = f"EIO={eio}&transport=websocket" + (f"&sid={sid}" if sid else "")
        head = HANDSHAKE.format(query=query, port=port, key=key, extra=extra)
        writer.write(head.encode() + then)
        ws = cls(reader, writer)
        ws.response_head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        if ws.response_head.startswith(b"HTTP/1.1 101"):
            assert f"Sec-WebSocket-Accept: {accept_key(key)}".encode() in ws.response_head
        return ws

    def send(self, payload: bytes, opcode: int = 0x1, **kwargs: Any) -> None:
        self.writer.write(client_frame(payload, opcode, **kwargs))

    def text(self, text: str) -> None:
        self.send(text.encode())

    async def frame(self, timeout: float = 10) -> tuple[int, int, bytes]:
        """The next frame: its first byte's flags, opcode and payload."""
        first, second = await asyncio.wait_for(self.reader.readexactly(2), timeout)
        assert not second & 0x80, "a server's frames are never masked"
        size = second & 0x7F
        if size == 126:
            size = struct.unpack("!H", await self.reader.readexactly(2))[0]
        elif size == 127:
            size = struct.unpack("!Q", await self.reader.readexactly(8))[0]
        return first & 0xF0, first & 0x0F, await self.reader.readexactly(size)

    async def packet(self) -> str:
        """The next engine.io packet, answering PINGs on the way."""
        while True:
            _, opcode, payload = await self.frame()
            assert opcode == 0x1, (opcode, payload)
            if payload != b"2":
                return payload.decode()
            self.text("3")

    async def closed_with(self) -> int:
        """The code of the close frame the server ends with (engine.io packets skipped)."""
        while True:
            _, opcode, payload = await self.frame()
            if opcode == 0x8:
                return int(struct.unpack("!H", payload[:2])[0])

    def close(self) -> None:
        self.writer.close()
