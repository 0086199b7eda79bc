"""What one idle websocket connection costs a host, with each connection layer: memory, and
the CPU to connect and to drop them.

For each ``--ws`` layer (``own``: the workers' own, ``aiohttp``: aiohttp and python-engineio;
``default``: no ``--ws`` option, for a checkout older than it), one ``python -m sio_cluster
--workers 1 --worker-ports`` with the test suite's probe app and its own redis-server (the
server of another checkout with ``--repo``, for before/after figures), then ``--clients``
idle Engine.IO 4 websocket clients (``bench/raw_ws_clients.py``, bare protocols in
``--crowds`` processes, from 8 loopback source addresses) connect to its worker; measured:

- memory: PSS (``/proc/<pid>/smaps_rollup``) of the master and the worker, before the clients
  and once all are connected, per connection in KiB (the worker's apart);
- connect: wall seconds until every client has its Socket.IO CONNECT answer, and the worker's
  CPU seconds for it;
- drop: the worker's CPU seconds from the moment every client hangs up at once (its crowd
  processes are killed) until the worker has been idle for 2 s (its disconnects done), or
  until it died (its master kills a worker that does not answer its health checks for 30 s:
  the table says so).

Nothing is asserted. On 2 cores the crowd shares the CPU with the server: wall times are
indicative, CPU seconds are the server's own.

    python bench/connection_cost.py                      # 10,000 clients, both layers
    python bench/connection_cost.py --quick              # 2,000 clients
    python bench/connection_cost.py --clients 20000 --crowds 2 --only own
    python bench/connection_cost.py --repo /path/to/older/checkout --only default
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # python bench/...

from bench.harness import REPO, Options, Processes, markdown_table, write_json  # noqa: E402
from bench.measure import (  # noqa: E402
    cpu_seconds,
    descendants,
    free_port_block,
    raise_open_files,
    wait_port,
)
from sio_cluster.master.embedded_redis import EmbeddedRedis  # noqa: E402

LAYERS = ("own", "aiohttp", "default")
SETTLE = 2.0  # seconds of no CPU growth: the worker is done


def pss_kib(pids: set[int]) -> int:
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
    return total


def settled_cpu(pids: set[int], limit: float) -> tuple[float, bool]:
    """The CPU seconds of ``pids`` once they have used none for :data:`SETTLE` s, and whether
    they are all still alive (a worker killed meanwhile is counted up to its last reading)."""
    last, since, deadline = cpu_seconds(pids), time.monotonic(), time.monotonic() + limit
    while time.monotonic() < deadline:
        time.sleep(0.25)
        if not all(os.path.exists(f"/proc/{pid}") for pid in pids):
            return last, False
        now = cpu_seconds(pids)
        if now - last > 0.01:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= SETTLE:
            break
    return last, True


def start_server(
    servers: Processes, layer: str, clients: int, redis_url: str, repo: Path
) -> tuple[int, set[int], set[int]]:
    """``python -m sio_cluster`` of ``repo`` with one worker, on the ``--ws`` ``layer``, room
    for ``clients``: the worker's port, the worker's pid and the master's and worker's pids
    (as sets, which the /proc readings take). Also ``bench/polling_cost.py``'s server."""
    port = free_port_block(2)
    env = {**os.environ, "PYTHONPATH": str(repo)}  # that checkout's sio_cluster, its probe app
    master = servers.start(
        [
            sys.executable,
            "-m",
            "sio_cluster",
            "--workers",
            "1",
            "--worker-ports",
            "--port",
            str(port),
            "--metrics-port",
            str(port + 1),
            "--redis-url",
            redis_url,
            "--app",
            "tests.probe_app:setup",
            "--max-connections",
            str(clients + 100),
            *([] if layer == "default" else ["--ws", layer]),
        ],
        cwd=repo,
        env=env,
        stderr=subprocess.DEVNULL,
    )
    wait_port(port, 60)
    worker = {p for p in descendants(master.pid) if "sio_cluster.workers" in _cmdline(p)}
    return port, worker, {master.pid} | worker


def run_layer(layer: str, clients: int, crowds: int, redis_url: str, repo: Path) -> dict[str, Any]:
    with Processes() as servers, Processes() as crowd:
        port, worker, everyone = start_server(servers, layer, clients, redis_url, repo)
        time.sleep(1)
        idle = {"all": pss_kib(everyone), "worker": pss_kib(worker)}
        cpu_before = cpu_seconds(worker)
        share = math.ceil(clients / crowds)
        procs = [
            crowd.start(
                [sys.executable, str(REPO / "bench/raw_ws_clients.py"), str(port), str(n)],
                stdout=subprocess.PIPE,
                text=True,
            )
            for n in [min(share, clients - i * share) for i in range(crowds)]
        ]
        lines = [p.stdout.readline().split() for p in procs if p.stdout is not None]
        failed = [line for line in lines if not line or line[0] != "connected"]
        if failed:
            return {"failed": f"not every client connected: {failed}"}
        connect_wall = max(float(line[2]) for line in lines)
        time.sleep(SETTLE)
        connected = {"all": pss_kib(everyone), "worker": pss_kib(worker)}
        cpu_connected, _ = settled_cpu(worker, 30)
        crowd.stop()
        cpu_dropped, alive = settled_cpu(worker, 120)
        return {
            "pss_kib_per_connection": round((connected["all"] - idle["all"]) / clients, 2),
            "worker_pss_kib_per_connection": round(
                (connected["worker"] - idle["worker"]) / clients, 2
            ),
            "connect_seconds": round(connect_wall, 2),
            "worker_cpu_connect_s": round(cpu_connected - cpu_before, 2),
            "worker_cpu_drop_s": round(cpu_dropped - cpu_connected, 2),
            "worker_survived_drop": alive,
        }


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def main() -> None:
    options = Options(__doc__, quick={"clients": 2000})
    options.add_argument("--clients", type=int, default=10_000)
    options.add_argument("--crowds", type=int, default=1, help="client processes")
    options.add_argument("--only", nargs="*", choices=LAYERS, default=["own", "aiohttp"])
    options.add_argument("--repo", default=str(REPO), help="the checkout whose server runs")
    args = options.parse()
    raise_open_files(args.clients + 1024)
    redis = EmbeddedRedis().start()
    results: dict[str, Any] = {
        "clients": args.clients,
        "repo": args.repo,
        "load_average": os.getloadavg(),
    }
    try:
        for layer in args.only:
            print(f"--ws {layer} ...", file=sys.stderr)
            results[layer] = run_layer(layer, args.clients, args.crowds, redis.url, Path(args.repo))
    finally:
        redis.close()
    path = write_json(args.out, "connection_cost", results)
    rows = []
    for layer in args.only:
        r = results[layer]
        if "failed" in r:
            rows.append([layer, r["failed"], "", "", "", ""])
            continue
        rows.append(
            [
                layer,
                r["pss_kib_per_connection"],
                r["worker_pss_kib_per_connection"],
                r["connect_seconds"],
                r["worker_cpu_connect_s"],
                r["worker_cpu_drop_s"]
                if r["worker_survived_drop"]
                else f"over {r['worker_cpu_drop_s']}, then its master killed it",
            ]
        )
    header = [
        "--ws",
        "PSS KiB/conn (master+worker)",
        "worker only",
        f"connect {args.clients} s",
        "worker CPU s to connect",
        "worker CPU s to drop all",
    ]
    print(markdown_table(header, rows))
    print(f"\nload average {results['load_average'][0]:.1f}; JSON: {path}")


if __name__ == "__main__":
    main()
