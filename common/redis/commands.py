"""The master's command connections (publishes, requests, rejected list, store writes).

Why a fixed pool that waits: the connection count per host must not grow with load
or with the number of workers, so callers beyond ``max_connections`` wait for a free
connection instead of opening another (see README, "Redis connections").
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis


def command_client(url: str, max_connections: int, **kwargs: Any) -> aioredis.Redis:
    """A redis.asyncio client on at most ``max_connections`` connections to ``url``.

    TCP connections get keepalive; unix sockets cannot have it.
    """
    if not url.startswith("unix://"):
        kwargs.setdefault("socket_keepalive", True)
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=None, **kwargs
    )
    return aioredis.Redis.from_pool(pool)  # owns the pool: aclose() disconnects it
