"""Do the master and its workers leak memory or file descriptors under the soak?

Every few seconds the resident memory (``/proc/<pid>/statm``) and the open
descriptors (``/proc/<pid>/fd``) of master A and of each of its worker processes
are sampled, per pid (a respawned worker is a new series). The growth rate is the
least-squares slope over the judged part of the run, in units per hour: the
second half of the run, never a process's own first ``WARMUP`` minute.

The limits, and why:
- A slope is judged only over at least ``MIN_JUDGED`` (240 s) of samples: over a
  shorter span the normal back-and-forth of a few MB reads as a steep slope, so the
  short test run reports slopes without judging them; a default 10-minute run
  judges 5 minutes.
- ``RSS_LIMIT``, 32 MB per hour. The soak's traffic is stationary, so a process
  without a leak levels off. A leak that matters leaks per message or per
  connection: 100 bytes per routed message at 200 messages/s is 72 MB/h, 5 KB per
  connection at the soak's ~2 connections/s is 36 MB/h, both flagged. Measured
  without a leak (2026-11-22, this 2-core machine): a worker still settles for
  about 10 minutes, its slope over 5-minute windows from minute 2 on fell from 14
  to 5 MB/h, and it was 4.9 MB/h over the second half of a 30-minute run (the
  master: 0.1-0.5 MB/h).
- Descriptors follow connections, and the faults move connections in bursts (a
  killed worker's clients reconnect to its sibling): a worker's count went from 18
  to 79 and back, and its slope over 5-minute windows ranged from -47 to +176 per
  hour without any leak. So the slope is only flagged over ``FD_LIMIT``, 300/h, and
  the precise check is another: once every client is gone, each process must be
  back to its idle count (measured before any client connected, per role) within
  ``IDLE_SLACK`` (3: the master's pool may hold 2 more Redis connections than when
  idle). A socket leaked per connection would leave thousands open.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.measure import rss_bytes

MIN_JUDGED = 240.0
WARMUP = 60.0  # a process's own first minute is never judged (a respawned worker's start)
RSS_LIMIT = 32.0  # MB per hour
FD_LIMIT = 300.0  # descriptors per hour
IDLE_SLACK = 3
MB = 1024 * 1024
KEPT = 300  # samples of one process kept in the report (evenly spread)


@dataclass
class Growth:
    """One process's verdict: first and last values, slopes, within the limits (None:
    too short to judge)."""

    role: str
    pid: int
    seconds: float
    judged_seconds: float
    rss_mb: tuple[float, float]
    rss_mb_per_hour: float
    fds: tuple[int, int]
    fds_per_hour: float
    ok: bool | None
    samples: list[tuple[float, float, int]]  # (s, RSS MB, fds), at most ``KEPT`` of them


@dataclass
class Series:
    """The samples of one process: ``(seconds since start, RSS bytes, open fds)``."""

    role: str
    pid: int
    samples: list[tuple[float, int, int]] = field(default_factory=list)


def open_fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def slope_per_hour(points: list[tuple[float, float]]) -> float:
    """The least-squares slope of ``(seconds, value)`` points, in value per hour."""
    if len(points) < 2:
        return 0.0
    mean_t = sum(t for t, _ in points) / len(points)
    mean_v = sum(v for _, v in points) / len(points)
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    if spread == 0:
        return 0.0
    return sum((t - mean_t) * (v - mean_v) for t, v in points) / spread * 3600


class Sampler:
    """Samples the processes ``roles()`` names (pid -> role) every ``every`` seconds."""

    def __init__(self, roles: Callable[[], dict[int, str]], clock: Callable[[], float]) -> None:
        self.roles = roles
        self.clock = clock
        self.started = clock()
        self.series: dict[int, Series] = {}

    def descriptors(self) -> dict[int, tuple[str, int]]:
        """Each process's role and open descriptors, now."""
        found = {}
        for pid, role in self.roles().items():
            fds = open_fds(pid)
            if fds is not None:
                found[pid] = (role, fds)
        return found

    def sample(self) -> None:
        now = self.clock() - self.started
        for pid, role in self.roles().items():
            fds = open_fds(pid)
            rss = rss_bytes([pid])
            if fds is None or rss == 0:
                continue  # gone meanwhile
            self.series.setdefault(pid, Series(role, pid)).samples.append((now, rss, fds))

    async def run(self, every: float, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.sample()
            try:
                await asyncio.wait_for(stop.wait(), every)
            except TimeoutError:
                pass

    def verdict(self, judged_from: float) -> list[Growth]:
        """One row per process, its slopes over the samples taken from ``judged_from`` s."""
        rows: list[Growth] = []
        for s in self.series.values():
            if not s.samples:
                continue
            start = max(judged_from, s.samples[0][0] + WARMUP)
            judged = [x for x in s.samples if x[0] >= start]
            span = judged[-1][0] - judged[0][0] if judged else 0.0
            rss = slope_per_hour([(t, r / MB) for t, r, _ in judged])
            fds = slope_per_hour([(t, float(f)) for t, _, f in judged])
            ok = None if span < MIN_JUDGED else (rss <= RSS_LIMIT and fds <= FD_LIMIT)
            first, last = s.samples[0], s.samples[-1]
            step = max(1, len(s.samples) // KEPT)
            kept = [(round(t, 1), round(r / MB, 2), f) for t, r, f in s.samples[::step]]
            rows.append(
                Growth(
                    s.role,
                    s.pid,
                    round(last[0] - first[0], 1),
                    round(span, 1),
                    (round(first[1] / MB, 1), round(last[1] / MB, 1)),
                    round(rss, 2),
                    (first[2], last[2]),
                    round(fds, 1),
                    ok,
                    kept,
                )
            )
        return rows
