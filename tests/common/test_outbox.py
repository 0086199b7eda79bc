"""The outbox in front of every Redis writer: bounds, drop policies, outages, recovery."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from sio_cluster.common.outbox import Outbox
from tests.cluster import until


class Writer:
    """Records written batches; fails while ``down`` (as a Redis outage would)."""

    def __init__(self) -> None:
        self.batches: list[list[bytes]] = []
        self.down = False
        self.failures = 0

    async def __call__(self, batch: list[bytes]) -> None:
        await asyncio.sleep(0)
        if self.down:
            self.failures += 1
            raise ConnectionError("Redis is away")
        self.batches.append(batch)

    def written(self) -> list[bytes]:
        return [item for batch in self.batches for item in batch]


@asynccontextmanager
async def running(outbox: Outbox[bytes]) -> AsyncIterator[None]:
    task = asyncio.create_task(outbox.run())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def make(writer: Callable[[list[bytes]], Awaitable[None]], **options: object) -> Outbox[bytes]:
    return Outbox("test", writer, size=len, retry_delay=0.01, **options)  # type: ignore[arg-type]


async def test_items_of_one_tick_are_written_in_batches_in_order() -> None:
    writer = Writer()
    outbox = make(writer, limit=1000, batch=3)
    async with running(outbox):
        for i in range(7):
            outbox.put(b"%d" % i)
        await until(lambda: len(writer.written()) == 7)
    assert [len(b) for b in writer.batches] == [3, 3, 1]
    assert writer.written() == [b"%d" % i for i in range(7)]


async def test_over_the_bound_the_oldest_are_dropped_and_counted() -> None:
    dropped: list[int] = []
    outbox = make(Writer(), limit=10, overflow="oldest", on_drop=dropped.append)
    for item in (b"aaaa", b"bbbb", b"cccc"):
        assert outbox.put(item)
    assert len(outbox) == 2 and dropped == [1]


async def test_over_the_bound_the_newest_are_refused_when_asked() -> None:
    dropped: list[int] = []
    outbox = make(Writer(), limit=8, overflow="newest", on_drop=dropped.append)
    assert outbox.put(b"aaaa") and outbox.put(b"bbbb")
    assert not outbox.put(b"cccc")
    assert len(outbox) == 2 and dropped == [1]


async def test_an_outage_keeps_the_batch_within_the_bound_and_flushes_on_recovery() -> None:
    writer = Writer()
    dropped: list[int] = []
    outbox = make(writer, limit=12, batch=2, keep_on_failure=True, on_drop=dropped.append)
    writer.down = True
    async with running(outbox):
        outbox.put(b"aaaa")
        outbox.put(b"bbbb")
        await until(lambda: writer.failures >= 1)
        outbox.put(b"cccc")
        outbox.put(b"dddd")  # over 12 bytes once the failed batch is back: oldest go
        await until(lambda: writer.failures >= 3)
        assert len(outbox) == 3 and sum(dropped) == 1
        writer.down = False
        await until(lambda: len(outbox) == 0)
    assert writer.written() == [b"bbbb", b"cccc", b"dddd"]


async def test_best_effort_writes_drop_a_failed_batch_and_tell_the_owner() -> None:
    writer = Writer()
    dropped: list[int] = []
    failures: list[Exception] = []
    outbox = make(
        writer,
        limit=100,
        keep_on_failure=False,
        on_drop=dropped.append,
        on_failure=failures.append,
    )
    writer.down = True
    async with running(outbox):
        outbox.put(b"lost")
        await until(lambda: len(failures) == 1)
        writer.down = False
        outbox.put(b"kept")
        await until(lambda: writer.written() == [b"kept"])
    assert dropped == [1] and isinstance(failures[0], ConnectionError)


async def test_after_an_outage_held_items_wait_until_ready_then_go_once_in_order() -> None:
    writer = Writer()
    asked: list[bool] = []
    others_back = False

    async def ready() -> bool:
        asked.append(others_back)
        return others_back

    outbox = make(writer, limit=1000, ready=ready)
    async with running(outbox):
        outbox.put(b"before")
        await until(lambda: writer.written() == [b"before"])
        assert asked == []  # no outage: nothing is asked
        writer.down = True
        outbox.put(b"held-1")
        outbox.put(b"held-2")
        await until(lambda: writer.failures >= 1)
        writer.down = False  # Redis answers again, the others are not back yet
        await until(lambda: len(asked) >= 3)
        assert writer.written() == [b"before"] and outbox.in_outage
        others_back = True
        await until(lambda: writer.written() == [b"before", b"held-1", b"held-2"])
        assert not outbox.in_outage
        asked.clear()
        outbox.put(b"after")
        await until(lambda: writer.written()[-1] == b"after")
        assert asked == []  # healthy again: not asked
