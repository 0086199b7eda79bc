"""What handlers read from ``environ``: what python-socketio gives them under its own servers.

engine.io's aiohttp driver writes ``REMOTE_ADDR = '127.0.0.1'`` whoever connects, so a
connect handler could not see its client; here the connection's peer address (and port)
replace it. For an ASGI app, ``environ['asgi.scope']`` is the scope python-socketio's ASGI
mode would have passed (:func:`workers.apps.asgi_bridge.scope_of`), lifespan state included:
a mapping built when a handler first reads it, since most never do and a built scope costs
about 5 KB per connection (its headers, re-keyed), kept as long as the connection.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

import socketio
from aiohttp import web

from sio_cluster.workers.apps.asgi_bridge import address, scope_of
from sio_cluster.workers.conn.environ import HandshakeEnviron
from sio_cluster.workers.patches import engineio as eio_patches


class LazyScope(Mapping[str, Any]):
    """The ASGI scope of ``request``, built on first read."""

    __slots__ = ("request", "state", "built")

    def __init__(self, request: web.BaseRequest, state: dict[str, Any]) -> None:
        self.request = request
        self.state = state
        self.built: Mapping[str, Any] | None = None

    def scope(self) -> Mapping[str, Any]:
        if self.built is None:
            self.built = scope_of(self.request, self.state)
        return self.built

    def __getitem__(self, key: str) -> Any:
        return self.scope()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.scope())

    def __len__(self) -> int:
        return len(self.scope())


def complete(environ: MutableMapping[str, Any], state: dict[str, Any] | None) -> None:
    """Put the peer's address in ``environ`` and, with ``state`` (an ASGI app's lifespan
    state), the ASGI scope."""
    if isinstance(environ, HandshakeEnviron):
        return  # the workers' own layer built it complete (workers.conn.environ)
    request = environ.get("aiohttp.request")
    if request is None:
        return
    peer = address(request, "peername")
    remote = request.remote  # behind a trusted balancer, the client it names (client_address)
    if remote is not None:
        environ["REMOTE_ADDR"] = remote
        if peer is not None and peer[0] == remote:
            environ["REMOTE_PORT"] = str(peer[1])
    if state is not None:
        environ["asgi.scope"] = LazyScope(request, state)


def install(sio: socketio.AsyncServer, state: dict[str, Any] | None) -> None:
    """Complete each connection's environ before python-socketio keeps it (engine.io's
    ``connect`` event), for every handler that reads it."""
    eio_patches.observe_eio_event(
        sio.eio, "connect", lambda _eio_sid, environ, *_: complete(environ, state)
    )
