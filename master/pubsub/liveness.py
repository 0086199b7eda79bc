"""Whether a subscriber connection is still heard, and what losing one cost: both subscribers'.

Why one module: the classic subscriber (:mod:`master.pubsub.source`, one connection) and the
shard subscriber (:mod:`master.pubsub.sharded_source`, one connection per primary) must treat
a mute Redis alike. A Redis that stops answering (paused, swapping, a long blocking command)
keeps the connection open and delivers nothing, so a quiet connection is PINGed every
``min(health_interval, stall_timeout / 3)`` (:class:`Bounds`: ``--redis-health-check-interval``,
15 s by default, and ``--redis-stall-timeout``): a live Redis always answers well within
``stall_timeout``. A silence past it is a stall (``/readyz`` answers 503, logged once, and its
end too); a silence of ``2 * health_interval`` (or the stall timeout, if longer) ends the
connection, to be remade: the primary may have moved, and a mute connection keeps us deaf.

What a lost connection cost is counted by :class:`Loss` (``on_loss(reason, estimate)``):
pub/sub keeps nothing, so the messages published while the connection was gone are lost, and
their number can only be estimated, from the rate read before the loss times how long the
host was deaf. The reason is inferred: ``subscriber_cut`` when Redis closed the connection and
answered again at the first reconnect (it kept running: most likely its
``client-output-buffer-limit pubsub``), ``subscriber_stall`` when Redis stopped answering and
the connection was remade, ``subscriber_lost`` otherwise (a restart, the network).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from sio_cluster.master.pubsub.resp import SubscriberProtocol

log = logging.getLogger(__name__)

LossHandler = Callable[[str, int], None]  # reason, estimated messages lost

HEALTH_INTERVAL = 15.0  # a quiet subscriber is PINGed; no answer in 2x this: reconnect
STALL_TIMEOUT = 10.0  # silent this long while PINGed: stalled (reported, not yet remade)


@dataclass(frozen=True)
class Bounds:
    """How long a subscriber connection may be silent: ``stall_timeout`` before it is
    reported stalled, twice ``health_interval`` (or the stall timeout, if longer) before it
    is given up; the same for every connection of a master."""

    stall_timeout: float = STALL_TIMEOUT
    health_interval: float = HEALTH_INTERVAL

    @property
    def ping_interval(self) -> float:
        """How often a connection is checked (and PINGed if quiet)."""
        return min(self.health_interval, self.stall_timeout / 3)

    @property
    def give_up(self) -> float:
        return max(2 * self.health_interval, self.stall_timeout)


DEFAULT_BOUNDS = Bounds()


class Liveness:
    """The watch over one subscriber connection; ``name`` says which in the log lines."""

    def __init__(
        self, protocol: SubscriberProtocol, bounds: Bounds, name: str, rate: float = 0.0
    ) -> None:
        self.protocol = protocol
        self.name = name
        self.rate = rate  # messages/s read lately, while Redis answered
        self._stall_timeout = bounds.stall_timeout
        self._interval = bounds.ping_interval
        self._give_up = bounds.give_up
        self._stall_logged = False
        self._pinged = float("-inf")
        self._messages, self._sampled = protocol.messages, time.monotonic()

    def silent_for(self) -> float:
        """Seconds the connection has heard nothing from Redis."""
        return max(0.0, time.monotonic() - self.protocol.last_read)

    def check(self) -> bool:
        """Called at least every :attr:`Bounds.ping_interval` (maybe more often): sample the rate,
        log a stall's start and end, PING if quiet (once an interval); False once the
        connection is to be given up."""
        now = time.monotonic()
        protocol = self.protocol
        silent = now - protocol.last_read
        if silent < self._interval and now > self._sampled:  # the rate, while Redis answers
            sample = (protocol.messages - self._messages) / (now - self._sampled)
            self.rate = sample if not self.rate else (self.rate + sample) / 2
        self._messages, self._sampled = protocol.messages, now
        if silent > self._give_up:
            return False
        if silent > self._stall_timeout and not self._stall_logged:
            log.error(
                "Redis has not answered %s for %.0f s (stalled?); "
                "/readyz says not ready until it does",
                self.name,
                silent,
            )
            self._stall_logged = True
        elif silent <= self._stall_timeout and self._stall_logged:
            log.warning("Redis answers %s again", self.name)
            self._stall_logged = False
        if silent >= self._interval and now - self._pinged >= self._interval:
            protocol.send("PING")
            self._pinged = now
        return True

    def lost(self, stalled: bool) -> Loss:
        """The connection ended (``stalled``: given up as mute): its loss, counted later."""
        return Loss(
            self.name, stalled, self.protocol.last_read if stalled else time.monotonic(), self.rate
        )


class Loss:
    """A subscriber connection that ended: since when the host was deaf, and how."""

    def __init__(self, name: str, stalled: bool, since: float, rate: float) -> None:
        self.name = name
        self.stalled = stalled
        self.since = since
        self.rate = rate
        self.failed_reconnects = 0

    def count(self, on_loss: LossHandler) -> None:
        """Count and log what the connection lost cost, now that the host hears again."""
        if self.stalled:
            reason = "subscriber_stall"
            cause = f"Redis stopped answering and {self.name} was remade"
        elif not self.failed_reconnects:
            reason = "subscriber_cut"
            cause = (
                f"Redis closed {self.name} and answered again at once, so it kept running: "
                "most likely its client-output-buffer-limit pubsub (a message too large, or "
                "a backlog this master did not read in time)"
            )
        else:
            reason = "subscriber_lost"
            cause = "Redis was unreachable (a restart, a failover or the network)"
        deaf = time.monotonic() - self.since
        estimate = round(self.rate * deaf) + (1 if reason == "subscriber_cut" else 0)
        on_loss(reason, estimate)
        log.error(
            "%s; deaf for %.1f s: about %d messages lost (counted as %s, an estimate)",
            cause,
            deaf,
            estimate,
            reason,
        )
