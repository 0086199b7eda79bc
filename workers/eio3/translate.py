"""Engine.IO 3 clients (socket.io-client 1.x and 2.x) on a worker, beside current ones:
the Socket.IO side.

Why: teams moving a legacy deployment cannot upgrade every client at once; Node's socket.io
serves both with ``allowEIO3``, python-engineio refuses ``EIO=3``. With ``--allow-eio3`` the
worker's connection layer (:mod:`workers.conn`) serves Engine.IO 3 itself: its payloads,
binary frames and heartbeat (the client pings). It marks a new v3 session's handshake
environ (:data:`ENVIRON_KEY`, true); python-socketio then
sees an Engine.IO 4 client, and this module translates at the Socket.IO level (the rules
are in :mod:`workers.eio3.codec`):

- the client is put in ``/`` at its handshake, as socket.io 4 does; a namespace CONNECT's
  query string is its auth;
- CONNECT/DISCONNECT/CONNECT_ERROR are sent as 2.x reads them;
- a socket's id is its engine.io id (``/nsp#`` + it outside ``/``), which is what a 2.x
  client believes its ``socket.id`` is.

The rest of the worker (rooms, routing, the master, ``--store``) sees ordinary sockets. A
broadcast is encoded once: text frames are the same for both protocols, and binary ones are
framed once more for v3 clients (see ``workers.delivery``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sio_cluster.workers.eio3 import codec as eio3_codec
from sio_cluster.workers.patches import engineio as eio_patches
from sio_cluster.workers.patches import socketio as sio_patches

ENVIRON_KEY = "sio_cluster.eio3"  # true in a v3 client's handshake environ


class Eio3Clients:
    """The v3 sessions of one python-socketio server, and the hooks that serve them."""

    def __init__(self, sio: Any) -> None:
        self.sio = sio
        self.eio = sio.eio
        self.sessions: set[str] = set()  # the engine.io sids of v3 clients

    def install(self) -> None:
        """Hook into engine.io and python-socketio; call after the worker's other hooks, so
        that these see each packet first."""
        eio = self.eio
        eio_patches.wrap_eio_event(eio, "connect", self._connect)
        eio_patches.wrap_eio_event(eio, "message", self._message)
        eio_patches.observe_eio_event(eio, "disconnect", self._forget)
        sio_patches.translate_sent_packets(self.sio, self._downgrade)

    def sid_for(self, eio_sid: str, namespace: str) -> str | None:
        """The socket id Node's socket.io gives a v3 client in ``namespace``; None for v4."""
        if eio_sid not in self.sessions:
            return None
        return eio_sid if namespace == "/" else f"{namespace}#{eio_sid}"

    async def _connect(
        self, handler: Callable[..., Awaitable[Any]], sid: str, environ: Any, *args: Any
    ) -> Any:
        if not environ.get(ENVIRON_KEY):
            return await handler(sid, environ, *args)
        self.sessions.add(sid)
        accepted = await handler(sid, environ, *args)
        if accepted is not None and accepted is not True:
            self.sessions.discard(sid)
            return accepted
        await self.eio.handlers["message"](sid, "0")  # in "/" at once, as socket.io 4 does
        return accepted

    async def _message(self, handler: Callable[..., Awaitable[Any]], sid: str, data: Any) -> Any:
        if isinstance(data, str) and data.startswith("0") and sid in self.sessions:
            data = eio3_codec.connect_request(data)
        return await handler(sid, data)

    def _forget(self, sid: str, *_: Any) -> None:
        self.sessions.discard(sid)

    def _downgrade(self, eio_sid: str, pkt: Any) -> Any:
        return eio3_codec.downgrade_reply(pkt) if eio_sid in self.sessions else pkt
