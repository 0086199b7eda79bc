"""The host's one Redis subscriber: PSUBSCRIBE the patterns, hand every message on, reconnect.

The connection itself is :mod:`master.pubsub.resp` (hiredis, no client library).

Why reconnect by hand: a pub/sub connection that Redis closes (restart, failover,
``client-output-buffer-limit pubsub``) loses every subscription; the well-known
failure of other adapters is to keep running deaf. Here any connection error
tears the subscriber down, waits with capped exponential backoff, and
subscribes every pattern again on a new connection, logging outage and recovery.

What a lost connection cost is counted (``on_loss(reason, estimate)``): pub/sub keeps
nothing, so the messages published while this host was not subscribed are gone, and
their number can only be estimated, from the rate read before the loss times how long
the host was deaf. The reason is inferred: ``subscriber_cut`` when Redis closed the
connection and answered again at the first reconnect (it kept running: most likely its
``client-output-buffer-limit pubsub``), ``subscriber_stall`` when Redis stopped answering
and the connection was remade, ``subscriber_lost`` otherwise (a restart, the network).

A Redis that stops answering (paused, swapping, a long blocking command) is reported
before any of that: :meth:`RedisSource.silent_for` says how long it has been mute while
PINGed, and ``/readyz`` turns 503 past ``stall_timeout``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from sio_cluster.common.redis.topology import Topology
from sio_cluster.master.pubsub.resp import SubscriberError, SubscriberProtocol, connect

log = logging.getLogger(__name__)

MessageHandler = Callable[[bytes | None, bytes, bytes], None]  # pattern (None: channel), ...
LossHandler = Callable[[str, int], None]  # reason, estimated messages lost

BACKOFF_FIRST = 0.2
BACKOFF_CAP = 5.0
HEALTH_INTERVAL = 15.0  # a quiet subscriber is PINGed; no answer in 2x this: reconnect
STALL_TIMEOUT = 10.0  # silent this long while PINGed: stalled (reported, not yet remade)


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
        stall_timeout: float = STALL_TIMEOUT,
        on_loss: LossHandler = lambda reason, estimate: None,
    ) -> None:
        self._topology = topology
        self._patterns = list(patterns)
        self._channels: set[str] = set()
        self._on_message = on_message
        self._on_subscribed = on_subscribed
        self._client_name = client_name
        self._protocol: SubscriberProtocol | None = None
        self._stall_timeout = stall_timeout
        self._on_loss = on_loss
        self._rate = 0.0  # messages/s read lately, while Redis answered
        self.connected = False

    def silent_for(self) -> float:
        """Seconds the subscribed connection has heard nothing from Redis (0 if answering)."""
        protocol = self._protocol
        if protocol is None or not self.connected:
            return 0.0
        return max(0.0, time.monotonic() - protocol.last_read)

    def stalled(self) -> bool:
        """True while Redis has not answered the subscriber for ``stall_timeout``."""
        return self.silent_for() > self._stall_timeout

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
        loss: _Loss | None = None
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
                    self._count(loss)
                    loss = None
                outage_logged = False
                next_delay = backoff_delays(cap=cap)
                self._on_subscribed()
                reason, stalled = await self._watch(protocol)
                loss = _Loss(stalled, protocol.last_read if stalled else time.monotonic())
                loss.rate = self._rate
                raise SubscriberError(str(reason or "connection closed by Redis"))
            except (SubscriberError, OSError, TimeoutError) as exc:
                if loss is not None:
                    loss.attempts += 1
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

    def _count(self, loss: _Loss) -> None:
        """Count and log what the connection lost cost, now that the host hears again."""
        if loss.stalled:
            reason = "subscriber_stall"
            cause = "Redis stopped answering and the subscriber was remade"
        elif loss.attempts <= 1:
            reason = "subscriber_cut"
            cause = (
                "Redis closed the subscriber and answered again at once, so it kept running: "
                "most likely its client-output-buffer-limit pubsub (a message too large, or "
                "a backlog this master did not read in time)"
            )
        else:
            reason = "subscriber_lost"
            cause = "Redis was unreachable (a restart, a failover or the network)"
        deaf = time.monotonic() - loss.since
        estimate = round(loss.rate * deaf) + (1 if reason == "subscriber_cut" else 0)
        self._on_loss(reason, estimate)
        log.error(
            "%s; deaf for %.1f s: about %d messages lost (counted as %s, an estimate)",
            cause,
            deaf,
            estimate,
            reason,
        )

    async def _watch(self, protocol: SubscriberProtocol) -> tuple[Exception | None, bool]:
        """Wait for the connection to end (its reason, and whether Redis stalled).

        A quiet connection is PINGed often enough that a live Redis answers well within
        ``stall_timeout``; a silence past it is logged once (and ``/readyz`` says so), a
        silence of ``2 * HEALTH_INTERVAL`` (or the stall timeout, if longer) ends the
        connection: the primary may have moved, and a mute connection would keep us deaf.
        """
        interval = min(HEALTH_INTERVAL, self._stall_timeout / 3)
        give_up = max(HEALTH_INTERVAL * 2, self._stall_timeout)
        stall_logged = False
        messages, sampled = protocol.messages, time.monotonic()
        while True:
            done, _ = await asyncio.wait({protocol.closed}, timeout=interval)
            if done:
                return protocol.closed.result(), False
            now = time.monotonic()
            silent = now - protocol.last_read
            if silent < interval and now > sampled:  # the rate, while Redis answers
                sample = (protocol.messages - messages) / (now - sampled)
                self._rate = sample if not self._rate else (self._rate + sample) / 2
            messages, sampled = protocol.messages, now
            if silent > give_up:
                return SubscriberError(f"no answer to PING for {silent:.0f} s"), True
            if silent > self._stall_timeout and not stall_logged:
                log.error(
                    "Redis has not answered the subscriber for %.0f s (stalled?); "
                    "/readyz says not ready until it does",
                    silent,
                )
                stall_logged = True
            elif silent <= self._stall_timeout and stall_logged:
                log.warning("Redis answers the subscriber again")
                stall_logged = False
            if silent >= interval:
                protocol.send("PING")


class _Loss:
    """A subscriber connection that ended: since when the host was deaf, and how."""

    def __init__(self, stalled: bool, since: float) -> None:
        self.stalled = stalled
        self.since = since
        self.rate = 0.0
        self.attempts = 0  # failed reconnects before the next subscription
