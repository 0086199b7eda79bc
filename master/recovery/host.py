"""The master's side of connection state recovery: workers' frames in, restorations out.

:class:`master.recovery.log.RecoveryLog` holds the rules; this wires it to the routing table and
the workers. A worker reports each recoverable socket (its private id, its python-socketio
session each time it is saved) and each one whose connection ended without a goodbye; a
worker that dies takes its sockets' goodbyes with it, so all of them are kept. A returning
client's Restore is answered in one step of the event loop: the socket is routed to the
asking worker again, then the Restored frame (with the missed packets) is queued on that
worker's pipe, so every packet routed afterwards reaches the worker after the replay.

A client whose offsets are another host's (it was on host A, the balancer sent it to us,
host B) is handed over (:meth:`HostRecovery._handover`). Redis gives every master the
messages of one Redis in the same order, and the handover request takes a place in that
order: A answers with what it logged before that place (leaving out its own broadcasts
that Redis had not yet given back, i.e. ordered after it), and B replays, after A's
packets, what it logged after that place itself: what it read from Redis after its own
request came back, and its own workers' broadcasts published after the request. From the
request to the answer B logs every packet of the namespace, so nothing falls in between.
On a Redis Cluster, where messages published on different nodes can overtake each other,
or with ``--adapter sharded``, no such order exists: there a client recovers on its own
host only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sio_cluster.master.recovery.handover_wire import HandoverRequest
from sio_cluster.master.recovery.log import Outcome, RecoveryLog, Restoration, Room
from sio_cluster.wire.frames import (
    Broadcast,
    Join,
    KeepSession,
    Leave,
    Recoverable,
    RecoveryFrame,
    Restore,
    Restored,
    SessionData,
)

if TYPE_CHECKING:
    from sio_cluster.master.bus.core import HostBus
    from sio_cluster.master.routing.fanout import Fanout

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
        self._bus: HostBus | None = None  # set once, before the master runs
        self._tasks: set[asyncio.Task[None]] = set()

    def hand_over_through(self, bus: HostBus) -> None:
        """Recover clients coming from other hosts over ``bus`` (where its form can)."""
        self._bus = bus
        bus.handovers = self

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
        if not self.log.is_ours(offset):
            task = asyncio.create_task(self._handover(worker, token, namespace, pid, offset))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        result = self.log.restore(namespace, pid, offset)
        if isinstance(result, Outcome):
            self._refuse(worker, token, namespace, result)
        else:
            self._give_back(worker, token, result)

    def _refuse(self, worker: int, token: int, namespace: str, outcome: Outcome) -> None:
        log.info("recovery of a socket in %s refused: %s", namespace, outcome.value)
        self._send(worker, Restored(token, outcome.value, "", [], None, []).encode())

    def _give_back(self, worker: int, token: int, result: Restoration) -> None:
        """Route the socket to ``worker`` again, then send it the replay: in one step."""
        session = result.session
        for room in (None, *session.rooms):
            self._membership(worker, Join(session.namespace, session.sid, room))  # type: ignore[arg-type]
        self._send(worker, _restored_frame(token, result))
        log.info(
            "recovered socket %s in %s with %d missed packets",
            session.sid,
            session.namespace,
            len(result.missed),
        )

    async def _handover(
        self, worker: int, token: int, namespace: str, pid: str, offset: str
    ) -> None:
        """Recover a socket another host kept (see the module docstring)."""
        assert self._bus is not None
        recovery = self.log
        place = _Place()
        recovery.open_capture(namespace)
        try:

            def sent() -> None:
                place.own = recovery.mark()

            def returned() -> None:
                place.redis = recovery.mark()

            try:
                answer = await self._bus.handover(namespace, pid, offset, sent, returned)
            except Exception:  # an outage, a bug: the client connects as a new socket
                log.exception("a recovery handover failed")
                answer = None
            # from here on, one step: what was logged is replayed, what comes is routed
            if answer is None or answer.outcome is None or None in (place.own, place.redis):
                outcome = Outcome.UNKNOWN
            else:
                outcome = answer.outcome
            if outcome is not Outcome.RECOVERED or answer is None or answer.session is None:
                recovery.count(outcome)
                self._refuse(worker, token, namespace, outcome)
                return
            assert place.own is not None and place.redis is not None
            ours = recovery.captured(answer.session, place.own, place.redis)
            if ours is None:
                recovery.count(Outcome.OVERFLOWED)
                self._refuse(worker, token, namespace, Outcome.OVERFLOWED)
                return
        finally:
            recovery.close_capture(namespace)
        recovery.adopt(answer.session)
        recovery.count(Outcome.RECOVERED)
        missed = [list(parts) for parts in answer.missed] + ours
        self._give_back(worker, token, Restoration(answer.session, missed))

    def answer_handover(
        self, namespace: str, request: HandoverRequest
    ) -> tuple[Outcome | None, Restoration | None]:
        """Another host asks for a session of ours (at its request's place in Redis's
        order); None if these are not our offsets."""
        if not self.log.is_ours(request.offset):
            return None, None
        result = self.log.restore(namespace, request.pid, request.offset, here=False)
        if isinstance(result, Outcome):
            return result, None
        log.info("handed socket %s in %s over to another host", result.session.sid, namespace)
        return Outcome.RECOVERED, result

    def echoed(self, body: bytes) -> None:
        self.log.echoed(body)

    def deliver_own(
        self, fanout: Fanout, worker: int, broadcast: Broadcast, body: bytes
    ) -> int | None:
        """A worker's broadcast: the worker delivered nothing itself, so its sockets get the
        packet stamped, in the host's order, with everyone else's; its sequence number."""
        return fanout.deliver(
            broadcast.namespace, broadcast.rooms, broadcast.exclude, broadcast.parts, own=True
        )

    def published(self, seq: int | None, body: bytes | None) -> None:
        """Own broadcast ``seq`` went to Redis as ``body`` (None: not logged, or its echo
        is not tracked)."""
        if seq is not None and body is not None:
            self.log.published(seq, body)


@dataclass
class _Place:
    """Where a handover request stands in this host's log: the first sequence number after
    it was published (``own``), and after it came back from Redis (``redis``)."""

    own: int | None = None
    redis: int | None = None


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
