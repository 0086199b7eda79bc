"""How the master reaches Redis: one server, or the primary that Sentinel names.

Why: the subscriber and the command connections must both talk to the current
primary. With one Redis that is the URL itself. With Sentinel the primary is
asked of the sentinels on every (re)connect of the subscriber, and the command
connections come from redis-py's Sentinel pool, which asks again on every new
connection and drops connections to a primary that was demoted; so once Sentinel
promotes a replica, the next reconnect lands on it and the outbound buffer
(:mod:`master.outbox`) is flushed there.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from master.redis_commands import command_client
from master.redis_url import SENTINEL_SCHEMES, SentinelUrl, parse_sentinel_url
from wire.compat import blocking_sentinel_pool_class

log = logging.getLogger(__name__)

SENTINEL_TIMEOUT = 0.5  # per sentinel asked; a dead one must not hold the reconnect up


class PrimaryNotFound(ConnectionError):
    """No sentinel could name a healthy primary right now (retried with backoff)."""


class Topology(Protocol):
    """Where the master's Redis connections go."""

    describe: str
    reconnect_cap: float  # the subscriber's longest wait between reconnect attempts

    async def primary_url(self) -> str:
        """A plain URL of the server the subscriber must use now."""
        ...

    def commands(self, max_connections: int, client_name: str) -> aioredis.Redis:
        """A client on at most ``max_connections`` connections to the primary."""
        ...


class OneRedis:
    """A single Redis server (``redis://``, ``rediss://``, ``unix://``)."""

    reconnect_cap = 5.0

    def __init__(self, url: str) -> None:
        self.url = url
        self.describe = re.sub(r"//([^:@/]*):[^@/]*@", r"//\1:***@", url)  # no password in logs

    async def primary_url(self) -> str:
        return self.url

    def commands(self, max_connections: int, client_name: str) -> aioredis.Redis:
        return command_client(self.url, max_connections, client_name=client_name)


class SentinelPrimary:
    """The primary of a Sentinel service, followed through failovers."""

    reconnect_cap = 1.0  # a promotion must be followed within seconds

    def __init__(self, url: SentinelUrl) -> None:
        self.url = url
        hosts = ",".join(f"{h}:{p}" for h, p in url.sentinels)
        self.describe = f"Sentinel service {url.service!r} at {hosts}"
        self._options = _primary_options(url)
        self._sentinel = Sentinel(
            list(url.sentinels),
            sentinel_kwargs={
                "socket_timeout": SENTINEL_TIMEOUT,
                "socket_connect_timeout": SENTINEL_TIMEOUT,
                "retry": Retry(NoBackoff(), 0),  # a dead sentinel: on to the next one at once
            },
            **self._options,
        )
        self._last: tuple[str, int] | None = None

    async def primary_url(self) -> str:
        try:
            host, port = await self._sentinel.discover_master(self.url.service)
        except (RedisError, OSError) as exc:
            problem = f"no sentinel names a primary for {self.url.service!r}: {exc}"
            raise PrimaryNotFound(problem) from None
        if self._last != (host, port):
            if self._last is not None:
                log.warning("Sentinel names a new primary: %s:%d", host, port)
            self._last = (host, port)
        return self.url.primary_url(host, port)

    def commands(self, max_connections: int, client_name: str) -> aioredis.Redis:
        return self._sentinel.master_for(
            self.url.service,
            connection_pool_class=blocking_sentinel_pool_class(),
            max_connections=max_connections,
            timeout=None,
            client_name=client_name,
        )


def _primary_options(url: SentinelUrl) -> dict[str, Any]:
    """redis-py connection options for the primary (credentials, db, TLS query options)."""
    probe = aioredis.ConnectionPool.from_url(url.primary_url("localhost", 6379))
    options = dict(probe.connection_kwargs)
    for name in ("host", "port", "path"):
        options.pop(name, None)
    if url.scheme == "rediss":
        options["ssl"] = True
    options.setdefault("socket_keepalive", True)
    return options


def topology_for(url: str) -> Topology:
    """The topology a ``--redis-url`` names (already checked by the configuration)."""
    if url.startswith(tuple(f"{s}://" for s in SENTINEL_SCHEMES)):
        return SentinelPrimary(parse_sentinel_url(url))
    return OneRedis(url)
