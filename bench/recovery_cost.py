"""What connection state recovery costs: the same traffic with ``--connection-state-recovery``
off and on, in one run.

One master with ``--processes`` workers on a private redis-server, ``--clients`` websocket
clients (bench/peers.py's Node load generator, client i in room ``r{i % 20}``). For each
setting and each target (one random sid, one room, everyone) ``--messages`` ``ch:*``
messages are published at ``--rate`` per second; then the master's CPU per message, the
whole host's CPU per 1,000 deliveries, the p99 latency, the master's RSS and the size of its
recovery log are read. With recovery on, every packet is stamped and logged for the window
(120 s here), so the log's size is the memory cost; the byte cap bounds it.

    python bench/recovery_cost.py
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # python bench/recovery_cost.py

from bench.harness import Options, markdown_table, redis_server, write_json  # noqa: E402
from bench.measure import cpu_seconds, free_port_block, rss_bytes  # noqa: E402
from bench.peers import (  # noqa: E402
    ROOMS,
    LoadGenerator,
    Ours,
    Scenario,
    drain,
    node_modules,
    percentile,
    publish,
)

SETTINGS = {"off": [], "on": ["--connection-state-recovery", "120"]}


async def metric(http: aiohttp.ClientSession, port: int, name: str) -> float:
    async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
        for line in (await response.text()).splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


async def run_setting(
    url: str, r: aioredis.Redis, setting: str, args: argparse.Namespace
) -> list[dict[str, Any]]:
    metrics_port = free_port_block(1)
    system = Ours(url, args.processes, [*SETTINGS[setting], "--metrics-port", str(metrics_port)])
    system.start()
    rows = []
    try:
        load = LoadGenerator(system.ports, args.clients)
        try:
            master = system.servers.procs[0].pid
            async with aiohttp.ClientSession() as http:
                for scenario in (
                    Scenario("sid", 1),
                    Scenario("room", args.clients // ROOMS),
                    Scenario("all", args.clients),
                ):
                    rows.append(await one(system, load, r, http, master, scenario, setting, args))
                log_bytes = await metric(http, metrics_port, "sio_master_recovery_log_bytes")
            for row in rows:
                row["recovery log MiB (end)"] = round(log_bytes / 2**20, 2)
        finally:
            load.close()
    finally:
        system.stop()
    return rows


async def one(
    system: Ours,
    load: LoadGenerator,
    r: aioredis.Redis,
    http: aiohttp.ClientSession,
    master: int,
    scenario: Scenario,
    setting: str,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Publish ``args.messages`` at ``args.rate``; measure while they are delivered."""
    pids = system.pids()
    master_cpu0, cpu0 = cpu_seconds({master}), cpu_seconds(pids)
    started = time.perf_counter()
    sent = 0
    while sent < args.messages:
        due = min(int((time.perf_counter() - started) * args.rate) + 1, args.messages)
        batch = [
            system.message(scenario.target(load.sids), {"t": time.time() * 1000, "i": i})
            for i in range(sent, due)
        ]
        if batch:
            await publish(r, batch)
            sent = due
        await asyncio.sleep(0.002)  # pacing: the fixed rate
    delivered, _, latencies = await drain(load, args.messages * scenario.per_message, started)
    master_cpu = cpu_seconds({master}) - master_cpu0
    cpu = cpu_seconds(pids) - cpu0
    return {
        "recovery": setting,
        "target": scenario.name,
        "delivered": f"{delivered}/{args.messages * scenario.per_message}",
        "master µs/message": round(master_cpu / args.messages * 1e6, 1),
        "host CPU ms/1k deliveries": round(cpu * 1e6 / max(delivered, 1), 1),
        "p99 ms": round(percentile(latencies, 0.99), 2),
        "master RSS MiB": round(rss_bytes({master}) / 2**20, 1),
    }


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    node_modules()
    rows = []
    async with redis_server(client_name="bench") as (server, r):
        for setting in SETTINGS:
            rows += await run_setting(server.url, r, setting, args)
    return rows


def main() -> None:
    options = Options(__doc__, quick={"messages": 2000})
    options.add_argument("--processes", type=int, default=2)
    options.add_argument("--clients", type=int, default=200)
    options.add_argument("--messages", type=int, default=10_000, help="per target")
    options.add_argument("--rate", type=float, default=1000.0, help="messages per second")
    args = options.parse()
    rows = asyncio.run(main_async(args))
    header = list(rows[0])
    print(markdown_table(header, [[row[h] for h in header] for row in rows]))
    write_json(args.out, "recovery_cost", {"args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
