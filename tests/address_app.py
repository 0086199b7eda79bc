"""An app for the client-address tests (``--app tests.address_app:setup``): ``remote`` answers
the address the worker's request says the client has (``environ["aiohttp.request"].remote``)."""

from __future__ import annotations

import socketio


def setup(sio: socketio.AsyncServer) -> None:
    @sio.on("remote")
    async def remote(sid: str) -> str:
        return str(sio.get_environ(sid)["aiohttp.request"].remote)
