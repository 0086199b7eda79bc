"""What a closed 0.9 polling session still had to say, kept for the GET that comes for it.

Why: a polling client learns that the server closed it (``0::``, 0.9's ``booted``) only from
the answer to a GET. When no GET is pending at the close (the client is between two polls),
the session is gone by the time its next GET arrives; answered ``400 client not handshaken``,
a 0.9 client takes it for a lost connection and reconnects, so a kicked client came straight
back. Its last frames are kept here for that GET, for as long as the client would wait before
giving up on the connection itself (the close timeout the handshake announced).

Bounded: at most ``count`` sessions and ``budget`` characters in all, the oldest dropped first;
a session whose last frames are over ``per_session`` characters keeps only its ``0::`` (what
stops the reconnect). Pure: the caller gives the time.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class _Kept:
    deadline: float
    body: str


class LastWords:
    """The last polling answer of closed sessions, by sid, until their deadline."""

    def __init__(self, count: int, budget: int, per_session: int) -> None:
        self.count = count
        self.budget = budget
        self.per_session = per_session
        self._kept: OrderedDict[str, _Kept] = OrderedDict()
        self._size = 0

    def __len__(self) -> int:
        return len(self._kept)

    def keep(self, sid: str, body: str, goodbye: str, now: float, keep_for: float) -> None:
        """Keep ``body`` (the session's last polling answer) for its next GET, ``keep_for``
        seconds from ``now``; ``goodbye`` is what is kept of a body over the per-session
        bound."""
        if len(body) > self.per_session:
            body = goodbye
        self._drop(sid)
        self._kept[sid] = _Kept(now + keep_for, body)
        self._size += len(body)
        self._expire(now)
        while len(self._kept) > self.count or self._size > self.budget:
            self._drop(next(iter(self._kept)))

    def waiting(self, sid: str, now: float) -> bool:
        """Whether a body is kept for ``sid``, not yet taken."""
        kept = self._kept.get(sid)
        return kept is not None and kept.deadline > now

    def take(self, sid: str, now: float) -> str | None:
        """The body kept for ``sid`` (once), or None if there is none, or no longer."""
        self._expire(now)
        kept = self._kept.get(sid)
        if kept is None or kept.deadline <= now:
            return None
        self._drop(sid)
        return kept.body

    def _expire(self, now: float) -> None:
        """Drop the kept bodies past their deadline (in the order kept: ``keep_for`` is the
        same for all but a changed setting, so a few may stay a little late, never long)."""
        while self._kept:
            sid, kept = next(iter(self._kept.items()))
            if kept.deadline > now:
                return
            self._drop(sid)

    def _drop(self, sid: str) -> None:
        kept = self._kept.pop(sid, None)
        if kept is not None:
            self._size -= len(kept.body)
