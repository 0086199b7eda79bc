"""The soak's backend: a steady numbered ``ch:*`` stream, to rooms and to everyone.

Each 50 ms tick sends its share of room messages and, every ``BEACON_INTERVAL``, a
beacon to every socket (no ``to``), in ONE pipeline on one connection: Redis sees
them in number order, so does each master's subscriber. Why no retries: a PUBLISH
retried after a connection error may have been published already (Redis dies after
forwarding it, before answering), and the copy would look like a duplicate delivery.
A failed pipeline's messages are marked unknown instead (never expected, still
checked for duplicates and misdelivery).
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable, Sequence

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from bench.soak_ledger import EVERYONE, Ledger

CHANNEL = "ch:soak"  # event "soak"
TICK = 0.05
BEACON_INTERVAL = 0.1
SEND_TIMEOUT = 10.0
FENCE_TIMEOUT = 20.0


class Publisher:
    """Publishes ``rate`` room messages per second (plus beacons) until told to stop."""

    def __init__(
        self,
        redis_url: str,
        ledger: Ledger,
        rooms: Sequence[str],
        rng: random.Random,
        rate: float,
        clock: Callable[[], float],
    ) -> None:
        self.redis = aioredis.Redis.from_url(
            redis_url, retry=Retry(NoBackoff(), 0), socket_timeout=5, socket_connect_timeout=2
        )
        self.stream = ledger.open_stream("p", "ch")
        self.rooms = rooms
        self.rng = rng
        self.rate = rate
        self.clock = clock
        self.failed_batches = 0
        self.unheard = 0  # confirmed while no master was subscribed (PUBLISH answered 0)
        self.fence: int | None = None  # the number of the last beacon, once confirmed

    async def run(self, quiet: asyncio.Event) -> None:
        """Publish until ``quiet``; then one last beacon, sent until confirmed."""
        carry = 0.0
        next_at = self.clock()
        last_beacon = float("-inf")
        while not quiet.is_set():
            now = self.clock()
            carry += self.rate * TICK
            batch = [self.rng.randrange(len(self.rooms)) for _ in range(int(carry))]
            carry -= len(batch)
            if now - last_beacon >= BEACON_INTERVAL:
                batch.append(EVERYONE)
                last_beacon = now
            await self._send(batch)
            next_at = max(next_at + TICK, self.clock() - 1)  # never catch up more than 1 s
            await asyncio.sleep(max(0.0, next_at - self.clock()))
        deadline = self.clock() + FENCE_TIMEOUT
        while self.fence is None and self.clock() < deadline:
            if await self._send([EVERYONE]):
                self.fence = self.stream.assigned
            else:
                await asyncio.sleep(0.2)

    async def _send(self, rooms: list[int]) -> bool:
        numbered = [(self.stream.assign(room, self.clock()), room) for room in rooms]
        pipe = self.redis.pipeline(transaction=False)
        for n, room in numbered:
            name = None if room == EVERYONE else self.rooms[room]
            body: dict[str, object] = {"data": {"s": "p", "n": n, "r": name}}
            if name is not None:
                body["to"] = name
            pipe.publish(CHANNEL, json.dumps(body))
        try:
            heard = await asyncio.wait_for(pipe.execute(), SEND_TIMEOUT)
        except (RedisError, OSError, TimeoutError):
            self.failed_batches += 1
            for n, _ in numbered:
                self.stream.settle(n, False)
            return False
        finally:
            await pipe.reset()
        for (n, _), receivers in zip(numbered, heard, strict=True):
            self.stream.settle(n, True)
            self.unheard += receivers == 0
        return True

    async def close(self) -> None:
        await self.redis.aclose()
