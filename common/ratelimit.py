"""Rate-limited log lines: a flood of bad input must not become a flood of logs."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable


class RateLimitedLogger:
    """Logs at most one line per key per ``interval`` seconds, then says how many it held back."""

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._last: dict[Hashable, float] = {}
        self._held: dict[Hashable, int] = {}

    def log(self, level: int, key: Hashable, msg: str, *args: object) -> bool:
        """Log ``msg % args`` unless ``key`` logged less than ``interval`` ago; True if logged."""
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            self._held[key] = self._held.get(key, 0) + 1
            return False
        self._last[key] = now
        held = self._held.pop(key, 0)
        if held:
            msg += " (%d similar lines held back)"
            args = (*args, held)
        self._logger.log(level, msg, *args)
        return True
