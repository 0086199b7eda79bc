"""The app of ``tests/integration/test_v09_clients.py``: the probe app and ``/chat`` of
``tests/eio3_app.py``, plus what shows a 0.9 client's handshake and messages arriving:

- ``/``'s connect handler keeps the handshake's ``QUERY_STRING`` and auth in the session
  (``handshake`` returns them) and refuses the token ``nobody`` (``/chat`` refuses ``refuse``);
- ``message`` (0.9's ``send`` and ``json.send``) is echoed back as the event ``echo``, and so
  is ``error`` (a name python-socketio does not reserve: an ordinary event from a 0.9 client);
- 0.9 heartbeats every second, a second to answer (engine.io's ping settings).
"""

from __future__ import annotations

from typing import Any

import socketio

from tests import eio3_app


def setup(sio: socketio.AsyncServer) -> None:
    eio3_app.setup(sio)
    sio.eio.ping_interval = 1
    sio.eio.ping_timeout = 1

    @sio.on("connect")
    async def connect(sid: str, environ: dict[str, Any], auth: Any) -> bool:
        if isinstance(auth, dict) and auth.get("token") == "nobody":
            return False
        await sio.save_session(sid, {"query": environ.get("QUERY_STRING"), "auth": auth})
        return True

    @sio.on("handshake")
    async def handshake(sid: str) -> dict[str, Any]:
        session: dict[str, Any] = await sio.get_session(sid)
        return session

    @sio.on("message")
    @sio.on("error")
    async def message(sid: str, data: Any) -> None:
        await sio.emit("echo", data, to=sid)
