"""Give memory back to the operating system once a burst has passed (glibc's ``malloc_trim``).

Why: CPython returns its small-object arenas on its own, but everything larger (frame
bytes, websocket buffers, per-connection state) comes from glibc's malloc, which keeps
what was freed in its heap for reuse. After a burst of 2,000 connections a worker stayed
28-59 MB larger, and a master 6-33 MB after a flood, for good. ``malloc_trim(0)`` returns
the heap's free pages. It runs when the process is quiet (the caller says), is at least
:data:`GROWTH` above the size it had after its last trim, and was not trimmed in the last
:data:`EVERY` seconds: after a burst, not on every tick of a busy process (a trim walks
the heap, and the full garbage collection before it walks every object: at 12,500 idle
connections a worker spent 10% of a connect storm's CPU in them). A trim that gave little
back (a process growing, or holding what it has) doubles the wait before the next, up to
:data:`LONGEST`. Where the C library has no ``malloc_trim`` (not glibc), nothing happens.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import os
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

GROWTH = 8 * 2**20  # trim only this much above the lowest size seen after a trim
EVERY = 10.0  # seconds between two trims at most
LONGEST = 320.0  # seconds between two trims at most, after trims that gave little back
LITTLE = 2**20  # bytes: a trim that returns less backs off


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        trim: Callable[[int], int] = ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim
    except (OSError, AttributeError, TypeError):
        return None
    return trim


def rss_bytes() -> int:
    """This process's resident memory (0 where /proc is not there)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class MemoryTrimmer:
    """Calls ``malloc_trim`` when told the process is quiet and it grew since last time."""

    def __init__(self) -> None:
        self._trim = _malloc_trim()
        self._baseline = rss_bytes()  # the size after the last trim (or at start)
        self._last = 0.0
        self._every = EVERY  # the wait before the next trim
        self.returned = 0  # bytes given back so far

    def quiet(self) -> int:
        """The process is quiet now: trim if it grew; return the bytes given back."""
        now = time.monotonic()
        if self._trim is None or now - self._last < self._every:
            return 0
        before = rss_bytes()
        if before < self._baseline + GROWTH:
            return 0
        gc.collect()  # a burst's connections die in reference cycles, freed by a full pass
        self._trim(0)
        self._last = now
        after = rss_bytes()
        self._baseline = after
        returned = max(0, before - after)
        self._every = EVERY if returned >= LITTLE else min(self._every * 2, LONGEST)
        self.returned += returned
        if returned >= 2**20:
            log.info(
                "returned %.1f MB to the OS after a burst (RSS %.1f -> %.1f MB)",
                returned / 2**20,
                before / 2**20,
                after / 2**20,
            )
        return returned
