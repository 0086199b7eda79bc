"""The python-socketio peer of bench/peers.py: ``AsyncServer`` + ``AsyncRedisManager``.

One process per port, on the same server stack as our workers (aiohttp, uvloop), with
the same tiny app (a ``join`` event). Usage: ``python bench/pysio_server.py PORT REDIS_URL``.
"""

from __future__ import annotations

import asyncio
import sys

import socketio
import uvloop
from aiohttp import web


async def serve(port: int, url: str) -> None:
    sio = socketio.AsyncServer(
        async_mode="aiohttp",
        client_manager=socketio.AsyncRedisManager(url),
        transports=["websocket"],
    )

    @sio.on("join")
    async def join(sid: str, room: str) -> bool:
        await sio.enter_room(sid, room)
        return True

    app = web.Application()
    sio.attach(app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print("READY", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1]), sys.argv[2]))
