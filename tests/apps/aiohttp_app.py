"""An aiohttp app with python-socketio attached: ``--app tests.apps.aiohttp_app:app``."""

from __future__ import annotations

import os

import socketio
from aiohttp import web

from tests.apps.handlers import record, register

PING_INTERVAL = 9


async def started(app: web.Application) -> None:
    record("start")


async def stopped(app: web.Application) -> None:
    record("stop")


async def pid(request: web.Request) -> web.Response:
    return web.json_response({"pid": os.getpid(), "started_in": os.getpid()})


async def news(request: web.Request) -> web.Response:
    room = request.match_info["room"]
    await sio.emit("news", await request.json(), room=room)
    return web.json_response({"sent": room})


sio = socketio.AsyncServer(async_mode="aiohttp", ping_interval=PING_INTERVAL)
register(sio)
app = web.Application()
sio.attach(app)
app.router.add_get("/pid", pid)
app.router.add_post("/rooms/{room}/news", news)
app.on_startup.append(started)
app.on_cleanup.append(stopped)
