"""The tiny app every system of bench/peers.py runs: a ``join`` event.

Ours loads it with ``--app bench.app:setup``.
"""

from __future__ import annotations

import socketio


def setup(sio: socketio.AsyncServer) -> None:
    @sio.on("join")
    async def join(sid: str, room: str) -> bool:
        await sio.enter_room(sid, room)
        return True
