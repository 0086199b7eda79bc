"""A user's ``AsyncServer`` with engine.io's ``cookie`` option, which balancers that stick
sessions by cookie read: ``--app tests.apps.cookie_app:sio``."""

from __future__ import annotations

import socketio

sio = socketio.AsyncServer(async_mode="aiohttp", cookie="io")
