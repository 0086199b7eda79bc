"""A FastAPI app with python-socketio in ASGI mode, written as production apps are for
uvicorn: ``--app tests.apps.fastapi_app:app``."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import socketio
from fastapi import FastAPI, Request

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


app = socketio.ASGIApp(sio, other_asgi_app=api)
