"""When the memory trimmer trims: after growth since its last trim, backing off while trims
give little back (a process holding many connections must not walk its heap every 10 s)."""

from __future__ import annotations

from typing import Any

import pytest

from sio_cluster.common import memtrim


class Process:
    """The process as the trimmer sees it: its size, the clock, what a trim gives back."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.rss = 100 * 2**20
        self.now = 1000.0
        self.frees = 0  # bytes the next trim returns
        self.trims = 0
        monkeypatch.setattr(memtrim, "rss_bytes", lambda: self.rss)
        monkeypatch.setattr(memtrim.time, "monotonic", lambda: self.now)
        monkeypatch.setattr(memtrim.gc, "collect", lambda: 0)

    def trim(self, _: int) -> int:
        self.trims += 1
        self.rss -= self.frees
        return 1


def trimmer(process: Process) -> memtrim.MemoryTrimmer:
    made = memtrim.MemoryTrimmer()
    made._trim = process.trim  # type: ignore[assignment]  # the process's, not glibc's
    return made


def test_a_process_holding_steady_is_not_trimmed_again_and_again(monkeypatch: Any) -> None:
    process = Process(monkeypatch)
    trim = trimmer(process)
    process.rss += 500 * 2**20  # 12,500 connections came, and stay
    waits = []
    last = None
    for _ in range(2000):  # a health ping a second for 2,000 s
        process.now += 1
        before = process.trims
        trim.quiet()
        if process.trims > before:
            if last is not None:
                waits.append(process.now - last)
            last = process.now
    # one trim for the growth; nothing after, as nothing grew since
    assert process.trims == 1 and waits == []


def test_trims_that_give_little_back_back_off_and_a_real_one_resets(monkeypatch: Any) -> None:
    process = Process(monkeypatch)
    trim = trimmer(process)
    times = []
    for _ in range(1500):  # growing 1 MB a second, trims returning nothing
        process.now += 1
        process.rss += 2**20
        before = process.trims
        trim.quiet()
        if process.trims > before:
            times.append(process.now)
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert gaps[:6] == [20, 40, 80, 160, 320, 320]
    process.frees = 50 * 2**20  # the burst passed: the next trim gives a lot back
    process.now += 321
    assert trim.quiet() == 50 * 2**20
    process.rss += 20 * 2**20
    process.now += memtrim.EVERY
    assert trim.quiet() == 50 * 2**20  # back to every 10 s
