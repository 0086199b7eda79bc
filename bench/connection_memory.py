"""Where a worker's memory per websocket connection goes, by allocation site and by task.

Why: ``bench/ten_thousand.py`` measures RSS per connection against Node's; this says what
the bytes are, so the next cut is chosen by measurement. A python-socketio server served as
a worker serves it (:mod:`bench.in_process`: the connection layer in front, or with
``--ws aiohttp`` python-engineio as published) serves ``--clients`` engine.io websocket
clients on 127.0.0.1 from another process; ``tracemalloc`` compares the server before and
after they connected. Printed: the tasks per connection (by coroutine), the traced bytes per
connection, and the allocation sites holding the most per connection.

    python bench/connection_memory.py --clients 1000
    python bench/connection_memory.py --ws aiohttp
"""

from __future__ import annotations

import asyncio
import collections
import gc
import multiprocessing
import sys
import sysconfig
import time
import tracemalloc
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from typing import Any, Literal

import aiohttp
import socketio
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # python bench/...

from bench.harness import REPO, Options, markdown_table, write_json  # noqa: E402
from bench.in_process import serving  # noqa: E402

STDLIB = sysconfig.get_paths()["stdlib"] + "/"


def _clients(port: int, count: int, connected: EventType) -> None:
    """``count`` engine.io websocket clients that connect to ``/``, then answer PINGs only."""

    async def one(session: aiohttp.ClientSession, done: list[int]) -> None:
        ws = await session.ws_connect(
            f"http://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket"
        )
        await ws.receive_str()  # the engine.io handshake
        await ws.send_str("40")
        await ws.receive_str()  # the Socket.IO connect
        done.append(1)
        async for message in ws:
            if message.data == "2":
                await ws.send_str("3")

    async def main() -> None:
        done: list[int] = []
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            tasks = [asyncio.create_task(one(session, done)) for _ in range(count)]
            while len(done) < count:
                await asyncio.sleep(0.05)
            connected.set()
            await asyncio.gather(*tasks)

    uvloop.run(main())


async def measure(count: int, sites: int, ws: Literal["own", "aiohttp"]) -> dict[str, Any]:
    sio = socketio.AsyncServer(async_mode="aiohttp")
    async with serving(sio, ws) as port:
        return await _measure(port, count, sites, ws)


async def _measure(port: int, count: int, sites: int, ws: str) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    connected = ctx.Event()
    clients = ctx.Process(target=_clients, args=(port, count, connected), daemon=True)
    try:
        gc.collect()
        tracemalloc.start(1)
        before = tracemalloc.take_snapshot()
        tasks_before = len(asyncio.all_tasks())
        clients.start()
        deadline = time.monotonic() + 120
        while not connected.is_set():
            if time.monotonic() > deadline or not clients.is_alive():
                raise RuntimeError("the clients did not all connect")
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # every session settled
        gc.collect()
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        coroutines = collections.Counter(
            getattr(t.get_coro(), "__qualname__", "?") for t in asyncio.all_tasks()
        )
        by_site = after.compare_to(before, "lineno")
        return {
            "clients": count,
            "ws": ws,
            "tasks_per_connection": (len(asyncio.all_tasks()) - tasks_before) / count,
            "tasks_by_coroutine": {n: c for n, c in coroutines.most_common() if c >= count},
            "traced_bytes_per_connection": sum(d.size_diff for d in by_site) / count,
            "sites": [
                {
                    "site": f"{_short(d.traceback[0].filename)}:{d.traceback[0].lineno}",
                    "bytes_per_connection": d.size_diff / count,
                    "objects_per_connection": d.count_diff / count,
                }
                for d in by_site[:sites]
            ],
        }
    finally:
        if clients.is_alive():
            clients.kill()
        clients.join(5)


def _short(filename: str) -> str:
    """A file name from ``site-packages/``, the standard library or this repository on."""
    if "site-packages/" in filename:
        return filename.split("site-packages/", 1)[1]
    for root in (STDLIB, str(REPO) + "/"):
        if filename.startswith(root):
            return filename[len(root) :]
    return filename


def main() -> None:
    options = Options(__doc__, quick={"clients": 200})
    options.add_argument("--clients", type=int, default=1000)
    options.add_argument("--sites", type=int, default=15, help="allocation sites shown")
    options.add_argument(
        "--ws",
        choices=("own", "aiohttp"),
        default="own",
        help="the worker's connection layer, or python-engineio on aiohttp as published",
    )
    args = options.parse()
    results = uvloop.run(measure(args.clients, args.sites, args.ws))
    path = write_json(args.out, "connection_memory", results)
    print(
        f"{results['clients']} websocket connections: "
        f"{results['tasks_per_connection']:.2f} tasks, "
        f"{results['traced_bytes_per_connection']:,.0f} traced bytes per connection (RSS:"
        " bench/ten_thousand.py; tracemalloc's own tables would swell it here)\n"
    )
    print(markdown_table(["coroutine", "tasks"], results["tasks_by_coroutine"].items()))
    print()
    print(
        markdown_table(
            ["allocation site", "bytes per connection", "objects per connection"],
            [
                [
                    site["site"],
                    f"{site['bytes_per_connection']:,.0f}",
                    f"{site['objects_per_connection']:.1f}",
                ]
                for site in results["sites"]
            ],
        )
    )
    print(f"\nJSON: {path}")


if __name__ == "__main__":
    main()
