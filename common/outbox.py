"""A bounded queue between the synchronous hot path and one task that writes to Redis.

Why one abstraction: the master writes to Redis from three places (publishes to
other hosts, the rejected-messages list, the legacy socket store) and each must
never block the hot path, never grow without bound while Redis is slow or away,
count what it drops, and log an outage once rather than per item. Each user
chooses two policies:

- ``overflow``: over the bound, drop the ``"oldest"`` items (stale broadcasts
  are worth less than new ones) or refuse the ``"newest"`` (keep the first
  evidence, as for rejected messages);
- ``keep_on_failure``: after a failed write, put the batch back and retry it
  (publishes held through an outage; the bound still holds) or drop it
  (best-effort writes). A user that repairs state its own way (the socket store
  resyncs) gets ``on_failure``. A user whose held items are worth writing only
  once others are back (publishes: Redis delivers to whoever is subscribed at
  that moment) gives ``ready``, asked before each write after a failure.

Failures are logged at most once per 10 s per outbox (with the count held back),
and the recovery once.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, Literal, TypeVar

from sio_cluster.common.ratelimit import RateLimitedLogger

log = logging.getLogger(__name__)

T = TypeVar("T")
Overflow = Literal["oldest", "newest"]


class Outbox(Generic[T]):
    """Items queued by :meth:`put` are written in batches by :meth:`run`."""

    def __init__(
        self,
        name: str,
        write: Callable[[list[T]], Awaitable[None]],
        *,
        limit: int,
        size: Callable[[T], int] = lambda _: 1,
        overflow: Overflow = "oldest",
        keep_on_failure: bool = True,
        on_drop: Callable[[int], None] = lambda _: None,
        on_failure: Callable[[Exception], None] = lambda _: None,
        batch: int = 500,
        retry_delay: float = 0.5,
        ready: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        self.name = name
        self._write = write
        self._limit = limit
        self._size = size
        self._overflow = overflow
        self._keep = keep_on_failure
        self._on_drop = on_drop
        self._on_failure = on_failure
        self._batch = batch
        self._retry_delay = retry_delay
        self._ready = ready
        self._items: deque[T] = deque()
        self._bytes = 0
        self._wakeup = asyncio.Event()
        self._outage = False
        self._failures = RateLimitedLogger(log)

    def __len__(self) -> int:
        return len(self._items)

    @property
    def in_outage(self) -> bool:
        """True from a failed write until a write succeeds again."""
        return self._outage

    def put(self, item: T) -> bool:
        """Queue ``item``; never blocks. False if it was refused (``overflow="newest"``)."""
        size = self._size(item)
        if self._bytes + size > self._limit and self._items:
            if self._overflow == "newest":
                self._on_drop(1)
                return False
            dropped = 0
            while self._bytes + size > self._limit and self._items:
                self._bytes -= self._size(self._items.popleft())
                dropped += 1
            self._on_drop(dropped)
        self._items.append(item)
        self._bytes += size
        self._wakeup.set()
        return True

    def clear(self) -> None:
        """Forget every queued item (the owner will write the state another way)."""
        self._items.clear()
        self._bytes = 0

    def _take(self) -> list[T]:
        count = min(self._batch, len(self._items))
        batch = [self._items.popleft() for _ in range(count)]
        self._bytes -= sum(self._size(item) for item in batch)
        return batch

    def _put_back(self, batch: list[T]) -> None:
        """A failed batch goes back in front, then the bound holds again (the oldest go)."""
        self._items.extendleft(reversed(batch))
        self._bytes += sum(self._size(item) for item in batch)
        dropped = 0
        while self._bytes > self._limit and len(self._items) > 1:
            self._bytes -= self._size(self._items.popleft())
            dropped += 1
        if dropped:
            self._on_drop(dropped)

    async def run(self) -> None:
        """Write queued items in batches until cancelled; hold or drop them while Redis fails.

        A cancellation can be lost on Python 3.11 when it meets a ``wait_for`` that completes
        (redis-py's sends go through one: CPython gh-86296); the loop also looks whether its
        task is being cancelled, so a master's stop never waits on it forever.
        """
        task = asyncio.current_task()
        while task is None or not task.cancelling():
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._items and (task is None or not task.cancelling()):
                if self._outage and self._ready is not None and not await self._ready():
                    await asyncio.sleep(self._retry_delay)
                    continue
                batch = self._take()
                try:
                    await self._write(batch)
                except Exception as exc:  # the writer must never die: count, log, go on
                    self._outage = True
                    self._failures.log(
                        logging.ERROR,
                        "write",
                        "%s: writing to Redis failed (%s: %s)",
                        self.name,
                        type(exc).__name__,
                        exc,
                    )
                    if self._keep:
                        self._put_back(batch)
                    else:
                        self._on_drop(len(batch))
                    self._on_failure(exc)
                    await asyncio.sleep(self._retry_delay)
                    continue
                if self._outage:
                    self._outage = False
                    log.warning("%s: writing to Redis again (%d queued)", self.name, len(self))
