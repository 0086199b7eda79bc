"""aiohttp: the one internal of it the worker reads.

``WebSocketResponse._writer.transport``: the transport a socket.io 0.9 client's websocket
frames go to, so :mod:`workers.v09.session` writes a tick's frames in one ``transport.write``
(and measures a slow client's buffer there). Checked by :mod:`workers.patches.checks` at
start; aiohttp is bounded in setup.cfg. The listening site of :mod:`workers.header_deadline`
uses aiohttp's public ``BaseSite`` and ``web.Server`` only.
"""

from __future__ import annotations

import asyncio

from aiohttp import web


def ws_transport(response: web.WebSocketResponse) -> asyncio.Transport | None:
    """The transport aiohttp writes ``response``'s frames to; None before it is prepared."""
    writer = response._writer
    return None if writer is None else writer.transport
