"""What one port per host costs: the master's CPU per accepted connection, and the latency.

Each run starts a master with 2 workers and opens ``--connections`` fresh TCP connections
(``--concurrency`` at a time), each carrying one HTTP request (``GET /healthz``, answered by
whichever worker gets it), first on one port (the master accepts, peeks and hands each
connection over), then with ``--worker-ports`` (the clients connect to the workers directly,
split evenly: the master is not involved). The master's CPU seconds come from /proc.

    python bench/one_port.py [--connections 2000] [--concurrency 50] [--quick]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # python bench/one_port.py

from bench.harness import Options, markdown_table, write_json  # noqa: E402
from bench.measure import cpu_seconds  # noqa: E402
from tests.cluster import MasterProcess  # noqa: E402

WORKERS = 2


async def one_layout(one_port: bool, connections: int, concurrency: int) -> dict[str, Any]:
    with MasterProcess(None, workers=WORKERS, one_port=one_port).start() as master:
        await master.ready(60)
        workers = set(master.worker_pids().values())
        latencies: list[float] = []
        queue = list(range(connections))

        async def client() -> None:
            connector = aiohttp.TCPConnector(force_close=True)  # a new connection each time
            async with aiohttp.ClientSession(connector=connector) as http:
                while queue:
                    i = queue.pop()
                    started = time.perf_counter()
                    async with http.get(f"{master.url(i % WORKERS)}/healthz") as response:
                        await response.read()
                        assert response.status == 200
                    latencies.append(time.perf_counter() - started)

        master_before, workers_before = cpu_seconds([master.pid]), cpu_seconds(workers)
        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        seconds = time.perf_counter() - started
        master_cpu = cpu_seconds([master.pid]) - master_before
        workers_cpu = cpu_seconds(workers) - workers_before
        latencies.sort()
        return {
            "layout": "one port" if one_port else "--worker-ports",
            "connections": connections,
            "seconds": round(seconds, 2),
            "master CPU s": round(master_cpu, 3),
            "master CPU µs/connection": round(master_cpu / connections * 1e6),
            "workers CPU s": round(workers_cpu, 3),
            "p50 ms": round(statistics.median(latencies) * 1000, 2),
            "p99 ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 2),
        }


def main() -> None:
    options = Options(__doc__, quick={"connections": 200})
    options.add_argument("--connections", type=int, default=2000)
    options.add_argument("--concurrency", type=int, default=50)
    args = options.parse()
    rows = [asyncio.run(one_layout(p, args.connections, args.concurrency)) for p in (True, False)]
    header = list(rows[0])
    print(markdown_table(header, [[row[h] for h in header] for row in rows]))
    print(f"\nwritten to {write_json(args.out, 'one_port', rows)}")


if __name__ == "__main__":
    main()
