"""Where a connection goes: its session's worker, or the least-loaded serving worker.

Pure, so every rule is tested on its own. A worker's load is what it said it serves in its
last health report (at most a second old) plus what was handed to it since and not taken by
then:

- what it serves: its open connections or its engine.io sessions, whichever is more (a
  long-polling session between two requests holds no connection);
- what waits: every connection handed to it, counted here, minus the hand-offs it said it had
  taken (adopted as aiohttp connections, or dropped). A burst of new clients is spread at
  once, before any report, and what waits for a worker whose loop lags counts for as long as
  it waits, however long.

Why not the routing table's sockets: in a reconnect storm the table still lists thousands of
dropped sockets while their leaves wait in the pipes, and registers the new ones late, so
the worker whose leaves came last looked full and was starved: 367 clients against 3,300 on
each of its siblings after a 10,000-client storm, when hand-offs also stopped counting after
a fixed 5 s. A worker's own count of what it serves has neither lag.

Ties go round-robin, so equal workers take turns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sio_cluster.wire.handoff import key_of_sid


@dataclass(frozen=True, slots=True)
class Report:
    """What a worker said in its last health report: clients it serves, hand-offs taken."""

    clients: int = 0
    taken: int = 0


NO_REPORT = Report()


class Balancer:
    """Decides the worker (by process key) of each accepted connection."""

    def __init__(self) -> None:
        self._handed: dict[int, int] = {}  # hand-offs decided here, per key, ever
        self._turn = 0

    def target(
        self,
        sid: str | None,
        serving: Sequence[int],
        reports: Mapping[int, Report],
    ) -> int | None:
        """The key to hand the connection to, or None while no worker serves.

        ``serving``: keys of the workers that take connections now (ready, not stopping);
        ``reports``: each worker's last report (none yet: nothing served, nothing taken).
        A sid naming a serving worker goes there; any other request opens, or tries, a
        session and goes to the least loaded.
        """
        if sid is not None:
            key = key_of_sid(sid)
            if key is not None and key in serving:
                return self._hand(key)
        if not serving:
            return None
        loads = {key: self._load(key, reports.get(key, NO_REPORT)) for key in serving}
        lightest = min(loads.values())
        candidates = [key for key in serving if loads[key] == lightest]
        chosen = candidates[self._turn % len(candidates)]
        self._turn += 1
        return self._hand(chosen)

    def forget(self, key: int) -> None:
        """Worker ``key`` is gone: drop what was counted for it."""
        self._handed.pop(key, None)

    def _hand(self, key: int) -> int:
        self._handed[key] = self._handed.get(key, 0) + 1
        return key

    def _load(self, key: int, report: Report) -> int:
        return report.clients + max(0, self._handed.get(key, 0) - report.taken)
