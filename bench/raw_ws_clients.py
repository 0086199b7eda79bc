"""Idle Engine.IO 4 websocket clients at their cheapest, for ``bench/connection_cost.py``.

Each client is a bare asyncio protocol on uvloop: the websocket handshake, the Socket.IO
CONNECT to ``/``, then nothing but answering the server's PINGs, so the process holding
thousands of them costs little CPU beside the server it measures. Client ``i`` connects from
``127.0.0.{2 + i % sources}`` (each source address has its own ephemeral ports), at most
``window`` handshakes at once. Prints ``connected <n> <seconds>`` once all are connected
(or ``failed <n>`` after ``timeout`` s), then holds them until killed.

    python bench/raw_ws_clients.py PORT COUNT [SOURCES] [WINDOW] [TIMEOUT]
"""

from __future__ import annotations

import asyncio
import base64
import functools
import os
import struct
import sys
import time

import uvloop


def masked(text: bytes) -> bytes:
    mask = os.urandom(4)
    return (
        struct.pack("!BB", 0x81, 0x80 | len(text))
        + mask
        + bytes(b ^ mask[i % 4] for i, b in enumerate(text))
    )


PONG = masked(b"3")
CONNECT = masked(b"40")
PING = b"\x81\x012"


class Client(asyncio.Protocol):
    """One client: handshake, CONNECT, then PONG for each PING."""

    def __init__(self, connected: asyncio.Future[None]) -> None:
        self.connected = connected
        self.seen = b""
        self.stage = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(  # type: ignore[attr-defined]
            (
                "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        if self.stage == 2:
            if PING in data:
                self.transport.write(PONG)
            return
        self.seen += data
        if self.stage == 0 and b'"sid"' in self.seen:
            self.stage, self.seen = 1, b""
            self.transport.write(CONNECT)
        elif self.stage == 1 and b"40{" in self.seen:
            self.stage, self.seen = 2, b""
            if not self.connected.done():
                self.connected.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.connected.done():
            self.connected.set_exception(ConnectionError("closed before connecting"))


async def main(port: int, count: int, sources: int, window: int, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(window)
    held: list[asyncio.BaseTransport] = []
    started = time.monotonic()

    async def one(i: int) -> None:
        for _ in range(5):  # a refused or reset attempt is retried, a few times
            async with gate:
                connected: asyncio.Future[None] = loop.create_future()
                try:
                    transport, _ = await loop.create_connection(
                        functools.partial(Client, connected),
                        "127.0.0.1",
                        port,
                        local_addr=(f"127.0.0.{2 + i % sources}", 0),
                    )
                    await asyncio.wait_for(connected, 30)
                except (OSError, TimeoutError):
                    continue
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
    await asyncio.sleep(3600)


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:3]] + [float(a) for a in sys.argv[3:]]
    port, count = args[0], args[1]
    sources = int(args[2]) if len(args) > 2 else 8
    window = int(args[3]) if len(args) > 3 else 300
    timeout = args[4] if len(args) > 4 else 120.0
    uvloop.run(main(int(port), int(count), sources, window, timeout))
