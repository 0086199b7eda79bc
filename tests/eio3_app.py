"""The app of ``tests/integration/test_eio3.py``: the probe app, plus what shows a v2
client's connect query arriving as its auth: ``/chat`` keeps each socket's auth in its
session (``whoami`` returns it) and refuses the token ``refuse`` with error data."""

from __future__ import annotations

from typing import Any

import socketio

from tests import probe_app


def setup(sio: socketio.AsyncServer) -> None:
    probe_app.setup(sio)

    @sio.on("connect", namespace="/chat")
    async def connect(sid: str, environ: dict[str, Any], auth: Any) -> None:
        if isinstance(auth, dict) and auth.get("token") == "refuse":
            raise socketio.exceptions.ConnectionRefusedError("refused", {"reason": "bad token"})
        await sio.save_session(sid, {"auth": auth}, namespace="/chat")

    @sio.on("whoami", namespace="/chat")
    async def whoami(sid: str) -> dict[str, Any]:
        session = await sio.get_session(sid, namespace="/chat")
        return {"sid": sid, "auth": session["auth"]}


def setup_fast_pings(sio: socketio.AsyncServer) -> None:
    """:func:`setup` with engine.io pinging every second and waiting a second for the answer."""
    setup(sio)
    sio.eio.ping_interval = 1
    sio.eio.ping_interval_grace_period = 0
    sio.eio.ping_timeout = 1
