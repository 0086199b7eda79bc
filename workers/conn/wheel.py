"""One timer for every connection's heartbeat: a timing wheel of coarse slots.

Why: engine.io gives each socket a ping task (or, in the worker before this layer, a
``call_later`` timer): at 100,000 connections that is 100,000 timer handles in the loop's heap,
each about 200 bytes, and a heap operation per ping. Here a connection is appended to the list
of the slot its next deadline falls in (:data:`RESOLUTION` wide), and one timer handle, for the
earliest slot with anyone in it, serves them all. A connection's deadline is never early and
at most one resolution late. Nothing is removed when a connection ends: the slot's callback
skips it (:meth:`Due.due` returns False), so ending costs nothing here.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
from typing import Protocol

log = logging.getLogger(__name__)

RESOLUTION = 0.1  # seconds per slot


class Due(Protocol):
    """What the wheel calls when a connection's deadline comes."""

    def due(self, now: float) -> bool:
        """Do what was due; True if the connection wants to be called again (it has asked
        for its next deadline with :meth:`Wheel.add` during the call)."""
        ...


class Wheel:
    """Deadlines of many connections, on one loop, with one timer handle."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._slots: dict[int, list[Due]] = {}
        self._order: list[int] = []  # a heap of the slots in ``_slots``
        self._timer: asyncio.TimerHandle | None = None
        self._timer_slot = -1

    def __len__(self) -> int:
        return sum(len(s) for s in self._slots.values())

    def add(self, item: Due, delay: float) -> None:
        """Call ``item.due`` in ``delay`` seconds (rounded up to the wheel's resolution)."""
        slot = math.ceil((self._loop.time() + delay) / RESOLUTION)
        members = self._slots.get(slot)
        if members is None:
            self._slots[slot] = [item]
            heapq.heappush(self._order, slot)
            if self._timer is None or slot < self._timer_slot:
                self._arm(slot)
        else:
            members.append(item)

    def _arm(self, slot: int) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_slot = slot
        self._timer = self._loop.call_at(slot * RESOLUTION, self._fire)

    def _fire(self) -> None:
        self._timer = None
        now = self._loop.time()
        current = math.floor(now / RESOLUTION + 1e-9)
        while self._order and self._order[0] <= current:
            slot = heapq.heappop(self._order)
            for item in self._slots.pop(slot, ()):
                try:
                    item.due(now)
                except Exception:  # one connection's failure must not stop the others' beats
                    log.exception("a heartbeat failed")
        if self._order:
            self._arm(self._order[0])

    def close(self) -> None:
        """Forget every deadline (the worker is stopping)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._slots.clear()
        self._order.clear()
