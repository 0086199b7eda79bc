"""The host's one Redis subscriber: PSUBSCRIBE the patterns, hand every message on, reconnect.

The connection itself is :mod:`master.pubsub.resp` (hiredis, no client library).

Why reconnect by hand: a pub/sub connection that Redis closes (restart, failover,
``client-output-buffer-limit pubsub``) loses every subscription; the well-known
failure of other adapters is to keep running deaf. Here any connection error
tears the subscriber down, waits with capped exponential backoff, and
subscribes every pattern again on a new connection, logging outage and recovery.

A Redis that stops answering (paused, swapping, a long blocking command) is reported
before any of that: :meth:`RedisSource.silent_for` says how long it has been mute while
PINGed, and ``/readyz`` turns 503 past ``stall_timeout``. What a lost connection cost is
counted (``on_loss(reason, estimate)``). Both follow :mod:`master.pubsub.liveness`, shared
with the shard subscriber.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from sio_cluster.common.redis.topology import Topology
from sio_cluster.master.pubsub.liveness import (
    DEFAULT_BOUNDS,
    Bounds,
    Liveness,
    Loss,
    LossHandler,
)
from sio_cluster.master.pubsub.resp import SubscriberError, SubscriberProtocol, connect

log = logging.getLogger(__name__)

MessageHandler = Callable[[bytes | None, bytes, bytes], None]  # pattern (None: channel), ...

BACKOFF_FIRST = 0.2
BACKOFF_CAP = 5.0


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
        topology: Topology,
        patterns: Sequence[str],
        on_message: MessageHandler,
        on_subscribed: Callable[[], None] = lambda: None,
        client_name: str | None = None,
        bounds: Bounds = DEFAULT_BOUNDS,
        on_loss: LossHandler = lambda reason, estimate: None,
    ) -> None:
        self._topology = topology
        self._patterns = list(patterns)
        self._channels: set[str] = set()
        self._on_message = on_message
        self._on_subscribed = on_subscribed
        self._client_name = client_name
        self._protocol: SubscriberProtocol | None = None
        self._bounds = bounds
        self._on_loss = on_loss
        self._rate = 0.0  # messages/s read lately, while Redis answered
        self.connected = False

    def silent_for(self) -> float:
        """Seconds the subscribed connection has heard nothing from Redis (0 if answering)."""
        protocol = self._protocol
        if protocol is None or not self.connected:
            return 0.0
        return max(0.0, time.monotonic() - protocol.last_read)

    async def add_channels(self, names: Sequence[str]) -> None:
        """SUBSCRIBE more exact channels, now and after every reconnect."""
        new = [n for n in names if n not in self._channels]
        self._channels.update(new)
        if new and self._protocol is not None and self.connected:
            self._protocol.send("SUBSCRIBE", *new)

    async def run(self) -> None:
        """Subscribe and read until cancelled; never returns on Redis errors."""
        cap = self._topology.reconnect_cap
        next_delay = backoff_delays(cap=cap)
        outage_logged = False
        loss: Loss | None = None
        while True:
            protocol: SubscriberProtocol | None = None
            try:
                protocol = await connect(await self._topology.primary_url(), self._on_message)
                await self._subscribe(protocol)
                self._protocol = protocol
                self.connected = True
                if outage_logged:
                    log.warning("Redis is back: subscribed again to %s", self._patterns)
                    log.info("and to %d channels", len(self._channels))
                else:
                    log.info("subscribed to %s", [*self._patterns, *sorted(self._channels)])
                if loss is not None:
                    loss.count(self._on_loss)
                    loss = None
                outage_logged = False
                next_delay = backoff_delays(cap=cap)
                self._on_subscribed()
                liveness = Liveness(protocol, self._bounds, "the subscriber", self._rate)
                reason, stalled = await self._watch(liveness)
                self._rate = liveness.rate
                loss = liveness.lost(stalled)
                raise SubscriberError(str(reason or "connection closed by Redis"))
            except (SubscriberError, OSError, TimeoutError) as exc:
                if loss is not None and not self.connected:  # a reconnect failed
                    loss.failed_reconnects += 1
                if not outage_logged:
                    log.error("Redis subscriber lost (%s); reconnecting", exc)
                    outage_logged = True
                await asyncio.sleep(next_delay())
            except Exception:  # never let the host's only subscriber die silently
                log.exception("unexpected error in the Redis subscriber; reconnecting")
                await asyncio.sleep(next_delay())
            finally:
                self.connected = False
                self._protocol = None
                if protocol is not None and protocol.transport is not None:
                    protocol.transport.abort()

    async def _subscribe(self, protocol: SubscriberProtocol) -> None:
        if self._client_name:
            await asyncio.wait_for(protocol.call("CLIENT", "SETNAME", self._client_name), 10)
        await asyncio.wait_for(
            protocol.call("PSUBSCRIBE", *self._patterns, replies=len(self._patterns)), 10
        )
        if self._channels:
            channels = sorted(self._channels)
            await asyncio.wait_for(protocol.call("SUBSCRIBE", *channels, replies=len(channels)), 10)

    async def _watch(self, liveness: Liveness) -> tuple[Exception | None, bool]:
        """Wait for the connection to end: its reason, and whether it was given up as mute
        (see :mod:`master.pubsub.liveness`)."""
        closed = liveness.protocol.closed
        while True:
            done, _ = await asyncio.wait({closed}, timeout=self._bounds.ping_interval)
            if done:
                return closed.result(), False
            if not liveness.check():
                silent = liveness.silent_for()
                return SubscriberError(f"no answer to PING for {silent:.0f} s"), True
