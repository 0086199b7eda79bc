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
    async def join(sid: str, room: str | int) -> list[str | int]:
        await sio.enter_room(sid, room, namespace=namespace)
        return sorted((r for r in sio.rooms(sid, namespace=namespace) if r != sid), key=str)

    @sio.on("leave", namespace=namespace)
    async def leave(sid: str, room: str | int) -> list[str | int]:
        await sio.leave_room(sid, room, namespace=namespace)
        return sorted((r for r in sio.rooms(sid, namespace=namespace) if r != sid), key=str)

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

    @sio.on("op", namespace=namespace)
    async def op(sid: str, spec: dict[str, Any]) -> Any:
        """Run one server-side API call named by the client, for any sid; errors come back."""
        try:
            return await _operation(sio, namespace, spec)
        except Exception as exc:  # the test asserts on the error text
            return {"error": f"{type(exc).__name__}: {exc}"}

    async def announce(*args: Any) -> None:
        await sio.emit(
            "announced",
            {"pid": os.getpid(), "args": list(args)},
            namespace=namespace,
            ignore_queue=True,
        )

    sio.manager.on_server_event("announce", announce, namespace=namespace)


async def _operation(sio: socketio.AsyncServer, namespace: str, spec: dict[str, Any]) -> Any:
    name = spec["name"]
    manager = sio.manager
    if name == "enter_room":
        await sio.enter_room(spec["sid"], spec["room"], namespace=namespace)
    elif name == "leave_room":
        await sio.leave_room(spec["sid"], spec["room"], namespace=namespace)
    elif name == "close_room":
        await sio.close_room(spec["room"], namespace=namespace)
    elif name == "disconnect":
        await sio.disconnect(spec["sid"], namespace=namespace)
    elif name == "call":
        return await sio.call(
            spec["event"],
            spec.get("data"),
            to=spec["sid"],
            namespace=namespace,
            timeout=spec.get("timeout", 10),
        )
    elif name == "fetch_sockets":
        sockets = await manager.fetch_sockets(spec.get("to"), spec.get("exclude"), namespace)
        return sorted(
            ({"id": s["id"], "rooms": sorted(s["rooms"], key=str)} for s in sockets),
            key=lambda s: s["id"],
        )
    elif name == "sockets_join":
        return await manager.sockets_join(
            spec["rooms"], spec.get("to"), spec.get("exclude"), namespace
        )
    elif name == "sockets_leave":
        return await manager.sockets_leave(
            spec["rooms"], spec.get("to"), spec.get("exclude"), namespace
        )
    elif name == "disconnect_sockets":
        return await manager.disconnect_sockets(
            spec.get("to"), spec.get("exclude"), spec.get("close", False), namespace
        )
    elif name == "server_side_emit":
        return await manager.server_side_emit(
            "announce", *spec.get("args", []), namespace=namespace
        )
    else:
        raise ValueError(f"unknown probe operation {name!r}")
    return "ok"
