"""Where a connection goes: its session's worker, or the least-loaded serving worker.

Pure (the time is passed in), so every rule is tested on its own. A worker's load is the
sockets the routing table holds for it plus the new sessions handed to it in the last
:data:`RECENT_SECONDS`: a burst of new clients is spread at once, before their namespace
connections reach the table. Ties go round-robin, so equal workers take turns.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence

from sio_cluster.wire.handoff import key_of_sid

RECENT_SECONDS = 5.0


class Balancer:
    """Decides the worker (by process key) of each accepted connection."""

    def __init__(self) -> None:
        self._recent: dict[int, deque[float]] = {}
        self._turn = 0

    def target(
        self,
        sid: str | None,
        serving: Sequence[int],
        sockets: Mapping[int, int],
        now: float,
    ) -> int | None:
        """The key to hand the connection to, or None while no worker serves.

        ``serving``: keys of the workers that take connections now (ready, not stopping);
        ``sockets``: the routing table's sockets per key. A sid naming a serving worker goes
        there; any other request opens, or tries, a session and goes to the least loaded.
        """
        if sid is not None:
            key = key_of_sid(sid)
            if key is not None and key in serving:
                return key
        if not serving:
            return None
        loads = {key: sockets.get(key, 0) + self._recent_count(key, now) for key in serving}
        lightest = min(loads.values())
        candidates = [key for key in serving if loads[key] == lightest]
        chosen = candidates[self._turn % len(candidates)]
        self._turn += 1
        self._recent.setdefault(chosen, deque()).append(now)
        return chosen

    def forget(self, key: int) -> None:
        """Worker ``key`` is gone: drop what was counted for it."""
        self._recent.pop(key, None)

    def _recent_count(self, key: int, now: float) -> int:
        times = self._recent.get(key)
        if times is None:
            return 0
        while times and times[0] <= now - RECENT_SECONDS:
            times.popleft()
        return len(times)
