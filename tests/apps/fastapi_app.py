"""A FastAPI app with python-socketio in ASGI mode, written as production apps are for
uvicorn: ``--app tests.apps.fastapi_app:app``."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import socketio
from fastapi import FastAPI, Request, WebSocket

from tests.apps.handlers import record, register

PING_INTERVAL = 7


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, Any]]:
    record("start")
    yield {"started_in": os.getpid()}
    record("stop")


api = FastAPI(lifespan=lifespan)
sio = socketio.AsyncServer(
    async_mode="asgi",
    ping_interval=PING_INTERVAL,
    ping_timeout=5,
    # what a uvicorn --workers deployment has; the cluster replaces it
    client_manager=socketio.AsyncRedisManager("redis://127.0.0.1:1/0"),
)
register(sio)


@api.get("/pid")
async def pid(request: Request) -> dict[str, Any]:
    return {"pid": os.getpid(), "started_in": request.state.started_in}


@api.post("/rooms/{room}/news")
async def news(room: str, request: Request) -> dict[str, Any]:
    await sio.emit("news", await request.json(), room=room)
    return {"sent": room}


@api.websocket("/echo")
async def echo(websocket: WebSocket) -> None:
    """The app's own websocket route (not Socket.IO): each text back, with the worker's pid."""
    await websocket.accept()
    while True:
        await websocket.send_text(f"{await websocket.receive_text()} {os.getpid()}")


app = socketio.ASGIApp(sio, other_asgi_app=api)
