"""A python-socketio server served in this process as a worker serves it, for the benchmarks
and tests that look inside the server (its memory, its counters) rather than at a cluster.

``ws="own"`` (a worker's default): the dependency check, aiohttp with the worker's
connection layer in front (:mod:`workers.conn.layer`); ``ws="aiohttp"``: python-engineio on
aiohttp as published (``--ws aiohttp``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal

import socketio
from aiohttp import web

from sio_cluster.master.embedded_redis import free_port
from sio_cluster.workers.conn.layer import Layer, engineio_path
from sio_cluster.workers.header_deadline import DeadlineSite, Fronting, HeaderDeadline, aiohttp_only
from sio_cluster.workers.patches import checks

HEADER_TIMEOUT = 10.0


@asynccontextmanager
async def serving(
    sio: socketio.AsyncServer, ws: Literal["own", "aiohttp"] = "own"
) -> AsyncIterator[int]:
    """Serve ``sio`` at a free loopback port; yields the port."""
    checks.check(sio)
    app = web.Application()
    sio.attach(app)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    fronting: Fronting = aiohttp_only
    if ws == "own":
        path = engineio_path(app, sio.eio)
        assert path is not None  # sio.attach routed it
        fronting = Layer(sio.eio, path, HEADER_TIMEOUT, lambda: None, app=app).fronting
    port = free_port()
    deadline = HeaderDeadline(HEADER_TIMEOUT, lambda: None)
    await DeadlineSite(runner, "127.0.0.1", port, deadline, fronting).start()
    try:
        yield port
    finally:
        await sio.shutdown()
        await runner.cleanup()
