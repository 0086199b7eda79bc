"""Connection state recovery: the host's sessions of disconnected sockets and its packet log.

Why in the master: a client must get its socket back when its worker was SIGKILLed, and
through an L4 balancer it may come back on any worker of the host, so the state cannot
live in a worker. The master already sees, in order, every packet the host's sockets
receive (``ch:*`` messages, workers' broadcasts, other hosts' broadcasts all go through
:class:`master.routing.fanout.Fanout`), so it is the natural sequencer: it stamps each packet
with the next offset of this host, keeps it for the recovery window, and answers a
returning client with the packets after its last offset that its rooms would have got.
That costs no Redis round trip per message, unlike a Redis stream log
(@socket.io/redis-streams-adapter's design), and no Redis memory.

Semantics follow Node's socket.io (4.8) with its in-memory ``SessionAwareAdapter``:

- a socket's session (sid, pid, rooms, python-socketio session) is kept when its
  connection ends without a goodbye (transport closed or failed, ping timeout, its worker
  stopped or died), never when the client or the server disconnected it on purpose;
- a session is restored once (as the streams adapter does; Node's in-memory one lets a
  pid be used again), within the window, and only if every packet after the client's
  offset is still in the log;
- the replay is every logged packet after the offset whose rooms meet the session's
  rooms (its own sid room included) and whose excluded rooms do not, in log order.

Bounded: sessions expire after the window; the log keeps a packet for the window and at
most ``cap_bytes`` of packets (oldest first out). A packet is logged only if some
socket of this host receives it now, or some kept session might want it.

Pure and I/O-free, with an injectable clock: every rule is tested without processes.
"""

from __future__ import annotations

import itertools
import secrets
import string
import time
from collections import Counter, deque
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum

from sio_cluster.wire.offsets import stamped, takes_offset

Room = Hashable
Parts = Sequence[str | bytes]
TAG_ALPHABET = string.ascii_lowercase + string.digits
# A replay travels to the worker in one pipe frame (at most 64 MiB); a socket that missed
# more than this cannot be recovered, and is told so (overflowed).
MAX_REPLAY_BYTES = 32 * 1024 * 1024
# What a logged packet costs in memory beyond its bytes (the entry, its list and tuples, the
# string objects): tracemalloc measured 435 bytes per entry for 57-byte events like
# bench/recovery_cost.py's, so the byte cap bounds the log's real memory, not just its payload.
ENTRY_OVERHEAD = 400


def _same(outcome: Outcome) -> Outcome:
    return outcome


class Outcome(Enum):
    """How a recovery attempt ended (the label of ``sio_master_recoveries``)."""

    RECOVERED = "recovered"
    UNKNOWN = "unknown"  # no session for this pid here (never, already used, or not recoverable)
    EXPIRED = "expired"  # the session, or packets it missed, outlived the window
    OVERFLOWED = "overflowed"  # packets it missed were pushed out by the byte cap


@dataclass
class Session:
    """What a disconnected socket gets back."""

    namespace: str
    sid: str
    pid: str
    rooms: tuple[Room, ...]  # its own sid room included, as Node keeps them
    data: bytes | None  # python-socketio's session, msgpack, as last saved
    disconnected_at: float


@dataclass(slots=True)
class _Entry:
    seq: int
    namespace: str
    rooms: tuple[Room, ...] | None
    exclude: tuple[Room, ...]
    parts: list[str | bytes]
    size: int  # what it holds in memory, about: its bytes and ENTRY_OVERHEAD
    logged_at: float
    own: bool  # a broadcast of this host's workers (else it came from Redis)


@dataclass
class Restoration:
    """A successful recovery: the session, and the packets it missed, in order."""

    session: Session
    missed: list[list[str | bytes]] = field(default_factory=list)


@dataclass
class _Live:
    pid: str
    data: bytes | None = None


class RecoveryLog:
    """One host's recoverable sockets, sessions and packet log (see the module docstring)."""

    def __init__(
        self,
        window: float,
        cap_bytes: int,
        tag: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window = window
        self.cap_bytes = cap_bytes
        self.tag = tag or "".join(secrets.choice(TAG_ALPHABET) for _ in range(6))
        self._clock = clock
        self._live: dict[tuple[str, str], _Live] = {}
        self._sessions: dict[str, Session] = {}  # by pid, oldest disconnect first
        self._session_rooms: dict[str, Counter[Room]] = {}  # namespace -> rooms of sessions
        self._log: deque[_Entry] = deque()
        self._next_seq = 1
        self._bytes = 0
        self._evicted_for_bytes = 0  # the highest seq the byte cap pushed out
        self.last_seq = 0  # the sequence number of the packet stamped last
        self._capturing: Counter[str] = Counter()  # namespace -> handovers under way
        # this host's own broadcasts published to Redis and not yet read back from it, in
        # publishing order: (published body, seq)
        self._unechoed: deque[tuple[bytes, int]] = deque()
        self._unechoed_seqs: set[int] = set()
        self.outcomes: Counter[Outcome] = Counter()

    # ---- sockets ----------------------------------------------------------------

    def connected(self, namespace: str, sid: str, pid: str) -> None:
        """A socket of this host that may recover later, known by its private id."""
        self._live[(namespace, sid)] = _Live(pid)

    def saved_data(self, namespace: str, sid: str, data: bytes) -> None:
        """The socket's python-socketio session, as its worker last saved it."""
        live = self._live.get((namespace, sid))
        if live is not None:
            live.data = data

    def gone(self, namespace: str, sid: str) -> None:
        """The socket was disconnected on purpose: nothing to keep."""
        self._live.pop((namespace, sid), None)

    def keep(self, namespace: str, sid: str, rooms: Iterable[Room]) -> None:
        """The socket's connection ended without a goodbye: keep its session."""
        live = self._live.pop((namespace, sid), None)
        if live is None:
            return
        self._expire()
        session = Session(namespace, sid, live.pid, tuple(rooms), live.data, self._clock())
        self._sessions.pop(live.pid, None)
        self._sessions[live.pid] = session
        self._session_rooms.setdefault(namespace, Counter()).update(session.rooms)

    def is_live(self, namespace: str, sid: str) -> bool:
        return (namespace, sid) in self._live

    # ---- packets ----------------------------------------------------------------

    def wanted(self, namespace: str, rooms: Sequence[Room] | None) -> bool:
        """True if a kept session may be a recipient (when no socket here is one now)."""
        if self._capturing[namespace]:
            return True  # a handover from another host needs every packet of the namespace
        counts = self._session_rooms.get(namespace)
        if not counts:
            return False
        return rooms is None or any(room in counts for room in rooms)

    def log_packet(
        self,
        namespace: str,
        rooms: Sequence[Room] | None,
        exclude: Sequence[Room],
        parts: Parts | Callable[[], Parts],
        routed: bool,
        own: bool,
    ) -> tuple[Parts | Callable[[], Parts], int | None]:
        """What the fanout sends: the packet stamped with its offset and its sequence
        number, if a socket here receives it (``routed``) or a kept session may; else the
        packet as it came, and None. Only events take an offset (acks, ... go unstamped)."""
        if not (routed or self.wanted(namespace, rooms)):
            return parts, None
        parts = parts() if callable(parts) else parts  # encoded once, stamped or not
        text = parts[0]
        if not (isinstance(text, str) and takes_offset(text)):
            return parts, None
        return self.stamp(namespace, rooms, exclude, parts, own), self.last_seq

    def stamp(
        self,
        namespace: str,
        rooms: Sequence[Room] | None,
        exclude: Sequence[Room],
        parts: Parts,
        own: bool = False,
    ) -> list[str | bytes]:
        """Give the packet this host's next offset, log it, and return it stamped
        (:attr:`last_seq` is its sequence number). ``own``: a broadcast of this host's
        workers, which reaches Redis only after this.

        ``parts`` must take an offset (:func:`wire.offsets.takes_offset`).
        """
        seq = self._next_seq
        self._next_seq += 1
        self.last_seq = seq
        out = stamped(parts, f"{self.tag}.{seq:x}")
        size = sum(len(p) for p in out) + ENTRY_OVERHEAD
        now = self._clock()
        self._log.append(
            _Entry(
                seq,
                namespace,
                None if rooms is None else tuple(rooms),
                tuple(exclude),
                out,
                size,
                now,
                own,
            )
        )
        self._bytes += size
        while self._bytes > self.cap_bytes and self._log:
            evicted = self._log.popleft()
            self._bytes -= evicted.size
            self._evicted_for_bytes = evicted.seq
        self._expire(now)
        return out

    # ---- recovery ---------------------------------------------------------------

    def restore(
        self, namespace: str, pid: str, offset: str, here: bool = True
    ) -> Restoration | Outcome:
        """Take the session of ``pid`` with what it missed after ``offset``, or say why not.

        A session is used once, whether or not its packets can still be replayed.
        ``here`` False: the client came back on another host, which asked at a point of
        Redis's order of messages; what that host read from Redis after that point it
        replays itself, so this host's own broadcasts not yet read back from Redis are left
        out, and the outcome is counted there, not here.
        """
        count = self.count if here else _same
        self._expire()
        session = self._sessions.get(pid)
        if session is None or session.namespace != namespace:
            return count(Outcome.UNKNOWN)
        self._forget(session)
        seq = self._seq_of(offset)
        if seq is None:
            return count(Outcome.UNKNOWN)
        first = self._log[0].seq if self._log else self._next_seq
        if seq + 1 < first:
            lost_to_cap = self._evicted_for_bytes >= seq + 1
            return count(Outcome.OVERFLOWED if lost_to_cap else Outcome.EXPIRED)
        skip = set() if here else self._unechoed_seqs
        missed = self._replay(
            namespace, session.rooms, (e for e in self._since(seq) if e.seq not in skip)
        )
        if missed is None:
            return count(Outcome.OVERFLOWED)
        if here:
            self._live[(namespace, session.sid)] = _Live(session.pid, session.data)
            self.count(Outcome.RECOVERED)
        return Restoration(session, missed)

    # ---- a client that comes back on this host with another host's offset ---------

    def mark(self) -> int:
        """The sequence number the next logged packet will have: a position in the log."""
        return self._next_seq

    def open_capture(self, namespace: str) -> None:
        """A handover in ``namespace`` starts: log every packet of it (see :meth:`wanted`)."""
        self._capturing[namespace] += 1

    def close_capture(self, namespace: str) -> None:
        self._capturing[namespace] -= 1
        if self._capturing[namespace] <= 0:
            del self._capturing[namespace]

    def captured(
        self, session: Session, own_from: int, redis_from: int
    ) -> list[list[str | bytes]] | None:
        """What this host logged for ``session`` that the other host could not have: its own
        workers' broadcasts from ``own_from`` on (published after the request) and what it
        read from Redis from ``redis_from`` on (after the request came back); None if more
        than one replay can carry."""
        since = self._since(min(own_from, redis_from) - 1)
        entries = (e for e in since if e.seq >= redis_from or (e.own and e.seq >= own_from))
        return self._replay(session.namespace, session.rooms, entries)

    def adopt(self, session: Session) -> None:
        """``session`` came from another host and lives here now."""
        self._live[(session.namespace, session.sid)] = _Live(session.pid, session.data)

    def count(self, outcome: Outcome) -> Outcome:
        """Count one recovery attempt's outcome (here: where the client came back)."""
        self.outcomes[outcome] += 1
        return outcome

    # ---- this host's broadcasts, as Redis orders them ------------------------------

    def published(self, seq: int, body: bytes) -> None:
        """Own broadcast ``seq`` was queued for Redis as ``body``."""
        self._unechoed.append((body, seq))
        self._unechoed_seqs.add(seq)

    def echoed(self, body: bytes) -> None:
        """Redis gave back one of our own broadcasts. They come back in publishing order;
        one never published (dropped in an outage) is passed over."""
        while self._unechoed:
            sent, seq = self._unechoed.popleft()
            self._unechoed_seqs.discard(seq)
            if sent == body:
                return

    def _since(self, seq: int) -> Iterable[_Entry]:
        """The logged entries after ``seq`` (which must not be before the log's start - 1)."""
        first = self._log[0].seq if self._log else self._next_seq
        return itertools.islice(self._log, max(seq + 1 - first, 0), None)

    def _replay(
        self, namespace: str, rooms: Iterable[Room], entries: Iterable[_Entry]
    ) -> list[list[str | bytes]] | None:
        """The packets of ``entries`` a socket in ``rooms`` receives, in order; None over
        MAX_REPLAY_BYTES."""
        held = frozenset(rooms)
        missed = []
        size = 0
        for entry in entries:
            if (
                entry.namespace == namespace
                and (entry.rooms is None or not held.isdisjoint(entry.rooms))
                and held.isdisjoint(entry.exclude)
            ):
                missed.append(entry.parts)
                size += entry.size
                if size > MAX_REPLAY_BYTES:
                    return None
        return missed

    def is_ours(self, offset: str) -> bool:
        """True if ``offset`` has this host's tag (it may still be unknown here)."""
        return offset.partition(".")[0] == self.tag

    def _seq_of(self, offset: str) -> int | None:
        """The sequence number of one of this host's offsets; None for any other string."""
        tag, _, number = offset.partition(".")
        if tag != self.tag or not number or len(number) > 16:
            return None
        try:
            seq = int(number, 16)
        except ValueError:
            return None
        return seq if 0 <= seq < self._next_seq else None

    def _forget(self, session: Session) -> None:
        del self._sessions[session.pid]
        counts = self._session_rooms[session.namespace]
        counts.subtract(session.rooms)
        for room in session.rooms:
            if counts[room] <= 0:
                del counts[room]
        if not counts:
            del self._session_rooms[session.namespace]

    def _expire(self, now: float | None = None) -> None:
        """Drop sessions and logged packets older than the window."""
        now = self._clock() if now is None else now
        horizon = now - self.window
        while self._sessions:
            oldest = next(iter(self._sessions.values()))
            if oldest.disconnected_at >= horizon:
                break
            self._forget(oldest)
        log = self._log
        while log and log[0].logged_at < horizon:
            self._bytes -= log.popleft().size
        first = log[0].seq if log else self._next_seq
        while self._unechoed and self._unechoed[0][1] < first:
            self._unechoed_seqs.discard(self._unechoed.popleft()[1])  # never came back

    # ---- state, for the metrics -----------------------------------------------

    @property
    def log_bytes(self) -> int:
        self._expire()
        return self._bytes

    @property
    def log_packets(self) -> int:
        self._expire()
        return len(self._log)

    @property
    def sessions(self) -> int:
        self._expire()
        return len(self._sessions)
