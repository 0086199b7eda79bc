"""A Starlette app with python-socketio in ASGI mode: ``--app tests.apps.starlette_app:app``."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import socketio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.apps.handlers import record, register

PING_INTERVAL = 8


@asynccontextmanager
async def lifespan(_: Starlette) -> AsyncIterator[dict[str, Any]]:
    record("start")
    yield {"started_in": os.getpid()}
    record("stop")


sio = socketio.AsyncServer(async_mode="asgi", ping_interval=PING_INTERVAL)
register(sio)


async def pid(request: Request) -> JSONResponse:
    return JSONResponse({"pid": os.getpid(), "started_in": request.state.started_in})


async def news(request: Request) -> JSONResponse:
    room = request.path_params["room"]
    await sio.emit("news", await request.json(), room=room)
    return JSONResponse({"sent": room})


routes = [Route("/pid", pid), Route("/rooms/{room}/news", news, methods=["POST"])]
app = socketio.ASGIApp(sio, other_asgi_app=Starlette(routes=routes, lifespan=lifespan))
