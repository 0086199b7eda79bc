"""What one wake-up of a Python process costs on this machine with no work of ours in it.

Why: a worker woken for one message spends most of its CPU on being woken (the kernel, the
event loop, cold caches), not on routing. To say how much of a worker's cost per delivery is
ours, ``bench/hot_path.py`` compares it with this floor: ``n`` bare uvloop relays, each woken
by a 60-byte message on its end of a socketpair and writing it to a TCP peer on 127.0.0.1
(one read, one write, as a worker's delivery to one websocket), fed round-robin at ``rate``
messages/s. Returns the relays' CPU per message.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import socket
import time
from multiprocessing.synchronize import Event as EventType

import uvloop

from bench.measure import free_port_block
from bench.scaling_load import cpu_seconds

MESSAGE = b"x" * 60


def _relay(sock: socket.socket, port: int) -> None:
    async def main() -> None:
        _, out = await asyncio.open_connection("127.0.0.1", port)

        class Relay(asyncio.Protocol):
            def data_received(self, data: bytes) -> None:
                out.write(data)

        await asyncio.get_running_loop().connect_accepted_socket(Relay, sock)
        await asyncio.Event().wait()

    uvloop.run(main())


def _sink(port: int, ready: EventType) -> None:
    async def main() -> None:
        async def drain(reader: asyncio.StreamReader, _: asyncio.StreamWriter) -> None:
            while await reader.read(65536):
                pass

        await asyncio.start_server(drain, "127.0.0.1", port)
        ready.set()
        await asyncio.Event().wait()

    uvloop.run(main())


def relay_cpu_per_message(n: int, rate: float, seconds: float) -> float:
    """Microseconds of relay CPU per message; every process started is stopped on return."""
    ctx = multiprocessing.get_context("spawn")
    port = free_port_block(1)
    ready = ctx.Event()
    sink = ctx.Process(target=_sink, args=(port, ready), daemon=True)
    pairs = [socket.socketpair() for _ in range(n)]
    relays = [ctx.Process(target=_relay, args=(b, port), daemon=True) for _, b in pairs]
    try:
        sink.start()
        if not ready.wait(30):
            raise RuntimeError("the sink did not start")
        for relay in relays:
            relay.start()
        time.sleep(1.0)  # connected and idle
        pids = {r.pid for r in relays if r.pid is not None}
        count = max(int(rate * seconds), 1)
        before = cpu_seconds(pids)
        started = time.perf_counter()
        for i in range(count):
            pairs[i % n][0].send(MESSAGE)
            due = started + (i + 1) / rate
            while (left := due - time.perf_counter()) > 0:
                time.sleep(left / 2)
        time.sleep(0.5)  # the last ones relayed
        return (cpu_seconds(pids) - before) * 1e6 / count
    finally:
        for process in (*relays, sink):
            if process.is_alive():
                process.kill()
            process.join(5)
        for a, b in pairs:
            a.close()
            b.close()
