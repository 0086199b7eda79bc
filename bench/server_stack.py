"""Compare the web servers a worker can run python-socketio on: aiohttp vs uvicorn.

Why: the worker's server stack decides how cheaply each delivered message reaches
its websocket, so the choice is made by measurement (see README, "Server stack").

One server process per stack (uvloop, python-socketio ``AsyncServer``) holds C
raw engine.io websocket clients; one client asks the server to broadcast M events
and the run measures delivered messages/s and server CPU per 1,000 deliveries
(from /proc). Prints a markdown table and writes JSON.

    python bench/server_stack.py --clients 200 --messages 200
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # python bench/server_stack.py

from bench.harness import Options, Processes, markdown_table, write_json  # noqa: E402
from bench.measure import cpu_seconds, free_port_block, wait_port  # noqa: E402

STACKS = ("aiohttp", "uvicorn-websockets-sansio", "uvicorn-wsproto")


def serve(stack: str, port: int) -> None:
    """Run one python-socketio server on ``stack`` until killed."""
    import socketio
    import uvloop

    mode = "aiohttp" if stack == "aiohttp" else "asgi"
    sio = socketio.AsyncServer(async_mode=mode)

    @sio.on("blast")
    async def blast(sid: str, n: int) -> None:
        for i in range(n):
            await sio.emit("tick", i)

    async def main() -> None:
        if stack == "aiohttp":
            from aiohttp import web

            app = web.Application()
            sio.attach(app)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            await asyncio.Event().wait()
        else:
            import uvicorn

            ws = stack.split("-", 1)[1]
            config = uvicorn.Config(
                socketio.ASGIApp(sio),
                host="127.0.0.1",
                port=port,
                ws=ws,
                http="httptools",
                loop="none",
                lifespan="off",
                log_level="warning",
                access_log=False,
            )
            await uvicorn.Server(config).serve()

    uvloop.run(main())


async def client(
    session: aiohttp.ClientSession,
    url: str,
    counts: list[int],
    idx: int,
    ready: asyncio.Event,
    n_ready: list[int],
    total: int,
    ws_out: list[aiohttp.ClientWebSocketResponse],
) -> None:
    async with session.ws_connect(url, max_msg_size=0) as ws:
        ws_out[idx] = ws
        await ws.receive()  # engine.io OPEN
        await ws.send_str("40")
        async for msg in ws:
            data = msg.data
            if data == "2":
                await ws.send_str("3")
            elif data.startswith("40"):
                n_ready[0] += 1
                if n_ready[0] == total:
                    ready.set()
            elif data.startswith("42"):
                counts[idx] += 1


async def run_stack(stack: str, clients: int, messages: int) -> dict[str, float | str]:
    port = free_port_block(1)
    with Processes() as server:
        proc = server.start([sys.executable, __file__, "--serve", stack, "--port", str(port)])
        url = f"ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket"
        await asyncio.to_thread(wait_port, port)
        counts = [0] * clients
        n_ready = [0]
        ready = asyncio.Event()
        wss: list = [None] * clients
        conn = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=conn) as session:
            tasks = [
                asyncio.create_task(client(session, url, counts, i, ready, n_ready, clients, wss))
                for i in range(clients)
            ]
            await asyncio.wait_for(ready.wait(), 60)
            expected = clients * messages
            cpu0, t0 = cpu_seconds([proc.pid]), time.perf_counter()
            await wss[0].send_str(f'42["blast",{messages}]')
            deadline = time.monotonic() + 120
            while sum(counts) < expected and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            elapsed = time.perf_counter() - t0
            cpu = cpu_seconds([proc.pid]) - cpu0
            delivered = sum(counts)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "stack": stack,
        "delivered": delivered,
        "expected": expected,
        "deliveries_per_s": round(delivered / elapsed),
        "server_cpu_ms_per_1k": round(cpu * 1000 / max(delivered, 1) * 1000, 1),
    }


async def main_async(args: argparse.Namespace) -> None:
    rows = []
    for _ in range(args.rounds):
        for stack in STACKS:
            rows.append(await run_stack(stack, args.clients, args.messages))
    header = ["stack", "delivered/expected", "deliveries/s", "server CPU ms per 1k"]
    cells = [
        [
            r["stack"],
            f"{r['delivered']}/{r['expected']}",
            r["deliveries_per_s"],
            r["server_cpu_ms_per_1k"],
        ]
        for r in rows
    ]
    print(markdown_table(header, cells))
    write_json(args.out, "server_stack", rows)


def main() -> None:
    options = Options(__doc__, quick={"rounds": 1, "messages": 50})
    options.add_argument("--serve", choices=STACKS, help=argparse.SUPPRESS)
    options.add_argument("--port", type=int, help=argparse.SUPPRESS)
    options.add_argument("--clients", type=int, default=200)
    options.add_argument("--messages", type=int, default=200)
    options.add_argument("--rounds", type=int, default=2)
    args = options.parse()
    if args.serve:
        serve(args.serve, args.port)
    else:
        asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
