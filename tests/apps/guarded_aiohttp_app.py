"""An aiohttp app whose middleware guards every request, Socket.IO's handshakes included:
``--app tests.apps.guarded_aiohttp_app:app``. Without ``?key=open-sesame`` a request is
answered 403; with it, the connect handler sees what the middleware stored on the request."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import socketio
from aiohttp import web

KEY = "open-sesame"


@web.middleware
async def guard(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    if request.query.get("key") != KEY:
        raise web.HTTPForbidden()
    request["user"] = "alice"
    return await handler(request)


sio = socketio.AsyncServer(async_mode="aiohttp")
app = web.Application(middlewares=[guard])
sio.attach(app)


@sio.event
async def connect(sid: str, environ: dict[str, Any], auth: Any) -> None:
    await sio.save_session(sid, {"user": environ["aiohttp.request"]["user"]})


@sio.event
async def whoami(sid: str) -> Any:
    return (await sio.get_session(sid))["user"]
