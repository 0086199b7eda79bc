"""How each system's cost grows with its number of server processes N, at a fixed load.

The claim this checks (README, "Why"): with the usual Redis adapters every server process
holds its own Redis connections and decodes every message, so CPU and Redis load grow with
N; ours has one subscriber per host and forwards a message only to the worker(s) holding a
recipient, so its cost per delivery should stay flat. It reuses ``bench/peers.py``'s three
systems, app and Node load generator (a separate script because peers.py answers another
question, max rate and latency at one N, and a sweep has its own loop and outputs).

For each N of ``--procs`` and each system (ours: ``python -m sio_cluster --workers N``;
python-socketio ``AsyncServer`` + ``AsyncRedisManager`` and Node socket.io +
@socket.io/redis-adapter, N processes each), ``--clients`` websocket clients spread over the
N ports (client i in room ``r{i % 20}``), then:

- idle: the servers' CPU for ``--idle`` seconds with no traffic (health checks, pings);
- fixed rate, per target: ``--rate`` messages/s for ``--seconds`` to one random sid and to
  one room (of 20), ``--rate-all`` messages/s to everyone; measured over the publishing and
  the drain: server CPU (every server process, from /proc, to the nanosecond: see
  ``scaling_load.cpu_seconds``) per 1,000 deliveries, for ours
  also the master's CPU per message (the master is the process started, its workers are its
  children), Redis connections (CLIENT LIST less the benchmark's own ``bench`` clients), the
  servers' total RSS, delivered/expected;
- closed loop, to one random sid: publish while at most ``--window`` deliveries are in
  flight, for ``--stream-seconds`` (``bench/scaling_load.py``): the sustained deliveries/s.

N above the core count oversubscribes the CPU. That is fine for the CPU accounting: CPU
time per delivery is what a process spends whether or not it waited for a core, and the
fixed rates stay below every system's capacity (delivered/expected says when they do not).
Throughput (the closed loop) is bounded by the cores the servers, Redis, the publisher and
the load generator share, so it is compared across systems at one N, not as a scaling
figure. Prints markdown tables, writes ``<out>/scaling.json`` and ``<out>/scaling.png``.

How to read the fixed-rate CPU: at these rates most of a process's CPU per message is a
fixed cost per wake-up, which a burst amortizes and a trickle does not. A process that gets
1/N of the messages (one of our N workers, for a sid) wakes for nearly every message it
gets, so its cost per message rises with N even though the total work does not; a peer
process wakes for every message whatever N is. Compare systems at each N, and the master's
µs per message (flat if routing does not grow with N) apart from the total.

    python bench/scaling.py                           # --procs 1,2,4,8
    python bench/scaling.py --quick                   # under 3 minutes on 2 cores
    python bench/scaling.py --out /tmp/bench-out --only ours node
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import sys
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # python bench/scaling.py

from bench.harness import Options, markdown_table, redis_server, write_json  # noqa: E402
from bench.measure import rss_bytes  # noqa: E402
from bench.peers import (  # noqa: E402
    ROOMS,
    LoadGenerator,
    Node,
    Ours,
    PythonSocketIO,
    Scenario,
    System,
    drain,
    node_modules,
    numbered,
    subscribed,
)
from bench.scaling_chart import chart  # noqa: E402
from bench.scaling_load import RawPublisher, closed_loop, cpu_seconds, fixed_rate  # noqa: E402
from sio_cluster.master.embedded_redis import EmbeddedRedis  # noqa: E402

SYSTEMS: tuple[type[System], ...] = (Ours, PythonSocketIO, Node)
HEADER = [
    "system",
    "N",
    "target",
    "msgs/s",
    "delivered",
    "server CPU ms/1k deliveries",
    "master µs/msg",
    "idle CPU ms/s",
    "Redis conns",
    "server RSS MiB",
    "loadgen CPU",
]
STREAM_GROUPS = ("servers", "loadgen", "redis", "publisher")
STREAM_HEADER = [
    "system",
    "N",
    "window",
    "sustained deliveries/s",
    "published/s",
    "server CPU ms/1k",
    "cores: servers / loadgen / Redis / publisher",
    "lost",
]


async def redis_connections(r: aioredis.Redis) -> int:
    """Connections Redis holds now, less the benchmark's own (all named ``bench``)."""
    return sum(1 for c in await r.client_list() if c.get("name") != "bench")


async def fixed(
    system: System,
    load: LoadGenerator,
    r: aioredis.Redis,
    publisher: RawPublisher,
    scenario: Scenario,
    rate: float,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """One target at a fixed rate; CPU measured over the publishing and the drain."""
    count = max(int(rate * args.seconds), 1)
    expected = count * scenario.per_message
    pids = system.pids()
    master = system.servers.procs[0].pid if isinstance(system, Ours) else None
    load.stats()  # reset
    cpu0, load_cpu0 = cpu_seconds(pids), cpu_seconds({load.proc.pid})
    master_cpu0 = cpu_seconds({master}) if master else 0.0
    started = time.perf_counter()
    await fixed_rate(
        publisher, functools.partial(numbered, system, scenario, load.sids), count, rate
    )
    delivered, seconds, _ = await drain(load, expected, started)
    cpu = cpu_seconds(pids) - cpu0
    load_cpu = cpu_seconds({load.proc.pid}) - load_cpu0
    return {
        "target": scenario.name,
        "rate_per_s": rate,
        "messages": count,
        "delivered": delivered,
        "expected": expected,
        "server_cpu_ms_per_1k": round(cpu * 1e6 / max(delivered, 1), 2),
        "master_us_per_message": (
            round((cpu_seconds({master}) - master_cpu0) * 1e6 / count, 1) if master else None
        ),
        "redis_connections": await redis_connections(r),
        "server_rss_mib": round(rss_bytes(pids) / 2**20, 1),
        "loadgen_cpu_share": round(load_cpu / seconds, 2) if seconds else 0,
    }


async def run_one(
    cls: type[System],
    processes: int,
    server: EmbeddedRedis,
    r: aioredis.Redis,
    publisher: RawPublisher,
    args: argparse.Namespace,
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Every measurement of one system with ``processes`` server processes."""
    assert server.process is not None
    redis_pid = server.process.pid
    system = cls(server.url, processes)
    system.start()
    try:
        load = LoadGenerator(system.ports, args.clients)
        try:
            await subscribed([r], system)
            pids = system.pids()
            cpu0 = cpu_seconds(pids)
            await asyncio.sleep(args.idle)
            idle = (cpu_seconds(pids) - cpu0) * 1000 / args.idle
            rows = []
            for scenario, rate in (
                (Scenario("sid", 1), args.rate),
                (Scenario("room", args.clients // ROOMS), args.rate),
                (Scenario("all", args.clients), args.rate_all),
            ):
                row = await fixed(system, load, r, publisher, scenario, rate, args)
                rows.append(
                    {"system": cls.name, "processes": processes, "idle_cpu_ms_per_s": idle, **row}
                )
            stream = None
            if args.stream_seconds > 0:
                sid = Scenario("sid", 1)
                sustained = await closed_loop(
                    publisher,
                    load,
                    functools.partial(numbered, system, sid, load.sids),
                    sid.per_message,
                    args.window,
                    args.stream_seconds,
                    {
                        "servers": system.pids(),
                        "loadgen": {load.proc.pid},
                        "redis": {redis_pid},
                        "publisher": {os.getpid()},
                    },
                    warmup=1.0,
                )
                stream = {
                    "system": cls.name,
                    "processes": processes,
                    "window": args.window,
                    "deliveries_per_s": round(sustained.deliveries_per_s),
                    "published_per_s": round(sustained.published_per_s),
                    "server_cpu_ms_per_1k": round(sustained.server_cpu_ms_per_1k, 2),
                    "cpu_shares": sustained.cpu_shares,
                    "lost": sustained.lost,
                    "stalled": sustained.stalled,
                }
            return rows, stream
        finally:
            load.close()
    finally:
        system.stop()


def tables(results: dict[str, Any]) -> str:
    rows = [
        [
            row["system"],
            row["processes"],
            row["target"],
            f"{row['rate_per_s']:,.0f}",
            f"{row['delivered']}/{row['expected']}",
            row["server_cpu_ms_per_1k"],
            "" if row["master_us_per_message"] is None else row["master_us_per_message"],
            round(row["idle_cpu_ms_per_s"], 1),
            row["redis_connections"],
            row["server_rss_mib"],
            f"{row['loadgen_cpu_share']:.0%}",
        ]
        for row in results["rows"]
    ]
    stream = [
        [
            s["system"],
            s["processes"],
            s["window"],
            f"{s['deliveries_per_s']:,.0f}",
            f"{s['published_per_s']:,.0f}",
            s["server_cpu_ms_per_1k"],
            " / ".join(f"{s['cpu_shares'][k]:.2f}" for k in STREAM_GROUPS),
            f"{s['lost']:.0f}" + (" (stalled)" if s["stalled"] else ""),
        ]
        for s in results["stream"]
    ]
    first, last = min(results["procs"]), max(results["procs"])
    by_key = {(r["system"], r["target"], r["processes"]): r for r in results["rows"]}
    growth = []
    for system in dict.fromkeys(r["system"] for r in results["rows"]):
        for target in ("sid", "room", "all"):
            low, high = by_key.get((system, target, first)), by_key.get((system, target, last))
            if low and high:
                a, b = low["server_cpu_ms_per_1k"], high["server_cpu_ms_per_1k"]
                growth.append([system, target, a, b, f"{b / a:.2f}x" if a else "-"])
    return "\n\n".join(
        [
            markdown_table(HEADER, rows),
            f"Growth of server CPU per 1k deliveries from N={first} to N={last}:",
            markdown_table(
                ["system", "target", f"N={first}", f"N={last}", "ratio"],
                growth,
            ),
            f"Closed loop to one random sid (at most {results['window']} deliveries in flight, "
            f"{results['stream_seconds']} s):",
            markdown_table(STREAM_HEADER, stream),
        ]
    )


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    node_modules()
    results: dict[str, Any] = {
        "clients": args.clients,
        "procs": args.procs,
        "rates_per_s": {"sid": args.rate, "room": args.rate, "all": args.rate_all},
        "seconds": args.seconds,
        "window": args.window,
        "stream_seconds": args.stream_seconds,
        "machine": f"{os.cpu_count()} cores, {os.uname().machine}",
        "load_average_before": os.getloadavg(),
        "rows": [],
        "stream": [],
    }
    async with redis_server(client_name="bench") as (server, r):
        publisher = await RawPublisher.connect(server.host, server.port)
        try:
            for processes in args.procs:
                for cls in SYSTEMS:
                    if args.only and cls.name not in args.only:
                        continue
                    print(f"{cls.name}, {processes} processes ...", file=sys.stderr)
                    rows, stream = await run_one(cls, processes, server, r, publisher, args)
                    results["rows"] += rows
                    if stream:
                        results["stream"].append(stream)
        finally:
            await publisher.close()
    results["load_average_after"] = os.getloadavg()
    return results


def main() -> None:
    options = Options(
        __doc__,
        quick={"procs": [1, 2], "seconds": 1.5, "idle": 0.5, "stream_seconds": 1.5},
    )
    options.add_argument(
        "--procs",
        type=lambda s: [int(n) for n in s.split(",")],
        default=[1, 2, 4, 8],
        help="server process counts, comma-separated (1,2,4,8)",
    )
    options.add_argument("--clients", type=int, default=200)
    options.add_argument("--rate", type=float, default=1000.0, help="msgs/s to a sid, a room")
    options.add_argument("--rate-all", type=float, default=20.0, help="msgs/s to everyone")
    options.add_argument("--seconds", type=float, default=4.0, help="per fixed-rate target")
    options.add_argument("--idle", type=float, default=2.0, help="seconds of idle CPU")
    options.add_argument("--window", type=int, default=500, help="closed loop: deliveries")
    options.add_argument(
        "--stream-seconds", type=float, default=4.0, help="closed loop measuring time (0: off)"
    )
    options.add_argument("--only", nargs="*", help="run only these systems")
    args = options.parse()
    started = time.perf_counter()
    results = asyncio.run(main_async(args))
    results["wall_seconds"] = round(time.perf_counter() - started, 1)
    json_path = write_json(args.out, "scaling", results)
    chart_path = json_path.with_suffix(".png")
    chart(results, chart_path)
    print(tables(results))
    print(f"\nwall {results['wall_seconds']} s  JSON: {json_path}  chart: {chart_path}")


if __name__ == "__main__":
    main()
