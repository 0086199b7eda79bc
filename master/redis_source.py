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

MessageHandler = Callable[[bytes, bytes, bytes], None]  # pattern, channel, body

BACKOFF_FIRST = 0.2
BACKOFF_CAP = 5.0


def client_from_url(url: str, **kwargs: Any) -> aioredis.Redis:
    """A redis.asyncio client for ``url``; TCP connections get keepalive (unix ones cannot)."""
    if not url.startswith("unix://"):
        kwargs.setdefault("socket_keepalive", True)
    return aioredis.Redis.from_url(url, **kwargs)


def backoff_delays(first: float = BACKOFF_FIRST, cap: float = BACKOFF_CAP) -> Callable[[], float]:
    """A generator of waits: ``first``, doubling, capped at ``cap``."""
    delay = first / 2

    def next_delay() -> float:
        nonlocal delay
        delay = min(delay * 2, cap)
        return delay

    return next_delay


class RedisSource:
    """Reads pattern messages forever and calls ``on_message(pattern, channel, body)``."""

    def __init__(
        self,
        url: str,
        patterns: Sequence[str],
        on_message: MessageHandler,
        on_subscribed: Callable[[], None] = lambda: None,
    ) -> None:
        self._url = url
        self._patterns = list(patterns)
        self._on_message = on_message
        self._on_subscribed = on_subscribed
        self.connected = False

    async def run(self) -> None:
        """Subscribe and read until cancelled; never returns on Redis errors."""
        next_delay = backoff_delays()
        outage_logged = False
        while True:
            client = client_from_url(self._url, health_check_interval=30)
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.psubscribe(*self._patterns)
                self.connected = True
                if outage_logged:
                    log.warning("Redis is back: subscribed again to %s", self._patterns)
                else:
                    log.info("subscribed to %s", self._patterns)
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
                await _close_quietly(pubsub, client)

    async def _read(self, pubsub: aioredis.client.PubSub) -> None:
        on_message = self._on_message
        while True:
            message = await pubsub.get_message(timeout=None)
            if message is not None and message["type"] == "pmessage":
                on_message(message["pattern"], message["channel"], message["data"])


async def _close_quietly(pubsub: aioredis.client.PubSub, client: aioredis.Redis) -> None:
    try:
        await pubsub.aclose()
        await client.aclose()
    except (RedisError, OSError):
        pass
