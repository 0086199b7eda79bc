"""A socket's handshake in the shape Node's socket.io gives it (``socket.handshake``).

Why: ``fetch_sockets`` answers go to Node servers too (the redis-adapter's
REMOTE_FETCH), whose applications read ``handshake.headers``, ``address``,
``query`` and friends. python-socketio keeps the WSGI-style environ of each
connection; this module translates it, purely.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl


def headers_of(environ: Mapping[str, Any]) -> dict[str, str]:
    """Request headers with lower-case, dash-separated names, as Node's ``IncomingMessage``."""
    headers = {
        key[5:].replace("_", "-").lower(): value
        for key, value in environ.items()
        if key.startswith("HTTP_") and isinstance(value, str)
    }
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if environ.get(key):
            headers[key.replace("_", "-").lower()] = str(environ[key])
    return headers


def peer_address(environ: Mapping[str, Any]) -> str:
    """The client's address: engine.io's aiohttp driver writes 127.0.0.1 as REMOTE_ADDR
    whoever connects, so the aiohttp request's own ``remote`` comes first."""
    request = environ.get("aiohttp.request")
    remote = getattr(request, "remote", None)
    return str(remote or environ.get("REMOTE_ADDR", ""))


def handshake_of(environ: Mapping[str, Any], issued_ms: int) -> dict[str, Any]:
    """Node's handshake fields for a connection made at ``issued_ms`` (ms since the epoch).

    ``auth`` is empty: python-socketio hands the auth payload to the connect handler
    and keeps no copy of it.
    """
    headers = headers_of(environ)
    query_string = str(environ.get("QUERY_STRING", ""))
    path = str(environ.get("PATH_INFO", "/"))
    return {
        "headers": headers,
        "time": time.strftime(
            "%a %b %d %Y %H:%M:%S GMT+0000 (Coordinated Universal Time)",
            time.gmtime(issued_ms / 1000),
        ),
        "address": peer_address(environ),
        "xdomain": "origin" in headers,
        "secure": environ.get("wsgi.url_scheme") == "https",
        "issued": issued_ms,
        "url": str(environ.get("RAW_URI") or (f"{path}?{query_string}" if query_string else path)),
        "query": dict(parse_qsl(query_string, keep_blank_values=True)),
        "auth": {},
    }
