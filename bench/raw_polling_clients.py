"""Engine.IO 4 long-polling clients at their cheapest, for ``bench/polling_cost.py``.

Each client is a bare asyncio protocol on uvloop holding ONE kept-alive HTTP/1.1 connection,
its requests one after the other (a held GET is answered before the next request goes): the
handshake GET, the Socket.IO CONNECT to ``/`` (POST ``40``), GETs until the CONNECT answer,
then ``join`` of room ``all`` (POST ``420["join","all"]``, the ack read from a GET). From then
on it holds a GET; on its answer it counts the MESSAGE packets (``42...``), answers a PING
with a POST ``3``, and polls again. So the process holding thousands of them costs little CPU
beside the server it measures, and every broadcast to room ``all`` reaches each of them.

Client ``i`` connects from ``127.0.0.{2 + i % sources}`` (each source address has its own
ephemeral ports), at most ``window`` handshakes (up to the join's ack) at once. Prints
``connected <n> <seconds>`` once all are in room ``all`` (or ``failed <n>`` after ``timeout``
s); then, for each line ``count`` on stdin, ``got <messages> <last>``: the MESSAGE packets all
its clients have received so far, and the ``time.monotonic()`` of the last one (0 before any;
CLOCK_MONOTONIC, the same clock in every process of the host, so the caller compares it with
its own). Exits when killed, at the end of stdin, or after an hour.

    python bench/raw_polling_clients.py PORT COUNT [SOURCES] [WINDOW] [TIMEOUT]
"""

from __future__ import annotations

import asyncio
import functools
import json
import sys
import time

import uvloop

PATH = "/socket.io/?EIO=4&transport=polling"
SEPARATOR = "\x1e"  # between the packets of one payload
JOIN = '420["join","all"]'
LIFETIME = 3600.0  # seconds: a crowd its caller forgot still ends


class Tally:
    """The MESSAGE packets every client of this process has received, kept as they come so
    that answering ``count`` costs nothing while the server is measured."""

    def __init__(self) -> None:
        self.messages = 0
        self.last = 0.0

    def add(self, n: int) -> None:
        self.messages += n
        self.last = time.monotonic()


class Client(asyncio.Protocol):
    """One long-polling client (see the module docstring): each answer read whole, then the
    next request written."""

    def __init__(self, joined: asyncio.Future[None], tally: Tally) -> None:
        self.joined = joined
        self.tally = tally
        self.sid = ""
        self.buffer = b""
        self.length: int | None = None  # the body size of the answer, once its head is read
        self.posting = False  # the answer awaited is a POST's (its body, "ok", is skipped)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        self.get()

    def get(self) -> None:
        sid = f"&sid={self.sid}" if self.sid else ""
        self.write(f"GET {PATH}{sid} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())

    def post(self, packets: list[str]) -> None:
        body = SEPARATOR.join(packets).encode()
        self.write(
            f"POST {PATH}&sid={self.sid} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Content-Type: text/plain;charset=UTF-8\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        self.posting = True

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.length is None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head, self.buffer = self.buffer[:end].lower(), self.buffer[end + 4 :]
            status = head.split(b"\r\n", 1)[0]
            if status.split(b" ")[1:2] != [b"200"]:
                self.fail(f"answered {status!r}")
                return
            self.length = _content_length(head)
        if len(self.buffer) < self.length:
            return
        body, self.buffer = self.buffer[: self.length], self.buffer[self.length :]
        self.length = None
        if self.posting:
            self.posting = False
            self.get()
        else:
            self.answered(body.decode().split(SEPARATOR))

    def answered(self, packets: list[str]) -> None:
        """A GET's packets: what to POST in return, else the next GET."""
        out = []
        messages = 0
        for packet in packets:
            if packet.startswith("42"):
                messages += 1
            elif packet == "2":
                out.append("3")
            elif packet.startswith("0{"):
                self.sid = json.loads(packet[1:])["sid"]
                out.append("40")
            elif packet.startswith("40{"):
                out.append(JOIN)
            elif packet.startswith("430"):
                if not self.joined.done():
                    self.joined.set_result(None)
            elif packet.startswith(("1", "44")):  # CLOSE, or the CONNECT refused
                self.fail(f"the server sent {packet!r}")
                return
        if messages:
            self.tally.add(messages)
        if out:
            self.post(out)
        else:
            self.get()

    def fail(self, reason: str) -> None:
        if not self.joined.done():
            self.joined.set_exception(ConnectionError(reason))
        assert self.transport is not None
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.joined.done():
            self.joined.set_exception(ConnectionError("closed before joining"))


def _content_length(head: bytes) -> int:
    """The Content-Length of a lower-cased answer head (0 without one)."""
    start = head.find(b"\r\ncontent-length:")
    if start < 0:
        return 0
    start += len(b"\r\ncontent-length:")
    end = head.find(b"\r\n", start)
    return int(head[start : end if end >= 0 else len(head)])


async def answer_counts(tally: Tally) -> None:
    """``got <messages> <last>`` for each ``count`` line on stdin, until its end."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        if line.strip() == b"count":
            print(f"got {tally.messages} {tally.last:.6f}", flush=True)


async def join(i: int, port: int, sources: int, tally: Tally) -> asyncio.BaseTransport | None:
    """Client ``i``'s connection once it is in room ``all``; None if it failed or took 30 s
    (its connection closed: a session it opened is the server's to time out)."""
    loop = asyncio.get_running_loop()
    joined: asyncio.Future[None] = loop.create_future()
    transport: asyncio.BaseTransport | None = None
    try:
        transport, _ = await loop.create_connection(
            functools.partial(Client, joined, tally),
            "127.0.0.1",
            port,
            local_addr=(f"127.0.0.{2 + i % sources}", 0),
        )
        await asyncio.wait_for(joined, 30)
        return transport
    except (OSError, TimeoutError):  # ConnectionError: the client's own failure
        if transport is not None:
            transport.close()
        return None


async def main(port: int, count: int, sources: int, window: int, timeout: float) -> None:
    gate = asyncio.Semaphore(window)
    tally = Tally()
    held: list[asyncio.BaseTransport] = []
    started = time.monotonic()

    async def one(i: int) -> None:
        for _ in range(5):  # a refused or reset attempt is retried, a few times
            async with gate:
                transport = await join(i, port, sources, tally)
            if transport is not None:
                held.append(transport)
                return

    try:
        await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(count))), timeout)
    except TimeoutError:
        pass
    if len(held) == count:
        print(f"connected {count} {time.monotonic() - started:.3f}", flush=True)
    else:
        print(f"failed {len(held)}", flush=True)
    try:
        await asyncio.wait_for(answer_counts(tally), LIFETIME)
    except TimeoutError:
        pass


if __name__ == "__main__":
    port, count = int(sys.argv[1]), int(sys.argv[2])
    sources = int(sys.argv[3]) if len(sys.argv) > 3 else 8
    window = int(sys.argv[4]) if len(sys.argv) > 4 else 300
    timeout = float(sys.argv[5]) if len(sys.argv) > 5 else 120.0
    uvloop.run(main(port, count, sources, window, timeout))
