"""What handlers read from ``environ``: what python-socketio gives them under its own servers.

engine.io's aiohttp driver writes ``REMOTE_ADDR = '127.0.0.1'`` whoever connects, so a
connect handler could not see its client; here the connection's peer address (and port)
replace it. For an ASGI app, ``environ['asgi.scope']`` is the scope python-socketio's ASGI
mode would have passed (:func:`workers.apps.asgi_bridge.scope_of`), lifespan state included.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import socketio

from sio_cluster.workers.apps.asgi_bridge import address, scope_of
from sio_cluster.workers.patches import engineio as eio_patches


def complete(environ: MutableMapping[str, Any], state: dict[str, Any] | None) -> None:
    """Put the peer's address in ``environ`` and, with ``state`` (an ASGI app's lifespan
    state), the ASGI scope."""
    request = environ.get("aiohttp.request")
    if request is None:
        return
    peer = address(request, "peername")
    if peer is not None:
        environ["REMOTE_ADDR"], port = peer
        environ["REMOTE_PORT"] = str(port)
    if state is not None:
        environ["asgi.scope"] = scope_of(request, state)


def install(sio: socketio.AsyncServer, state: dict[str, Any] | None) -> None:
    """Complete each connection's environ before python-socketio keeps it (engine.io's
    ``connect`` event), for every handler that reads it."""
    eio_patches.observe_eio_event(
        sio.eio, "connect", lambda _eio_sid, environ, *_: complete(environ, state)
    )
