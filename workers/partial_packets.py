"""Binary Socket.IO packets waiting for their attachments, bounded in bytes and in time.

Why: python-socketio keeps a binary packet's header and every frame after it until the
announced number of attachments has arrived, with no bound in bytes or time. Within the
attachment cap (64 per packet) a client could still park 63 frames of almost 1 MB each and
never send the last one: 4 such connections held 243 MiB of one worker for as long as they
stayed open. Here each connection's parked bytes are bounded, so are the worker's, and a
packet whose attachments do not all arrive within the timeout closes its client.

The caller refuses the client named by a returned reason (or by ``expired``); this module
keeps the counts and the timers, and touches no dependency.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(slots=True)
class _Parked:
    """One connection's binary packet still waiting: frames to come, bytes held, its timer."""

    missing: int
    held: int = 0
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)


class PartialPackets:
    """The parked binary packets of one worker's connections, by engine.io sid."""

    def __init__(
        self,
        per_connection: int,
        per_worker: int,
        timeout: float,
        expired: Callable[[str], None],
    ) -> None:
        self.per_connection = per_connection
        self.per_worker = per_worker
        self.timeout = timeout
        self._expired = expired
        self._parked: dict[str, _Parked] = {}
        self.held = 0  # bytes parked by every connection of this worker

    def header(self, eio_sid: str, attachments: int) -> None:
        """A binary packet announcing ``attachments`` frames arrived: start its clock. A new
        header replaces an unfinished packet, as python-socketio does."""
        self.forget(eio_sid)
        timer = asyncio.get_running_loop().call_later(self.timeout, self._expire, eio_sid)
        self._parked[eio_sid] = _Parked(attachments, timer=timer)

    def attachment(self, eio_sid: str, size: int) -> str | None:
        """A binary frame of ``size`` bytes arrived; why the client must be closed, if it must."""
        parked = self._parked.get(eio_sid)
        if parked is None:
            return None  # a frame nobody announced: python-socketio refuses it itself
        parked.missing -= 1
        if parked.missing <= 0:
            self.forget(eio_sid)
            return None
        parked.held += size
        self.held += size
        problem = None
        if parked.held > self.per_connection:
            problem = (
                f"{parked.held} bytes of unfinished binary packets (above {self.per_connection})"
            )
        elif self.held > self.per_worker:
            problem = (
                f"binary frames while this worker held {self.held} bytes of unfinished "
                f"packets (above {self.per_worker})"
            )
        if problem is not None:
            self.forget(eio_sid)  # refused once: the frames already on their way are not
        return problem

    def forget(self, eio_sid: str) -> None:
        """The packet is complete, or its connection is gone: its bytes are no longer held."""
        parked = self._parked.pop(eio_sid, None)
        if parked is not None:
            self.held -= parked.held
            if parked.timer is not None:
                parked.timer.cancel()

    def _expire(self, eio_sid: str) -> None:
        parked = self._parked.get(eio_sid)
        if parked is not None:
            parked.timer = None
            self.forget(eio_sid)
            self._expired(eio_sid)

    def __len__(self) -> int:
        return len(self._parked)
