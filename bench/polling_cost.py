"""What Engine.IO 4 long-polling clients cost a host, with each connection layer: memory, the
CPU to connect them, and the CPU to deliver broadcasts to them.

Why apart from ``bench/connection_cost.py``: a long-polling session is not an idle
connection: every message it receives ends a held GET, and the client's next GET is a new
HTTP request to parse and route; this is what the layer's own long-polling (``own``) saves
over aiohttp and python-engineio (``aiohttp``), or not.

For each ``--ws`` layer, one ``python -m sio_cluster --workers 1 --worker-ports`` with the
test suite's probe app and its own redis-server (the server of another checkout with
``--repo``), started as ``bench/connection_cost.py`` starts it; then ``--clients``
long-polling clients (``bench/raw_polling_clients.py``, bare protocols in ``--crowds``
processes, one kept-alive connection each, from 8 loopback source addresses) connect to its
worker and join room ``all``; measured:

- memory: PSS (``/proc/<pid>/smaps_rollup``) of the master and the worker, before the clients
  and once all are in the room, per session in KiB (the worker's apart);
- connect: wall seconds until every client has its ``join`` ack, and the worker's CPU seconds
  for it;
- broadcast: ``--broadcasts`` messages published to room ``all`` through redis (``PUBLISH
  ch:bench {"to": "all", "data": "x"}``) at ``--rate`` a second; the messages the clients
  received of the ``clients x broadcasts`` expected (waiting at most 60 s after the last
  publish), the worker's CPU µs per delivery (from the first publish until the worker is idle
  again; equal to its CPU ms per 1,000 deliveries), and the wall seconds from the first
  publish to the last delivery.

Nothing is asserted. On 2 cores the crowd shares the CPU with the server: wall times are
indicative, CPU seconds are the server's own.

    python bench/polling_cost.py                      # 2,000 clients, 200 broadcasts, both layers
    python bench/polling_cost.py --quick              # 500 clients, 50 broadcasts
    python bench/polling_cost.py --clients 5000 --crowds 2 --rate 50 --only own
    python bench/polling_cost.py --repo /path/to/other/checkout
"""

from __future__ import annotations

import math
import os
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # python bench/...

from bench.connection_cost import SETTLE, pss_kib, settled_cpu, start_server  # noqa: E402
from bench.harness import REPO, Options, Processes, markdown_table, write_json  # noqa: E402
from bench.measure import cpu_seconds, raise_open_files  # noqa: E402
from sio_cluster.master.embedded_redis import EmbeddedRedis  # noqa: E402

LAYERS = ("own", "aiohttp")
MESSAGE = '{"to":"all","data":"x"}'
DELIVERY_LIMIT = 60.0  # seconds after the last publish
ANSWER_LIMIT = 10.0  # seconds a crowd has to answer "count"


def start_crowds(
    crowd: Processes, port: int, clients: int, crowds: int
) -> list[subprocess.Popen[Any]]:
    """``crowds`` client processes sharing ``clients``, their stdin and stdout piped."""
    share = math.ceil(clients / crowds)
    return [
        crowd.start(
            [sys.executable, str(REPO / "bench/raw_polling_clients.py"), str(port), str(n)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in [min(share, clients - i * share) for i in range(crowds)]
    ]


def count(procs: list[subprocess.Popen[Any]]) -> tuple[int, float] | None:
    """The messages every crowd's clients have received, and when the last one arrived
    (``time.monotonic()``, 0 before any); None if a crowd is gone or silent."""
    total, last = 0, 0.0
    for p in procs:
        assert p.stdin is not None and p.stdout is not None
        try:
            p.stdin.write("count\n")
            p.stdin.flush()
        except BrokenPipeError:
            return None
        ready, _, _ = select.select([p.stdout], [], [], ANSWER_LIMIT)
        line = p.stdout.readline().split() if ready else []
        if len(line) != 3 or line[0] != "got":
            return None
        total, last = total + int(line[1]), max(last, float(line[2]))
    return total, last


def publish(redis_url: str, broadcasts: int, rate: float) -> float:
    """``broadcasts`` messages to room ``all``, ``rate`` a second; when the first went."""
    with redis.Redis.from_url(redis_url) as client:
        first = time.monotonic()
        for i in range(broadcasts):
            time.sleep(max(0.0, first + i / rate - time.monotonic()))
            client.publish("ch:bench", MESSAGE)
    return first


def wait_delivered(procs: list[subprocess.Popen[Any]], expected: int) -> tuple[int, float]:
    """The messages delivered once all ``expected`` are (or after :data:`DELIVERY_LIMIT` s),
    and when the last one arrived."""
    got, last = 0, 0.0
    deadline = time.monotonic() + DELIVERY_LIMIT
    while time.monotonic() < deadline:
        answer = count(procs)
        if answer is None:
            break
        got, last = answer
        if got >= expected:
            break
        time.sleep(0.25)
    return got, last


def run_layer(
    layer: str, clients: int, crowds: int, broadcasts: int, rate: float, redis_url: str, repo: Path
) -> dict[str, Any]:
    with Processes() as servers, Processes() as crowd:
        port, worker, everyone = start_server(servers, layer, clients, redis_url, repo)
        time.sleep(1)
        idle = {"all": pss_kib(everyone), "worker": pss_kib(worker)}
        cpu_before = cpu_seconds(worker)
        procs = start_crowds(crowd, port, clients, crowds)
        lines = [p.stdout.readline().split() for p in procs if p.stdout is not None]
        failed = [line for line in lines if not line or line[0] != "connected"]
        if failed:
            return {"failed": f"not every client connected: {failed}"}
        connect_wall = max(float(line[2]) for line in lines)
        time.sleep(SETTLE)
        connected = {"all": pss_kib(everyone), "worker": pss_kib(worker)}
        cpu_connected, _ = settled_cpu(worker, 30)
        first = publish(redis_url, broadcasts, rate)
        delivered, last = wait_delivered(procs, clients * broadcasts)
        cpu_delivered, _ = settled_cpu(worker, 30)
        return {
            "pss_kib_per_session": round((connected["all"] - idle["all"]) / clients, 2),
            "worker_pss_kib_per_session": round(
                (connected["worker"] - idle["worker"]) / clients, 2
            ),
            "connect_seconds": round(connect_wall, 2),
            "worker_cpu_connect_s": round(cpu_connected - cpu_before, 2),
            "delivered": delivered,
            "expected": clients * broadcasts,
            "worker_cpu_us_per_delivery": round(
                (cpu_delivered - cpu_connected) / max(delivered, 1) * 1e6, 1
            ),
            "broadcast_seconds": round(last - first, 2) if last else None,
        }


def main() -> None:
    options = Options(__doc__, quick={"clients": 500, "broadcasts": 50})
    options.add_argument("--clients", type=int, default=2000)
    options.add_argument("--crowds", type=int, default=1, help="client processes")
    options.add_argument("--broadcasts", type=int, default=200, help="messages to room 'all'")
    options.add_argument("--rate", type=float, default=20, help="broadcasts a second")
    options.add_argument("--only", nargs="*", choices=LAYERS, default=list(LAYERS))
    options.add_argument("--repo", default=str(REPO), help="the checkout whose server runs")
    args = options.parse()
    raise_open_files(args.clients + 1024)
    server = EmbeddedRedis().start()
    results: dict[str, Any] = {
        "clients": args.clients,
        "broadcasts": args.broadcasts,
        "rate": args.rate,
        "repo": args.repo,
        "load_average": os.getloadavg(),
    }
    try:
        for layer in args.only:
            print(f"--ws {layer} ...", file=sys.stderr)
            results[layer] = run_layer(
                layer,
                args.clients,
                args.crowds,
                args.broadcasts,
                args.rate,
                server.url,
                Path(args.repo),
            )
    finally:
        server.close()
    path = write_json(args.out, "polling_cost", results)
    rows = [_row(layer, results[layer]) for layer in args.only]
    print(markdown_table(_header(args.clients), rows))
    print(f"\nload average {results['load_average'][0]:.1f}; JSON: {path}")


def _header(clients: int) -> list[str]:
    return [
        "--ws",
        "PSS KiB/session (master+worker)",
        "worker only",
        f"connect {clients} s",
        "worker CPU s to connect",
        "delivered/expected",
        "worker CPU µs/delivery",
        "first publish to last delivery s",
    ]


def _row(layer: str, r: dict[str, Any]) -> list[object]:
    if "failed" in r:
        return [layer, r["failed"], "", "", "", "", "", ""]
    return [
        layer,
        r["pss_kib_per_session"],
        r["worker_pss_kib_per_session"],
        r["connect_seconds"],
        r["worker_cpu_connect_s"],
        f"{r['delivered']}/{r['expected']}",
        r["worker_cpu_us_per_delivery"],
        r["broadcast_seconds"],
    ]


if __name__ == "__main__":
    main()
