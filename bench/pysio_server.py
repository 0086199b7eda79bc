"""The python-socketio peer of bench/peers.py: ``AsyncServer`` + ``AsyncRedisManager``.

One process per port, with the same tiny app (a ``join`` event), on one of two stacks:

- ``aiohttp`` (the default; ``bench/peers.py``, ``bench/scaling.py``): the server stack our
  workers run on (aiohttp, uvloop);
- ``uvicorn`` (``bench/ten_thousand.py``'s ``pysio``): ``socketio.ASGIApp`` on uvicorn with
  httptools and uvloop, and uvicorn's default websocket implementation, websockets'
  sans-I/O protocol (``ws="websockets-sansio"``, what ``ws="auto"`` picks when websockets
  is installed): how python-socketio is most often deployed, the "uvicorn + websockets" of
  issue 26, and the stack ``bench/server_stack.py`` runs as ``uvicorn-websockets-sansio``.

Usage: ``python bench/pysio_server.py PORT REDIS_URL [aiohttp|uvicorn]``.
"""

from __future__ import annotations

import asyncio
import sys

import socketio
import uvloop

STACKS = ("aiohttp", "uvicorn")


def server(url: str, async_mode: str) -> socketio.AsyncServer:
    """The app, its Redis subscription started (call it with the event loop running)."""
    sio = socketio.AsyncServer(
        async_mode=async_mode,
        client_manager=socketio.AsyncRedisManager(url),
        transports=["websocket"],
    )

    @sio.on("join")
    async def join(sid: str, room: str) -> bool:
        await sio.enter_room(sid, room)
        return True

    # subscribed now, not on the first connection (python-socketio's default), so a benchmark
    # can wait for the subscription before any client comes and measure the idle server with it
    sio.manager_initialized = True
    sio.manager.initialize()
    return sio


async def on_aiohttp(port: int, url: str) -> None:
    from aiohttp import web

    app = web.Application()
    server(url, "aiohttp").attach(app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print("READY", flush=True)
    await asyncio.Event().wait()


async def on_uvicorn(port: int, url: str) -> None:
    import uvicorn

    config = uvicorn.Config(
        socketio.ASGIApp(server(url, "asgi")),
        host="127.0.0.1",
        port=port,
        http="httptools",
        ws="websockets-sansio",
        loop="none",  # uvloop.run below
        lifespan="off",
        log_level="warning",
        access_log=False,
    )
    await uvicorn.Server(config).serve()


if __name__ == "__main__":
    stack = sys.argv[3] if len(sys.argv) > 3 else "aiohttp"
    if stack not in STACKS:
        raise SystemExit(f"stack {stack!r}: one of {', '.join(STACKS)}")
    serve = on_aiohttp if stack == "aiohttp" else on_uvicorn
    uvloop.run(serve(int(sys.argv[1]), sys.argv[2]))
