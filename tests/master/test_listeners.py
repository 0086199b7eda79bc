"""After a Redis outage, held publishes wait for the servers that listened before (pure logic)."""

from __future__ import annotations

import logging

import pytest

from sio_cluster.master.bus.listeners import Listeners

CHANNEL = "socket.io-request#/#"


class Counts:
    """A bus transport that only counts subscribers; raises while Redis is ``down``."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.down = False

    async def publish(self, messages: list[tuple[str, bytes]]) -> None:
        raise AssertionError("Listeners never publishes")

    async def subscribers(self, channels: list[str]) -> dict[str, int]:
        if self.down:
            raise ConnectionError("Redis is away")
        return {c: self.count if c == CHANNEL else 0 for c in channels}


async def test_held_publishes_wait_until_every_server_counted_before_is_back() -> None:
    redis = Counts(3)
    listeners = Listeners(redis, lambda: [CHANNEL], grace=60)
    await listeners.count()
    assert listeners.known == {CHANNEL: 3}
    redis.down = True
    await listeners.count()  # during the outage: the count from before stays
    assert listeners.known == {CHANNEL: 3}
    assert not await listeners.back()  # Redis away
    redis.down = False
    redis.count = 1  # only this master is subscribed again
    assert not await listeners.back()
    redis.count = 2
    assert not await listeners.back()
    redis.count = 3
    assert await listeners.back()


async def test_a_server_that_does_not_come_back_holds_them_only_for_the_grace(
    caplog: pytest.LogCaptureFixture,
) -> None:
    redis = Counts(2)
    listeners = Listeners(redis, lambda: [CHANNEL], grace=0)
    await listeners.count()
    redis.count = 1
    with caplog.at_level(logging.WARNING, logger="sio_cluster.master.bus.listeners"):
        assert await listeners.back()
    assert "servers still not back on {'socket.io-request#/#': 1}" in caplog.text


async def test_nothing_counted_before_holds_nothing() -> None:
    listeners = Listeners(Counts(0), lambda: [], grace=60)
    await listeners.count()
    assert listeners.known == {}
    assert await listeners.back()
