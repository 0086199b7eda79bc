"""An HTTP/1.1 client on ONE connection, for tests of the layer's long-polling: every request
goes on the same socket (kept alive), and every answer is read whole, head and body."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass


@dataclass
class Answer:
    status: int
    headers: dict[str, str]  # names lower-case
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()


class RawHttp:
    """One connection to a worker (see the module docstring)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> RawHttp:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    def send(self, method: str, target: str, body: bytes = b"", headers: str = "") -> None:
        """Write a request (``headers``: extra lines, each ending in CRLF)."""
        length = f"Content-Length: {len(body)}\r\n" if method == "POST" else ""
        head = f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n{length}{headers}\r\n"
        self.writer.write(head.encode() + body)

    async def answer(self, timeout: float = 10) -> Answer:
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        size = int(headers.get("content-length", "0"))
        body = await asyncio.wait_for(self.reader.readexactly(size), timeout)
        return Answer(status, headers, body)

    async def request(
        self, method: str, target: str, body: bytes = b"", headers: str = ""
    ) -> Answer:
        self.send(method, target, body, headers)
        return await self.answer()

    def close(self) -> None:
        self.writer.close()
