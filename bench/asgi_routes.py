"""A FastAPI app's own HTTP routes on our cluster against ``uvicorn --workers N`` (issue 23).

The app is ``tests.apps.fastapi_app`` (Socket.IO in ASGI mode beside FastAPI). ``--clients``
aiohttp clients on kept-alive connections send ``GET /pid`` for ``--seconds`` against each
system in turn: ours on one port (the master hands every connection over, and a worker closes
each connection after one answer), ours with ``--worker-ports`` and one worker (kept-alive
connections straight to it: what the ASGI bridge costs), and uvicorn with ``--workers`` and 1
worker (needs ``pip install -e '.[bench]'``). The load generator shares the machine.

    python bench/asgi_routes.py [--workers 2] [--seconds 10] [--clients 20] [--quick]
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # python bench/asgi_routes.py

from bench.harness import REPO, Options, Processes, markdown_table, write_json  # noqa: E402
from bench.measure import free_port_block  # noqa: E402
from tests.cluster import MasterProcess  # noqa: E402

APP = "tests.apps.fastapi_app:app"


async def load(url: str, seconds: float, clients: int) -> dict[str, Any]:
    """Requests per second, p50 and p99 of ``GET url`` from ``clients`` loops."""
    latencies: list[float] = []
    end = time.monotonic() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as http:

        async def loop() -> None:
            while time.monotonic() < end:
                started = time.perf_counter()
                async with http.get(url) as answer:
                    await answer.read()
                    assert answer.status == 200, answer.status
                latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(loop() for _ in range(clients)))
    latencies.sort()
    return {
        "requests/s": round(len(latencies) / seconds),
        "p50 ms": round(latencies[len(latencies) // 2] * 1000, 2),
        "p99 ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 2),
    }


async def ours(workers: int, one_port: bool, args: Any) -> dict[str, Any]:
    with MasterProcess(None, workers=workers, app=APP, one_port=one_port).start() as master:
        await master.ready(60)
        return await load(master.url(0) + "/pid", args.seconds, args.clients)


async def uvicorn(workers: int, args: Any) -> dict[str, Any]:
    binary = shutil.which("uvicorn", path=str(Path(sys.executable).parent))
    if binary is None:
        raise SystemExit("uvicorn is not installed: pip install -e '.[bench]'")
    port = free_port_block(1)
    command = [binary, APP, "--workers", str(workers), "--port", str(port)]
    with Processes() as processes:
        processes.start([*command, "--log-level", "warning"], cwd=REPO)
        url = f"http://127.0.0.1:{port}/pid"
        async with aiohttp.ClientSession() as http:
            for _ in range(300):  # up within 30 s
                try:
                    async with http.get(url) as answer:
                        if answer.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
            else:
                raise SystemExit("uvicorn did not answer within 30 s")
        return await load(url, args.seconds, args.clients)


async def run(args: Any) -> list[dict[str, Any]]:
    n = args.workers
    systems = [
        (f"ours, {n} workers, one port", lambda: ours(n, True, args)),
        ("ours, 1 worker (--worker-ports)", lambda: ours(1, False, args)),
        (f"uvicorn --workers {n}", lambda: uvicorn(n, args)),
        ("uvicorn --workers 1", lambda: uvicorn(1, args)),
    ]
    return [{"system": name, **await measure()} for name, measure in systems]


def main() -> None:
    options = Options(__doc__, quick={"seconds": 3})
    options.add_argument("--workers", type=int, default=2)
    options.add_argument("--seconds", type=float, default=10.0)
    options.add_argument("--clients", type=int, default=20)
    args = options.parse()
    rows = asyncio.run(run(args))
    header = list(rows[0])
    print(markdown_table(header, [[row[h] for h in header] for row in rows]))
    print(f"\nwritten to {write_json(args.out, 'asgi_routes', rows)}")


if __name__ == "__main__":
    main()
