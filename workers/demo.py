"""The built-in demo: a small chat with rooms, served when no ``--app`` is given.

Client events:
- ``join`` (room) / ``leave`` (room): enter or leave a room; the room hears
  ``joined`` / ``left`` with ``{"sid", "room"}``. The ack is the socket's rooms. A room
  name over 128 characters, or a join beyond 100 rooms per socket, is refused (the ack
  shows the rooms unchanged): a public demo must not let one client grow without bound.
- ``say`` ({"room"?, "text", "nick"?}): sends ``message`` ``{"from", "nick", "text",
  "room"}`` to the room, or to everyone when no room is given, whichever worker holds them.

Backend services reach the same clients by publishing on ``ch:*`` (see README).

Every worker also serves the chat page at ``/``, with the Socket.IO client (4.8, MIT)
from this package at ``/socket.io.min.js``: no CDN, so it works offline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import socketio
from aiohttp import web

STATIC = Path(__file__).resolve().parent / "demo_static"
MAX_NICK = 32
MAX_ROOM_NAME = 128
MAX_ROOMS = 100


def setup(sio: socketio.AsyncServer, web_app: web.Application) -> None:
    """Register the demo's handlers on ``sio`` and its page on ``web_app``."""

    def serve(name: str) -> Any:
        async def handle(_: web.Request) -> web.FileResponse:
            return web.FileResponse(STATIC / name)

        return handle

    web_app.router.add_get("/", serve("index.html"))
    web_app.router.add_get("/socket.io.min.js", serve("socket.io.min.js"))

    async def rooms_of(sid: str) -> list[str]:
        return sorted(str(r) for r in sio.rooms(sid) if r != sid)

    @sio.on("join")
    async def join(sid: str, room: Any) -> list[str]:
        rooms = await rooms_of(sid)
        if (
            isinstance(room, str)
            and 0 < len(room) <= MAX_ROOM_NAME
            and (room in rooms or len(rooms) < MAX_ROOMS)
        ):
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
        room, nick = message.get("room"), message.get("nick")
        target = room if isinstance(room, str) and room else None
        nick = nick[:MAX_NICK] if isinstance(nick, str) and nick else None
        body = {"from": sid, "nick": nick, "text": message["text"], "room": target}
        await sio.emit("message", body, to=target)
