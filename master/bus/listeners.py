"""Counting the servers that listen, so publishes held through an outage wait for them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger(__name__)

RESUBSCRIBE_GRACE = 10.0  # the longest held publishes wait for them after an outage


class BusTransport(Protocol):
    """What the bus needs of Redis: the narrow edge that unit tests replace in memory."""

    async def publish(self, messages: list[tuple[str, bytes]]) -> None: ...

    async def subscribers(self, channels: list[str]) -> dict[str, int]: ...


class Listeners:
    """How many servers listened on each namespace before an outage, and whether they are back.

    Why: publishes held through a Redis outage could be written as soon as this master can
    write again, which is often before the other servers' subscribers are back (our masters
    retry after 0.2, 0.4, 0.8 s ...), and Redis delivers a message only to whoever is
    subscribed at that moment: the chaos soak lost 63-65 handler emits per Redis restart that
    way. So the channels each server of a namespace subscribes to (``channels()``) are counted
    while Redis is healthy, and after an outage the held publishes wait until the counts are
    back, or at most ``grace`` seconds from when Redis answers again (a server that went away
    meanwhile does not hold them longer).
    """

    def __init__(
        self,
        transport: BusTransport,
        channels: Callable[[], list[str]],
        grace: float = RESUBSCRIBE_GRACE,
    ) -> None:
        self._transport = transport
        self._channels = channels
        self._grace = grace
        self.known: dict[str, int] = {}
        self._answering_since: float | None = None

    async def count(self) -> None:
        """Note how many listen now (Redis healthy); a failed count keeps the last one."""
        channels = self._channels()
        try:
            self.known = await self._transport.subscribers(channels) if channels else {}
        except Exception as exc:  # Redis away: what was known before is what counts
            log.debug("could not count the listening servers: %s", exc)

    async def back(self) -> bool:
        """After an outage: True once every server counted before is subscribed again, or
        the grace period since Redis answers again is over; False while Redis is away."""
        loop = asyncio.get_running_loop()
        try:
            now = await self._transport.subscribers(list(self.known)) if self.known else {}
        except Exception:  # still away
            self._answering_since = None
            return False
        missing = {c: n - now.get(c, 0) for c, n in self.known.items() if now.get(c, 0) < n}
        if self._answering_since is None:
            self._answering_since = loop.time()
            if missing:
                log.warning(
                    "Redis answers again: holding the buffered publishes for at most %.0f s,"
                    " until the servers listening before are subscribed again (missing: %s)",
                    self._grace,
                    missing,
                )
        if missing and loop.time() - self._answering_since < self._grace:
            return False
        if missing:
            log.warning("publishing held messages: servers still not back on %s", missing)
        self._answering_since = None
        return True
