"""A bare ``socketio.AsyncServer`` made for ASGI: ``--app tests.apps.server_app:sio``."""

from __future__ import annotations

import socketio

from tests.apps.handlers import register

PING_INTERVAL = 6

sio = socketio.AsyncServer(async_mode="asgi", ping_interval=PING_INTERVAL, namespaces="*")
register(sio)
