"""The connections given frames during one loop tick, written at the start of the next.

Why: a broadcast read from the master's pipe reaches thousands of connections in one tick,
and a busy connection may get several frames in it. Each connection keeps its tick's frames
and is listed here once; ONE scheduled callback then writes every listed connection, each
in one ``transport.write``: a broadcast to 10,000 connections schedules one callback, not
10,000, and a connection's frames of one tick cost one system call.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class TickWrites(Generic[T]):
    """The targets to write at the next tick, and how to write one (``write(target)``)."""

    def __init__(self, write: Callable[[T], None], what: str) -> None:
        self.pending: list[T] = []
        self.loop: asyncio.AbstractEventLoop | None = None  # where the run is scheduled
        self._write = write
        self._what = what  # for the log line of a failed write

    def add(self, target: T, loop: asyncio.AbstractEventLoop) -> None:
        """Write ``target`` at the next tick of ``loop`` (add each target once per tick)."""
        self.pending.append(target)
        if self.loop is not loop:  # none scheduled on this loop yet (or it was another's)
            self.loop = loop
            loop.call_soon(self.run)

    def run(self) -> None:
        self.loop = None
        pending, self.pending = self.pending, []
        for target in pending:
            try:
                self._write(target)
            except Exception:  # one connection's failure must not strand the others' frames
                log.exception("writing to %s failed", self._what)
