"""A server whose ``/`` connect handler waits until a client connects to ``/gate``:
``--app tests.apps.gated_connect_app:setup``. A test holds a client's CONNECT in its handler
for as long as it needs (what a slow authentication look-up does), without a timer."""

from __future__ import annotations

import asyncio
from typing import Any

import socketio


def setup(sio: socketio.AsyncServer) -> None:
    gate = asyncio.Event()

    @sio.on("connect")
    async def connect(sid: str, environ: dict[str, Any], auth: Any) -> None:
        await gate.wait()

    @sio.on("connect", namespace="/chat")
    async def connect_chat(sid: str, environ: dict[str, Any], auth: Any) -> None:
        pass

    @sio.on("hello", namespace="/chat")
    async def hello(sid: str) -> str:
        return "hi"

    @sio.on("connect", namespace="/gate")
    async def open_gate(sid: str, environ: dict[str, Any], auth: Any) -> None:
        gate.set()
