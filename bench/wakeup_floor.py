"""What one wake-up of a Python process costs on this machine with no work of ours in it.

Why: a worker woken for one message spends most of its CPU on being woken (the kernel, the
event loop, cold caches), not on routing. To say how much of a worker's cost per delivery is
ours, ``bench/hot_path.py`` compares it with this floor: ``n`` bare uvloop relays, each woken
by a 60-byte message on its end of a socketpair and writing it to a TCP peer on 127.0.0.1
(one read, one write, as a worker's delivery to one websocket), fed round-robin at ``rate``
messages/s. Returns the relays' CPU per message.

Run on its own, it prints that floor for each number of relays, so the growth of a cost per
delivery with the number of worker processes (``bench/scaling.py``) can be set beside the
growth of a bare wake-up's on the same machine:

    python bench/wakeup_floor.py --procs 1,8 --rate 1000 --seconds 4 --repeats 3
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import socket
import statistics
import sys
import time
from multiprocessing.synchronize import Event as EventType
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # python bench/...

from bench.harness import Options, markdown_table, write_json  # noqa: E402
from bench.measure import free_port_block  # noqa: E402
from bench.scaling_load import cpu_seconds  # noqa: E402

MESSAGE = b"x" * 60


def _relay(sock: socket.socket, port: int, ready: EventType) -> None:
    async def main() -> None:
        _, out = await asyncio.open_connection("127.0.0.1", port)

        class Relay(asyncio.Protocol):
            def data_received(self, data: bytes) -> None:
                out.write(data)

        await asyncio.get_running_loop().connect_accepted_socket(Relay, sock)
        ready.set()
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
    started_relays = [ctx.Event() for _ in pairs]
    relays = [
        ctx.Process(target=_relay, args=(b, port, up), daemon=True)
        for (_, b), up in zip(pairs, started_relays, strict=True)
    ]
    try:
        sink.start()
        if not ready.wait(30):
            raise RuntimeError("the sink did not start")
        for relay in relays:
            relay.start()
        if not all(up.wait(60) for up in started_relays):
            raise RuntimeError("a relay did not start")
        time.sleep(1.0)  # idle: what starting cost is not counted
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


def main() -> None:
    options = Options(__doc__, quick={"seconds": 1.0, "repeats": 1})
    options.add_argument("--procs", default="1,8", help="numbers of relays, comma-separated")
    options.add_argument("--rate", type=float, default=1000.0, help="messages/s")
    options.add_argument("--seconds", type=float, default=4.0)
    options.add_argument("--repeats", type=int, default=3)
    args = options.parse()
    counts = [int(n) for n in args.procs.split(",")]
    runs = {n: [] for n in counts}  # type: dict[int, list[float]]
    for _ in range(args.repeats):  # interleaved, so a change in the machine's load hits all
        for n in counts:
            runs[n].append(round(relay_cpu_per_message(n, args.rate, args.seconds), 1))
    first = statistics.median(runs[counts[0]])
    rows = [
        [n, statistics.median(r), f"{min(r)}-{max(r)}", f"{statistics.median(r) / first:.2f}x"]
        for n, r in runs.items()
    ]
    print(markdown_table(["relays", "µs per wake-up (median)", "range", "against the first"], rows))
    path = write_json(args.out, "wakeup_floor", {"rate": args.rate, "runs": runs})
    print(f"\nload average {os.getloadavg()[0]:.1f}; JSON: {path}")


if __name__ == "__main__":
    main()
