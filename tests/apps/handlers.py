"""The Socket.IO side every user app under tests/apps/ shares, registered on the app's own
server as a user registers theirs: decorators and a class-based namespace.

The connect handler refuses a client without the token (the client sees the refusal's
message) and keeps what it read from ``environ``: a header, the client's address, the ASGI
scope's type and client (for ASGI apps), so a test can ask for them.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import socketio

TOKEN = "let-me-in"
EVENTS_FILE = "USER_APP_EVENTS"


def record(what: str) -> None:
    """Append ``what pid`` to the file the test named (the lifespan's start and stop)."""
    path = os.environ.get(EVENTS_FILE)
    if path:
        with Path(path).open("a") as out:
            out.write(f"{what} {os.getpid()} {time.monotonic()}\n")


class Chat(socketio.AsyncNamespace):
    """A class-based namespace: ``/chat``."""

    async def on_hello(self, sid: str, name: str) -> str:
        return f"hello {name} from {os.getpid()}"


def register(sio: socketio.AsyncServer) -> None:
    @sio.event
    async def connect(sid: str, environ: dict[str, Any], auth: Any) -> None:
        if not isinstance(auth, dict) or auth.get("token") != TOKEN:
            raise socketio.exceptions.ConnectionRefusedError("bad token")
        scope = environ.get("asgi.scope")
        await sio.save_session(
            sid,
            {
                "tag": environ.get("HTTP_X_CLIENT_TAG"),
                "addr": environ.get("REMOTE_ADDR"),
                "query": environ.get("QUERY_STRING"),
                "scope": None if scope is None else [scope["type"], scope["client"][0]],
            },
        )

    @sio.event
    async def whoami(sid: str) -> dict[str, Any]:
        return {"pid": os.getpid(), **await sio.get_session(sid)}

    @sio.event
    async def join(sid: str, room: str) -> list[str]:
        await sio.enter_room(sid, room)
        return [r for r in sio.rooms(sid) if r != sid]

    @sio.event
    async def ask(sid: str, target: str) -> Any:
        """``sio.call`` to ``target``, wherever it is connected: its ack."""
        return await sio.call("question", "are you there?", to=target, timeout=5)

    sio.register_namespace(Chat("/chat"))
