"""The hot path's cost per message against issue 11's targets, beside the machine's floor.

Why a benchmark of its own: ``bench/scaling.py`` shows how cost grows with the number of
processes at one rate; this shows what one routed ``ch:*`` message costs the master and what
one delivery to a sid costs a worker, at a trickle and at a stream, with the targets printed
beside them (master at most 25 µs per message at 1,000/s and 10 µs at 20,000/s; a worker at
most 10 µs per delivery at 20,000/s), and how much of a wake-up is the machine's rather than
ours. ``--repo`` runs the server of another checkout (an older commit) with the same
command, for before/after figures.

``python -m sio_cluster --workers N`` (``--procs``) serves ``--clients`` websocket clients of the
Node load generator (client i on worker i % N). For each rate of ``--rates`` the publisher
sends ``--seconds`` worth of messages, each to one random sid, ``--repeats`` times, in two
ways:

- **spread**: to any client; with N workers, messages that arrive together mostly go to
  different workers, so nearly every delivery is a wake-up of its own;
- **one worker**: only to worker 0's clients, so messages that arrive together wake it once.

The master's CPU per message and the workers' CPU per delivery are measured from schedstat
over the publishing and the drain (median and range of the repeats); every message is
counted in by the load generator. **floor**: ``bench/wakeup_floor.py``'s N bare uvloop
relays woken once per message at the same rate.

    python bench/hot_path.py                       # N=2, 1,000 and 20,000 msgs/s
    python bench/hot_path.py --procs 4 --rates 1000 --repo /path/to/older/checkout
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # python bench/hot_path.py

from bench.harness import REPO, Options, markdown_table, redis_server, write_json  # noqa: E402
from bench.peers import (  # noqa: E402
    LoadGenerator,
    Ours,
    Scenario,
    drain,
    node_modules,
    numbered,
    subscribed,
)
from bench.scaling_load import RawPublisher, cpu_seconds, fixed_rate  # noqa: E402
from bench.wakeup_floor import relay_cpu_per_message  # noqa: E402

TARGETS = {  # rate -> (master µs per message, worker µs per delivery), issue 11
    1000.0: (25.0, None),
    20000.0: (10.0, 10.0),
}
HEADER = [
    "msgs/s",
    "targets",
    "master µs/msg",
    "workers µs/delivery",
    "delivered",
    "floor µs/wake-up",
]


def spread(values: list[float]) -> str:
    """Median, and the range when the repeats differ."""
    median = f"{statistics.median(values):.1f}"
    low, high = min(values), max(values)
    return median if high - low < 0.05 else f"{median} ({low:.1f}-{high:.1f})"


async def measure(
    system: Ours,
    load: LoadGenerator,
    publisher: RawPublisher,
    sids: list[str],
    rate: float,
    seconds: float,
) -> dict[str, float]:
    """One publishing run to a random sid of ``sids``; CPU from schedstat."""
    master = system.servers.procs[0].pid
    workers = system.pids() - {master}
    count = max(int(rate * seconds), 1)
    load.stats()  # reset its counts
    master0, workers0 = cpu_seconds({master}), cpu_seconds(workers)
    started = time.perf_counter()
    make = functools.partial(numbered, system, Scenario("sid", 1), sids)
    await fixed_rate(publisher, make, count, rate)
    delivered, _, _ = await drain(load, count, started)
    return {
        "messages": count,
        "delivered": delivered,
        "master_us_per_message": (cpu_seconds({master}) - master0) * 1e6 / count,
        "workers_us_per_delivery": (cpu_seconds(workers) - workers0) * 1e6 / max(delivered, 1),
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    node_modules()
    repo = Path(args.repo).resolve()
    results: dict[str, Any] = {
        "repo": str(repo),
        "procs": args.procs,
        "clients": args.clients,
        "seconds": args.seconds,
        "repeats": args.repeats,
        "machine": f"{os.cpu_count()} cores, {os.uname().machine}",
        "load_average_before": os.getloadavg(),
        "rows": [],
    }
    async with redis_server(client_name="bench") as (server, r):
        publisher = await RawPublisher.connect(server.host, server.port)
        system = Ours(server.url, args.procs, repo=repo)
        system.start()
        try:
            load = LoadGenerator(system.ports, args.clients)
            try:
                await subscribed([r], system)
                await asyncio.sleep(1.0)  # every worker idle before the first run
                for rate in args.rates:
                    for mode, sids in (
                        ("spread", load.sids),
                        ("one worker", load.sids[:: args.procs]),
                    ):
                        runs = [
                            await measure(system, load, publisher, sids, rate, args.seconds)
                            for _ in range(args.repeats)
                        ]
                        results["rows"].append({"rate_per_s": rate, "mode": mode, "runs": runs})
            finally:
                load.close()
        finally:
            system.stop()
            await publisher.close()
    for rate in args.rates:
        floor = [relay_cpu_per_message(args.procs, rate, args.seconds) for _ in range(args.repeats)]
        results["rows"].append({"rate_per_s": rate, "mode": "floor", "floor_us": floor})
    results["load_average_after"] = os.getloadavg()
    return results


def table(results: dict[str, Any]) -> str:
    rows = []
    for row in results["rows"]:
        rate = row["rate_per_s"]
        master_target, worker_target = TARGETS.get(rate, (None, None))
        targets = ", ".join(
            t
            for t in (
                f"master ≤ {master_target:g}" if master_target else "",
                f"worker ≤ {worker_target:g}" if worker_target else "",
            )
            if t
        )
        if row["mode"] == "floor":
            rows.append([f"{rate:,.0f}", "", "", "", "", spread(row["floor_us"])])
            continue
        runs = row["runs"]
        rows.append(
            [
                f"{rate:,.0f} ({row['mode']})",
                targets,
                spread([run["master_us_per_message"] for run in runs]),
                spread([run["workers_us_per_delivery"] for run in runs]),
                " ".join(f"{run['delivered']}/{run['messages']}" for run in runs),
                "",
            ]
        )
    return markdown_table(HEADER, rows)


def main() -> None:
    options = Options(__doc__, quick={"rates": [1000.0, 20000.0], "seconds": 2.0, "repeats": 1})
    options.add_argument("--procs", type=int, default=2, help="workers")
    options.add_argument("--clients", type=int, default=200)
    options.add_argument(
        "--rates",
        type=lambda s: [float(r) for r in s.split(",")],
        default=[1000.0, 20000.0],
        help="messages/s, comma-separated (1000,20000)",
    )
    options.add_argument("--seconds", type=float, default=5.0, help="per run")
    options.add_argument("--repeats", type=int, default=3)
    options.add_argument("--repo", default=str(REPO), help="the checkout whose server runs")
    args = options.parse()
    started = time.perf_counter()
    results = asyncio.run(main_async(args))
    results["wall_seconds"] = round(time.perf_counter() - started, 1)
    path = write_json(args.out, "hot_path", results)
    print(table(results))
    print(f"\nwall {results['wall_seconds']} s  JSON: {path}")


if __name__ == "__main__":
    main()
