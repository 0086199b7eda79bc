"""Does a worker's memory level off under client churn, or does it leak?

Runs one master (embedded Redis, 1 worker) and drives ``--rounds`` rounds of ``--cycles``
connect / join / leave / disconnect cycles at it, ``--concurrency`` at a time, half over
websocket and half over long-polling (raw engine.io clients, so the load generator stays
cheap). Every cycle joins a room of its own (a new room name each time: rooms are created
and removed) and the shared room ``lobby``, whose ``joined`` notices every member hears.
After each round it waits ``--idle`` seconds with no client (engine.io's per-connection
ping task outlives a closed connection by up to 25 s) and samples again. The worker's RSS
and its engine.io sessions (its ``/healthz``) are sampled every ``--sample`` cycles.

A leak grows again in every round; an allocator's high-water mark is reached in the first
round and reused in the next ones. Prints the samples and the growth over the rounds after
the first, and writes JSON.

``--malloc`` picks the worker's allocator settings (environment of the master, inherited by
the worker): ``default``; ``arena2`` (glibc ``MALLOC_ARENA_MAX=2``); ``pymalloc-off``
(``PYTHONMALLOC=malloc``, every Python object from glibc).

    python bench/churn_memory.py --cycles 15000 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # python bench/churn_memory.py

from bench.harness import Options, markdown_table, write_json  # noqa: E402
from bench.measure import rss_bytes  # noqa: E402
from tests.cluster import MasterProcess  # noqa: E402

MALLOC = {
    "default": {},
    "arena2": {"MALLOC_ARENA_MAX": "2"},
    "pymalloc-off": {"PYTHONMALLOC": "malloc"},
}
CYCLE_TIMEOUT = 30.0


async def websocket_cycle(http: aiohttp.ClientSession, base: str, room: str) -> None:
    async with http.ws_connect(base.replace("http", "ws") + "transport=websocket") as ws:
        await ws.receive()  # engine.io OPEN
        await ws.send_str("40")
        await until_packet(ws, "40")
        await ws.send_str(f'420["join","{room}"]')
        await until_packet(ws, "430")
        await ws.send_str('421["join","lobby"]')
        await until_packet(ws, "431")
        await ws.send_str(f'422["leave","{room}"]')
        await until_packet(ws, "432")
        await ws.send_str("41")


async def until_packet(ws: aiohttp.ClientWebSocketResponse, prefix: str) -> None:
    """Read until a packet starting with ``prefix``; notices to the lobby come in between."""
    while True:
        message = await ws.receive()
        if message.type != aiohttp.WSMsgType.TEXT:
            raise ConnectionError(f"websocket ended: {message.type}")
        if message.data.startswith(prefix):
            return
        if message.data == "2":
            await ws.send_str("3")


async def polling_cycle(http: aiohttp.ClientSession, base: str, room: str) -> None:
    async with http.get(base + "transport=polling") as response:
        text = await response.text()
    sid = text[len('0{"sid":"') :].split('"', 1)[0]
    url = f"{base}transport=polling&sid={sid}"
    for send, answer in (
        ("40", "40"),
        (f'420["join","{room}"]', "430"),
        ('421["join","lobby"]', "431"),
        (f'422["leave","{room}"]', "432"),
    ):
        async with http.post(url, data=send) as response:
            assert response.status == 200, response.status
        await until_polled(http, url, answer)
    async with http.post(url, data="1") as response:  # engine.io CLOSE
        await response.read()


async def until_polled(http: aiohttp.ClientSession, url: str, prefix: str) -> None:
    while True:
        async with http.get(url) as response:
            text = await response.text()
        if response.status != 200:
            raise ConnectionError(f"poll answered {response.status}")
        if any(packet.startswith(prefix) for packet in text.split("\x1e")):
            return


async def churn(
    master: MasterProcess, first: int, cycles: int, concurrency: int, sample: int
) -> list[dict[str, Any]]:
    """Run cycles ``first`` .. ``first + cycles - 1``; return the samples taken."""
    base = f"{master.url(0)}/socket.io/?EIO=4&"
    numbers = iter(range(first, first + cycles))
    done = 0
    samples: list[dict[str, Any]] = []
    failures = 0

    async def run(http: aiohttp.ClientSession) -> None:
        nonlocal done, failures
        for number in numbers:
            cycle = websocket_cycle if number % 2 else polling_cycle
            try:
                await asyncio.wait_for(cycle(http, base, f"room-{number}"), CYCLE_TIMEOUT)
            except (TimeoutError, ConnectionError, aiohttp.ClientError):
                failures += 1
            done += 1
            if done % sample == 0:
                samples.append(await snapshot(master, http, first + done, "churn"))

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        await asyncio.gather(*(run(http) for _ in range(concurrency)))
    if failures:
        raise SystemExit(f"{failures} cycles failed")
    return samples


async def snapshot(
    master: MasterProcess, http: aiohttp.ClientSession, cycles: int, phase: str
) -> dict[str, Any]:
    """The worker's RSS and open engine.io sessions, after ``cycles`` cycles."""
    async with http.get(master.url(0) + "/healthz") as response:
        sessions = (await response.json())["connections"]
    rss = rss_bytes([master.worker_pids()[0]]) / 2**20
    return {"cycles": cycles, "phase": phase, "rss_mib": round(rss, 1), "sessions": sessions}


async def measure(args: argparse.Namespace, malloc: str) -> dict[str, Any]:
    os.environ.update(MALLOC[malloc])  # the master's environment, so the worker's too
    try:
        with MasterProcess(None, workers=1) as master:
            master.start()
            await master.ready()
            async with aiohttp.ClientSession() as http:
                samples = [await snapshot(master, http, 0, "start")]
                started = time.monotonic()
                for round_ in range(args.rounds):
                    first = round_ * args.cycles
                    samples += await churn(
                        master, first, args.cycles, args.concurrency, args.sample
                    )
                    await asyncio.sleep(args.idle)  # no client: closed sessions end
                    samples.append(await snapshot(master, http, first + args.cycles, "idle"))
                seconds = time.monotonic() - started - args.rounds * args.idle
    finally:
        for name in MALLOC[malloc]:
            del os.environ[name]
    idle = [s["rss_mib"] for s in samples if s["phase"] == "idle"]
    return {
        "malloc": malloc,
        "cycles_per_round": args.cycles,
        "cycles_per_s": round(args.rounds * args.cycles / seconds),
        "samples": samples,
        "rss_start_mib": samples[0]["rss_mib"],
        "rss_after_each_round_mib": idle,
        "growth_after_first_round_mib": round(idle[-1] - idle[0], 1),
        "peak_sessions": max(s["sessions"] for s in samples),
    }


def main() -> None:
    options = Options(__doc__, quick={"cycles": 1000, "sample": 500, "rounds": 2, "idle": 30})
    options.add_argument("--cycles", type=int, default=15_000, help="per round")
    options.add_argument("--rounds", type=int, default=3)
    options.add_argument("--idle", type=float, default=45.0, help="seconds after each round")
    options.add_argument("--concurrency", type=int, default=20)
    options.add_argument("--sample", type=int, default=2_500)
    options.add_argument("--malloc", default="default", help=", ".join(MALLOC))
    args = options.parse()
    runs = [asyncio.run(measure(args, malloc)) for malloc in args.malloc.split(",")]
    for run in runs:
        print(f"\n{run['malloc']}: {run['cycles_per_s']} cycles/s")
        rows = [[s["cycles"], s["phase"], s["rss_mib"], s["sessions"]] for s in run["samples"]]
        print(markdown_table(["cycles", "phase", "worker RSS MiB", "engine.io sessions"], rows))
    header = [key for key in runs[0] if key != "samples"]
    print()
    print(markdown_table(header, [[run[key] for key in header] for run in runs]))
    write_json(args.out, "churn_memory", {"concurrency": args.concurrency, "runs": runs})


if __name__ == "__main__":
    main()
