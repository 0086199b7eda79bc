"""The two ways the benchmarks drive ``ch:*``-style traffic without one huge burst.

- :func:`fixed_rate`: a bounded number of messages at a fixed rate, so CPU per delivery is
  compared at the same offered load whatever the system or its process count;
- :func:`closed_loop`: publish continuously while at most ``window`` deliveries are in
  flight (published, not yet counted by the load generator), for a bounded time; the
  delivery rate it sustains is a max-rate figure that does not depend on how a system
  swallows one pipelined burst of tens of thousands of messages.

Both publish through :class:`RawPublisher`, pre-encoded RESP on one socket, because on a
2-core machine the publisher shares the CPU with the servers: redis-py's pipeline costs
about 20 µs a message and bounded the "to one sid" burst figures of ``bench/peers.py``.
The load generator is anything with ``stats()`` (``bench.peers.LoadGenerator``); this module
does not import ``bench.peers``, which imports it.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import hiredis

Message = tuple[str, bytes]


class Counter(Protocol):
    """What the drivers need of the load generator: deliveries since the last call."""

    def stats(self) -> dict[str, Any]: ...


def cpu_seconds(pids: set[int]) -> float:
    """CPU time of ``pids`` so far, to the nanosecond: the sum of their threads' schedstat.

    ``bench.measure.cpu_seconds`` counts clock ticks (10 ms), too coarse for a few seconds
    of a few hundred messages per second spread over up to 9 processes. Threads that have
    exited are not counted; the servers' threads (Node's V8 and libuv pools included) live
    as long as their process. Processes gone count as 0.
    """
    total = 0
    for pid in pids:
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                pass
    return total / 1e9


def resp(*parts: bytes) -> bytes:
    """One RESP command."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(out)


class RawPublisher:
    """PUBLISH over one bare connection named ``bench`` (left out of the Redis connection
    counts); every batch is one write, and its replies are read before it returns, so a
    published message has reached Redis's subscribers' sockets when :meth:`publish` returns."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.parser = hiredis.Reader()

    @classmethod
    async def connect(cls, host: str, port: int) -> RawPublisher:
        reader, writer = await asyncio.open_connection(host, port)
        publisher = cls(reader, writer)
        writer.write(resp(b"CLIENT", b"SETNAME", b"bench"))
        await publisher._replies(1)
        return publisher

    async def _replies(self, count: int) -> None:
        got = 0
        while got < count:
            reply = self.parser.gets()
            if reply is False:
                data = await asyncio.wait_for(self.reader.read(1 << 16), 30)
                if not data:
                    raise ConnectionError("Redis closed the publisher's connection")
                self.parser.feed(data)
                continue
            if isinstance(reply, hiredis.ReplyError):
                raise reply
            got += 1

    async def publish(self, messages: Sequence[Message]) -> None:
        if not messages:
            return
        self.writer.write(
            b"".join(resp(b"PUBLISH", channel.encode(), body) for channel, body in messages)
        )
        await self._replies(len(messages))

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


async def fixed_rate(
    publisher: RawPublisher, make: Callable[[int], Message], count: int, rate: float
) -> float:
    """Publish ``count`` messages (``make(i)``) at ``rate`` per second; returns the seconds
    taken. Bounded: however far behind the publisher falls, it sends ``count`` and stops."""
    started = time.perf_counter()
    sent = 0
    while sent < count:
        due = min(int((time.perf_counter() - started) * rate) + 1, count)
        await publisher.publish([make(i) for i in range(sent, due)])
        sent = max(sent, due)
        await asyncio.sleep(0.002)
    return time.perf_counter() - started


@dataclass
class Sustained:
    """What :func:`closed_loop` measured over its measuring period (after the warm-up)."""

    deliveries_per_s: float
    published_per_s: float
    server_cpu_ms_per_1k: float
    cpu_shares: dict[str, float]  # cores each watched group used
    lost: int  # still missing after the final drain (never delivered, or delivered twice: <0)
    stalled: bool  # no delivery for ``stall`` s with deliveries in flight


async def closed_loop(
    publisher: RawPublisher,
    load: Counter,
    make: Callable[[int], Message],
    per_message: int,
    window: int,
    seconds: float,
    watch: Mapping[str, set[int]],
    warmup: float = 0.5,
    stall: float = 2.0,
) -> Sustained:
    """Keep at most ``window`` deliveries in flight for ``warmup`` + ``seconds``.

    In flight = deliveries published (messages x ``per_message``) minus deliveries the load
    generator counted; each turn reads its STATS once and tops the window up in one batch.
    At least one message is in flight, so a fan-out wider than the window still runs. Ends at
    the time limit or on a stall; then drains what is in flight (at most ``stall`` s without
    progress), so the next measurement starts from an idle system.

    ``watch``: groups of pids whose CPU is read over the measuring period; ``"servers"`` is
    required (CPU per 1,000 deliveries), the others (the load generator, Redis, this
    process) show what else shared the cores.
    """
    load.stats()  # reset the counters
    published = received = 0
    sent = 0
    start = time.perf_counter()
    measure_from = start + warmup
    deadline = measure_from + seconds
    last_progress = start
    mark: tuple[float, int, int, dict[str, float]] | None = None
    stalled = False
    while (now := time.perf_counter()) < deadline:
        if mark is None and now >= measure_from:
            mark = (now, received, sent, {k: cpu_seconds(v) for k, v in watch.items()})
        room = window - (published - received)
        batch = max(room // per_message, 0 if published > received else 1)
        if batch:
            await publisher.publish([make(sent + i) for i in range(batch)])
            sent += batch
            published += batch * per_message
        await asyncio.sleep(0.0005)
        got = load.stats()["received"]
        received += got
        if got:
            last_progress = time.perf_counter()
        elif published > received and time.perf_counter() - last_progress > stall:
            stalled = True
            break
    end = time.perf_counter()
    if mark is None:  # stalled during the warm-up: nothing measured
        mark = (end, received, sent, {k: cpu_seconds(v) for k, v in watch.items()})
    t0, received0, sent0, cpu0 = mark
    elapsed = max(end - t0, 1e-9)
    delivered = received - received0
    cpu = {k: cpu_seconds(v) - cpu0[k] for k, v in watch.items()}
    last_progress = time.perf_counter()
    while received < published and time.perf_counter() - last_progress < stall:
        await asyncio.sleep(0.01)
        got = load.stats()["received"]
        received += got
        if got:
            last_progress = time.perf_counter()
    return Sustained(
        deliveries_per_s=delivered / elapsed,
        published_per_s=(sent - sent0) / elapsed,
        server_cpu_ms_per_1k=cpu["servers"] * 1e6 / max(delivered, 1),
        cpu_shares={k: round(v / elapsed, 2) for k, v in cpu.items()},
        lost=published - received,
        stalled=stalled,
    )
