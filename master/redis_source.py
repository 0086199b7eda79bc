"""The host's one Redis subscriber: PSUBSCRIBE the patterns, hand every message on, reconnect.

Why reconnect by hand: a pub/sub connection that Redis closes (restart, failover,
``client-output-buffer-limit pubsub``) loses every subscription; the well-known
failure of other adapters is to keep running deaf. Here any connection error
tears the subscriber down, waits with capped exponential backoff, and
subscribes every pattern again on a new connection, logging outage and recovery.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger(__name__)

MessageHandler = Callable[[bytes | None, bytes, bytes], None]  # pattern (None: channel), ...

BACKOFF_FIRST = 0.2
BACKOFF_CAP = 5.0


def client_from_url(url: str, max_connections: int | None = None, **kwargs: Any) -> aioredis.Redis:
    """A redis.asyncio client for ``url``; TCP connections get keepalive (unix ones cannot).

    With ``max_connections``, callers beyond it wait for a free connection instead
    of failing, so the number of connections stays fixed.
    """
    if not url.startswith("unix://"):
        kwargs.setdefault("socket_keepalive", True)
    if max_connections is None:
        return aioredis.Redis.from_url(url, **kwargs)
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=None, **kwargs
    )
    return aioredis.Redis(connection_pool=pool)


def backoff_delays(first: float = BACKOFF_FIRST, cap: float = BACKOFF_CAP) -> Callable[[], float]:
    """A generator of waits: ``first``, doubling, capped at ``cap``."""
    delay = first / 2

    def next_delay() -> float:
        nonlocal delay
        delay = min(delay * 2, cap)
        return delay

    return next_delay


class RedisSource:
    """Reads pattern and channel messages forever: ``on_message(pattern, channel, body)``."""

    def __init__(
        self,
        url: str,
        patterns: Sequence[str],
        on_message: MessageHandler,
        on_subscribed: Callable[[], None] = lambda: None,
        client_name: str | None = None,
    ) -> None:
        self._url = url
        self._client_name = client_name
        self._patterns = list(patterns)
        self._channels: set[str] = set()
        self._on_message = on_message
        self._on_subscribed = on_subscribed
        self._pubsub: aioredis.client.PubSub | None = None
        self.connected = False

    async def add_channels(self, names: Sequence[str]) -> None:
        """SUBSCRIBE more exact channels, now and after every reconnect."""
        new = [n for n in names if n not in self._channels]
        self._channels.update(new)
        if new and self._pubsub is not None and self.connected:
            try:
                await self._pubsub.subscribe(*new)
            except (RedisError, OSError) as exc:
                log.warning("could not subscribe to %s now (%s); will on reconnect", new, exc)

    async def run(self) -> None:
        """Subscribe and read until cancelled; never returns on Redis errors."""
        next_delay = backoff_delays()
        outage_logged = False
        while True:
            client = client_from_url(
                self._url, health_check_interval=30, client_name=self._client_name
            )
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.psubscribe(*self._patterns)
                if self._channels:
                    await pubsub.subscribe(*sorted(self._channels))
                self._pubsub = pubsub
                self.connected = True
                if outage_logged:
                    log.warning("Redis is back: subscribed again to %s", self._patterns)
                    log.info("and to %d channels", len(self._channels))
                else:
                    log.info("subscribed to %s", [*self._patterns, *sorted(self._channels)])
                outage_logged = False
                next_delay = backoff_delays()
                self._on_subscribed()
                await self._read(pubsub)
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                self.connected = False
                delay = next_delay()
                if not outage_logged:
                    log.error("Redis subscriber lost (%s); reconnecting", exc)
                    outage_logged = True
                await asyncio.sleep(delay)
            except RedisError as exc:
                self.connected = False
                log.error("Redis subscriber error (%s); reconnecting", exc)
                await asyncio.sleep(next_delay())
            except Exception:  # never let the host's only subscriber die silently
                self.connected = False
                log.exception("unexpected error in the Redis subscriber; reconnecting")
                await asyncio.sleep(next_delay())
            finally:
                self.connected = False
                self._pubsub = None
                await _close_quietly(pubsub, client)

    async def _read(self, pubsub: aioredis.client.PubSub) -> None:
        on_message = self._on_message
        while True:
            message = await pubsub.get_message(timeout=None)
            if message is None:
                continue
            if message["type"] == "pmessage":
                on_message(message["pattern"], message["channel"], message["data"])
            elif message["type"] == "message":
                on_message(None, message["channel"], message["data"])


async def _close_quietly(pubsub: aioredis.client.PubSub, client: aioredis.Redis) -> None:
    try:
        await pubsub.aclose()
        await client.aclose()
    except (RedisError, OSError):
        pass
