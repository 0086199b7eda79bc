"""The master's side of connection state recovery: workers' frames in, restorations out.

:class:`master.recovery.RecoveryLog` holds the rules; this wires it to the routing table and
the workers. A worker reports each recoverable socket (its private id, its python-socketio
session each time it is saved) and each one whose connection ended without a goodbye; a
worker that dies takes its sockets' goodbyes with it, so all of them are kept. A returning
client's Restore is answered in one step of the event loop: the socket is routed to the
asking worker again, then the Restored frame (with the missed packets) is queued on that
worker's pipe, so every packet routed afterwards reaches the worker after the replay.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping

from master.recovery import Outcome, RecoveryLog, Restoration, Room
from wire.frames import (
    Join,
    KeepSession,
    Leave,
    Recoverable,
    RecoveryFrame,
    Restore,
    Restored,
    SessionData,
)

log = logging.getLogger(__name__)

Membership = Callable[[int, Join | Leave], None]
SendControl = Callable[[int, bytes], bool]


class HostRecovery:
    """Connection state recovery for one host (see the module docstring)."""

    def __init__(
        self, recovery: RecoveryLog, membership: Membership, send_control: SendControl
    ) -> None:
        self.log = recovery
        self._membership = membership
        self._send = send_control

    def on_frame(self, worker: int, frame: RecoveryFrame) -> None:
        match frame:
            case Recoverable(namespace, sid, pid):
                self.log.connected(namespace, sid, pid)
            case SessionData(namespace, sid, data):
                self.log.saved_data(namespace, sid, data)
            case KeepSession(namespace, sid, rooms):
                self.log.keep(namespace, sid, rooms)
            case Restore(token, namespace, pid, offset):
                self._restore(worker, token, namespace, pid, offset)

    def socket_left(self, namespace: str, sid: str) -> None:
        """A socket's last Leave (room None) arrived: unless kept already, it is gone."""
        self.log.gone(namespace, sid)

    def worker_lost(self, sockets: Mapping[tuple[str, str], Iterable[Room]]) -> None:
        """A worker died (or ended) holding ``sockets`` (their rooms, sid rooms included)."""
        kept = 0
        for (namespace, sid), rooms in sockets.items():
            if self.log.is_live(namespace, sid):
                self.log.keep(namespace, sid, rooms)
                kept += 1
        if kept:
            log.info("kept the sessions of %d sockets for recovery", kept)

    def _restore(self, worker: int, token: int, namespace: str, pid: str, offset: str) -> None:
        result = self.log.restore(namespace, pid, offset)
        if isinstance(result, Outcome):
            log.info("recovery of a socket in %s refused: %s", namespace, result.value)
            self._send(worker, Restored(token, result.value, "", [], None, []).encode())
            return
        session = result.session
        for room in (None, *session.rooms):
            self._membership(worker, Join(namespace, session.sid, room))  # type: ignore[arg-type]
        self._send(worker, _restored_frame(token, result))
        log.info(
            "recovered socket %s in %s with %d missed packets",
            session.sid,
            namespace,
            len(result.missed),
        )


def _restored_frame(token: int, result: Restoration) -> bytes:
    session = result.session
    return Restored(
        token,
        Outcome.RECOVERED.value,
        session.sid,
        list(session.rooms),  # type: ignore[arg-type]  # rooms came from Join frames
        session.data,
        result.missed,
    ).encode()
