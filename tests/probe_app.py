"""The app the integration tests run in every worker (``--app tests.probe_app:setup``).

It lets a test drive the server-side API from a client: join and leave rooms,
and make the worker's handler emit with any targets, so cross-worker routing of
handler emits is tested through python-socketio's own ``sio.emit``.
"""

from __future__ import annotations

import os
from typing import Any

import socketio

NAMESPACES = ("/", "/chat")


def setup(sio: socketio.AsyncServer) -> None:
    """Register the probe handlers on every test namespace."""
    for namespace in NAMESPACES:
        _register(sio, namespace)


def _register(sio: socketio.AsyncServer, namespace: str) -> None:
    @sio.on("join", namespace=namespace)
    async def join(sid: str, room: str) -> list[str]:
        await sio.enter_room(sid, room, namespace=namespace)
        return sorted(r for r in sio.rooms(sid, namespace=namespace) if r != sid)

    @sio.on("leave", namespace=namespace)
    async def leave(sid: str, room: str) -> list[str]:
        await sio.leave_room(sid, room, namespace=namespace)
        return sorted(r for r in sio.rooms(sid, namespace=namespace) if r != sid)

    @sio.on("emit", namespace=namespace)
    async def emit(sid: str, spec: dict[str, Any]) -> bool:
        args = spec.get("args", [])
        await sio.emit(
            spec["event"],
            tuple(args) if len(args) != 1 else args[0],
            to=spec.get("to"),
            skip_sid=spec.get("skip_sid"),
            namespace=spec.get("namespace", namespace),
        )
        return True

    @sio.on("pid", namespace=namespace)
    async def pid(sid: str) -> int:
        return os.getpid()
