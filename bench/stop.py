"""How long a graceful stop takes with many clients of every transport connected.

Runs one master (embedded Redis, 2 workers, the default 10 s graceful timeout) and
connects raw engine.io clients spread over both workers: Socket.IO websockets, Socket.IO
long-polling clients (each always has a GET pending) and idle polling sessions (one
handshake, then nothing, as a ``curl`` leaves one). Then SIGTERM, and the time until the
master has exited, and how many clients were told to go (a close frame, or the CLOSE
packet in a long-poll answer). Prints a table and writes JSON.

    python bench/stop.py --clients 1000 --runs 3
"""

from __future__ import annotations

import asyncio
import signal
import statistics
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # python bench/stop.py

from bench.harness import Options, markdown_table, write_json  # noqa: E402
from tests.cluster import MasterProcess  # noqa: E402

CONNECT_TIMEOUT = 30.0
MIX = {"websocket": 0.4, "long-polling": 0.4, "idle polling": 0.2}


async def websocket_client(
    http: aiohttp.ClientSession, base: str, told: list[str]
) -> asyncio.Task[None]:
    """Open, CONNECT to "/", then (the task returned) read until the server closes it."""
    ws = await http.ws_connect(base.replace("http", "ws") + "transport=websocket")
    await ws.receive()  # the engine.io OPEN
    await ws.send_str("40")
    connected = await ws.receive()
    assert str(connected.data).startswith("40"), connected

    async def read() -> None:
        async for message in ws:
            if message.data == "2":
                await ws.send_str("3")
        told.append("websocket")

    return asyncio.create_task(read())


async def polling_client(
    http: aiohttp.ClientSession, base: str, told: list[str]
) -> asyncio.Task[None]:
    """Open, CONNECT, then (the task returned) keep a GET pending until an answer holds the
    CLOSE packet."""
    sid = await handshake(http, base)
    url = f"{base}transport=polling&sid={sid}"
    async with http.post(url, data="40") as response:
        assert response.status == 200

    async def poll() -> None:
        while True:
            try:
                async with http.get(url) as response:
                    text = await response.text()
            except aiohttp.ClientError:
                return
            if response.status != 200:
                return
            packets = text.split("\x1e")
            if any(p.startswith("40") for p in packets):
                told.append("long-polling connected")  # its next GET is the pending one
            if "1" in packets:
                told.append("long-polling")
                return
            if "2" in packets:
                async with http.post(url, data="3"):
                    pass

    return asyncio.create_task(poll())


async def handshake(http: aiohttp.ClientSession, base: str) -> str:
    async with http.get(base + "transport=polling") as response:
        text = await response.text()
    assert text.startswith('0{"sid":"'), text
    return text[len('0{"sid":"') :].split('"', 1)[0]


async def one_run(clients: int) -> dict[str, float | int]:
    counts = {kind: int(clients * share) for kind, share in MIX.items()}
    told: list[str] = []
    with MasterProcess(None, workers=2, extra=["--graceful-timeout", "10"]) as master:
        master.start()
        await master.ready()
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as http:
            opened: list[Coroutine[Any, Any, Any]] = []
            for i in range(sum(counts.values())):
                base = f"{master.url(i % 2)}/socket.io/?EIO=4&"
                if i < counts["websocket"]:
                    opened.append(websocket_client(http, base, told))
                elif i < counts["websocket"] + counts["long-polling"]:
                    opened.append(polling_client(http, base, told))
                else:
                    opened.append(handshake(http, base))
            readers = await asyncio.wait_for(asyncio.gather(*opened), CONNECT_TIMEOUT)
            deadline = time.monotonic() + CONNECT_TIMEOUT
            while told.count("long-polling connected") < counts["long-polling"]:
                assert time.monotonic() < deadline, "long-polling clients not connected"
                await asyncio.sleep(0.01)  # bounded: every CONNECT answer read
            started = time.monotonic()
            master.signal(signal.SIGTERM)
            code = await master.wait_exit(timeout=30)
            seconds = time.monotonic() - started
            deadline = time.monotonic() + 5
            expected = counts["websocket"] + counts["long-polling"]
            while len(told) < expected and time.monotonic() < deadline:
                await asyncio.sleep(0.05)  # bounded: clients read what was sent before exit
            for reader in readers:
                if isinstance(reader, asyncio.Task):
                    reader.cancel()
        timed_out = bool(master.log_matches(r"graceful shutdown timed out"))
    return {
        "seconds": round(seconds, 3),
        "exit_code": code,
        "worker_timed_out": int(timed_out),
        **{f"{kind} clients": n for kind, n in counts.items()},
        "websockets closed": told.count("websocket"),
        "long-polls answered CLOSE": told.count("long-polling"),
    }


def main() -> None:
    options = Options(__doc__, quick={"clients": 200, "runs": 1})
    options.add_argument("--clients", type=int, default=1000)
    options.add_argument("--runs", type=int, default=3)
    args = options.parse()
    runs = [asyncio.run(one_run(args.clients)) for _ in range(args.runs)]
    header = list(runs[0])
    print(markdown_table(header, [[run[h] for h in header] for run in runs]))
    seconds = [float(run["seconds"]) for run in runs]
    print(f"\nSIGTERM to exit: median {statistics.median(seconds):.3f} s, max {max(seconds):.3f} s")
    write_json(args.out, "stop", {"clients": args.clients, "runs": runs})


if __name__ == "__main__":
    main()
