"""The built-in demo: a small chat with rooms, served when no ``--app`` is given.

Client events:
- ``join`` (room) / ``leave`` (room): enter or leave a room; the room hears
  ``joined`` / ``left`` with ``{"sid", "room"}``. The ack is the socket's rooms.
- ``say`` ({"room"?, "text"}): sends ``message`` ``{"from", "text", "room"}`` to the
  room, or to everyone when no room is given, whichever worker holds them.

Backend services reach the same clients by publishing on ``ch:*`` (see README).
"""

from __future__ import annotations

from typing import Any

import socketio


def setup(sio: socketio.AsyncServer) -> None:
    """Register the demo's handlers on ``sio``."""

    async def rooms_of(sid: str) -> list[str]:
        return sorted(str(r) for r in sio.rooms(sid) if r != sid)

    @sio.on("join")
    async def join(sid: str, room: Any) -> list[str]:
        if isinstance(room, str) and room:
            await sio.enter_room(sid, room)
            await sio.emit("joined", {"sid": sid, "room": room}, to=room)
        return await rooms_of(sid)

    @sio.on("leave")
    async def leave(sid: str, room: Any) -> list[str]:
        if isinstance(room, str) and room:
            await sio.leave_room(sid, room)
            await sio.emit("left", {"sid": sid, "room": room}, to=room)
        return await rooms_of(sid)

    @sio.on("say")
    async def say(sid: str, message: Any) -> None:
        if not isinstance(message, dict) or not isinstance(message.get("text"), str):
            return
        room = message.get("room")
        target = room if isinstance(room, str) and room else None
        await sio.emit("message", {"from": sid, "text": message["text"], "room": target}, to=target)
