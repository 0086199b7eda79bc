"""The soak's bookkeeping: what was sent, who was in which room when, what arrived.

Pure: no I/O and no clock of its own (callers pass the times), so the verdict is
tested on scripted histories (``tests/integration/test_soak.py``).

Why sequence numbers and "horizons" instead of timestamps: a message can sit in
Redis, a pipe or a socket for an unknown time, so "published before the join" says
nothing about whether the master routed it before or after the join. What is
certain comes from order. Every source of messages is a :class:`Stream` (the
``ch:*`` publisher, or one emitting client) whose messages reach one socket in
the order they were sent (one subscriber connection per master, ordered pipes and
websockets). So when a socket has received message ``h`` of a stream (its horizon),
its master has routed every earlier message of that stream. Hence, for one socket
and one room:

- a join or leave **requested** when the horizon was ``h``: every message ``<= h``
  was routed before the change;
- a join or leave **acknowledged** when the stream had assigned ``a`` numbers:
  every message ``> a`` was sent after the change was applied (read-your-writes),
  so it is routed with it.

A socket is *settled in* a room for the messages in ``(join ack, next leave
request]`` (they must arrive exactly once), *settled out* for ``(leave ack, next
join request]`` (they must not arrive), and messages in between were sent while
its membership was changing: not judged. A session's last interval ends at its
final horizon. Messages to everyone (beacons) are expected from the connect on.

A loss is attributed to a fault window when the message was not yet delivered to
that socket when the fault began (its number is above the socket's horizon then)
and was sent before the window closed; otherwise it is a loss outside any fault, a
broken invariant.
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

EVERYONE = 255  # the room index of a message to every socket (a beacon)
PENDING, OK, UNKNOWN = 0, 1, 2  # a message's send: under way, confirmed, failed or unknown
OUTSIDE = "outside"  # the cause of what no fault window explains
STALL_AFTER = 10.0  # a connected socket still missing a beacon this long after it is stalled
EARLY_SLACK = 64  # received numbers this far below a stream's first one are kept in a dict


class Stream:
    """One ordered source of numbered messages; message ``n`` is index ``n - 1``."""

    def __init__(self, name: str, kind: str, opened: int) -> None:
        self.name = name
        self.kind = kind  # "ch" (the Redis publisher) or "emit" (a handler's emits)
        self.opened = opened  # ledger tick at creation
        self.closed = False
        self.rooms = bytearray()
        self.status = bytearray()
        self.times = array("d")
        self.by_room: dict[int, array[int]] = {}

    @property
    def assigned(self) -> int:
        return len(self.rooms)

    def assign(self, room: int, now: float) -> int:
        """Number the next message (to ``room``), sent at ``now``; it is PENDING."""
        self.rooms.append(room)
        self.status.append(PENDING)
        self.times.append(now)
        n = len(self.rooms)
        self.by_room.setdefault(room, array("q")).append(n)
        return n

    def settle(self, n: int, ok: bool) -> None:
        self.status[n - 1] = OK if ok else UNKNOWN

    def room_of(self, n: int) -> int:
        return self.rooms[n - 1]

    def time_of(self, n: int) -> float:
        return self.times[n - 1]

    def confirmed(self, n: int) -> bool:
        return self.status[n - 1] == OK

    def numbers(self, room: int, lo: int, hi: int) -> Iterator[int]:
        """The numbers of the messages to ``room`` in ``(lo, hi]``."""
        seqs = self.by_room.get(room)
        if seqs is None or hi <= lo:
            return iter(())
        start = bisect.bisect_right(seqs, lo)
        stop = bisect.bisect_right(seqs, hi)
        return iter(seqs[start:stop])


Snapshot = tuple[int, dict[str, int]]  # (ledger tick, assigned count of each open stream)


@dataclass
class Transition:
    """A join (``joined``) or leave of one room: the horizon when requested, and the
    streams' assigned counts when acknowledged (None: never acknowledged)."""

    joined: bool
    requested: dict[str, int]
    acked: Snapshot | None = None


class Received:
    """How many times a session got each number of one stream (1 byte per number)."""

    def __init__(self, first: int) -> None:
        self.base = max(0, first - 1 - EARLY_SLACK)
        self.counts = bytearray()
        self.early: dict[int, int] = {}

    def bump(self, n: int) -> int:
        """Count one more arrival of ``n``; returns how many so far."""
        if n <= self.base:
            self.early[n] = self.early.get(n, 0) + 1
            return self.early[n]
        i = n - self.base - 1
        if i >= len(self.counts):
            self.counts.extend(bytes(i + 1 - len(self.counts)))
        self.counts[i] = min(self.counts[i] + 1, 255)
        return self.counts[i]

    def count(self, n: int) -> int:
        if n <= self.base:
            return self.early.get(n, 0)
        i = n - self.base - 1
        return self.counts[i] if i < len(self.counts) else 0

    def items(self) -> Iterator[tuple[int, int]]:
        yield from self.early.items()
        for i, c in enumerate(self.counts):
            if c:
                yield self.base + 1 + i, c


@dataclass
class Session:
    """One Socket.IO connection of one actor, from connect to its end."""

    id: int
    actor: str
    host: str  # which master ("A" or "B")
    transport: str
    connected: Snapshot | None = None
    horizon: dict[str, int] = field(default_factory=dict)
    received: dict[str, Received] = field(default_factory=dict)
    rooms: dict[int, list[Transition]] = field(default_factory=dict)
    ended: float | None = None
    dropped: bool = False  # ended by the server or the network, not by its actor
    stalls: dict[str, int] = field(default_factory=dict)  # stream -> beacon last reported

    def settled_rooms(self) -> list[int]:
        """Rooms whose last change is an acknowledged join."""
        return [r for r, ts in self.rooms.items() if ts and ts[-1].joined and ts[-1].acked]


@dataclass
class Window:
    """A fault, from its injection until the cluster was healthy again plus a grace."""

    kind: str
    start: float
    horizons: dict[int, dict[str, int]]  # session id -> its horizons at the start
    end: float | None = None
    recovered: bool = False
    detail: str = ""

    def explains(self, session: int, stream: str, n: int, sent: float) -> bool:
        """Whether the loss of message ``n`` (sent at ``sent``) at ``session`` may be
        this fault's doing: undelivered when it began, sent before it closed."""
        ended = self.end if self.end is not None else float("inf")
        return sent <= ended and n > self.horizons.get(session, {}).get(stream, 0)

    def covers(self, t: float) -> bool:
        return self.start <= t <= (self.end if self.end is not None else float("inf"))


@dataclass
class Gap:
    """What an actor missed in one room (or everyone) of one stream between an
    unexpected disconnect (``lo``: its old socket's horizon) and being back (``hi``)."""

    actor: str
    room: int
    stream: str
    lo: int
    detected: float
    hi: int | None = None


@dataclass
class Event:
    """Something that should only happen in a fault window (a failed connect or call,
    a disconnect, a socket whose rooms differ from what its client knows); ``cause``
    is a window overlapping ``at``..``until`` (an attempt lasts from when it was tried to
    when it failed: a connect tried just before a worker is killed fails because of it),
    or ``outside``."""

    what: str
    at: float
    actor: str
    cause: str = OUTSIDE
    detail: str = ""
    until: float | None = None


@dataclass
class Stall:
    """A connected socket that had not received beacon ``n`` of ``stream`` long after it
    was sent; ``cause`` is decided like a loss's."""

    session: int
    actor: str
    stream: str
    n: int
    sent: float
    cause: str = OUTSIDE


@dataclass
class Tally:
    """Counts for one kind of stream."""

    sent: int = 0
    unconfirmed: int = 0
    expected: int = 0
    delivered: int = 0
    lost: dict[str, int] = field(default_factory=dict)
    missed_disconnected: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    misdelivered: int = 0
    unjudged: int = 0
    reordered: int = 0

    def lost_outside(self) -> int:
        return self.lost.get(OUTSIDE, 0)


class Ledger:
    """Every stream, session, fault window and anomaly of one soak run."""

    def __init__(self, rooms: list[str]) -> None:
        self.room_names = rooms
        self.room_index = {name: i for i, name in enumerate(rooms)}
        self.streams: dict[str, Stream] = {}
        self.sessions: list[Session] = []
        self.windows: list[Window] = []
        self.gaps: list[Gap] = []
        self.events: list[Event] = []
        self.stalls: list[Stall] = []
        self.reordered: dict[str, int] = {}
        self.corrupt: list[str] = []
        self.examples: dict[str, list[str]] = {}
        self._tick = 0

    # ---- recording (called by the clients, the publisher and the fault injector) ------

    def open_stream(self, name: str, kind: str) -> Stream:
        self._tick += 1
        stream = Stream(name, kind, self._tick)
        self.streams[name] = stream
        return stream

    def snapshot(self) -> Snapshot:
        """The assigned count of every open stream, now."""
        self._tick += 1
        return self._tick, {s.name: s.assigned for s in self.streams.values() if not s.closed}

    def at(self, snap: Snapshot, stream: Stream) -> int:
        """``stream``'s assigned count at ``snap`` (0 if it was opened later)."""
        tick, values = snap
        if stream.opened > tick:
            return 0
        return values.get(stream.name, stream.assigned)  # absent: closed before, final

    def close_stream(self, stream: Stream) -> None:
        self._tick += 1
        stream.closed = True

    def new_session(self, actor: str, host: str, transport: str) -> Session:
        session = Session(len(self.sessions), actor, host, transport)
        self.sessions.append(session)
        return session

    def receive(self, session: Session, data: Any) -> None:
        """A ``soak`` event arrived at ``session``: ``{"s": stream, "n": number, "r": room}``."""
        try:
            stream = self.streams[data["s"]]
            n = int(data["n"])
            room = EVERYONE if data["r"] is None else self.room_index[data["r"]]
            valid = 0 < n <= stream.assigned and stream.room_of(n) == room
        except (KeyError, TypeError, ValueError):
            valid = False
        if not valid:
            self.corrupt.append(f"session {session.id}: {str(data)[:200]}")
            return
        received = session.received.get(stream.name)
        if received is None:
            received = session.received[stream.name] = Received(n)
        if received.bump(n) == 1:
            if n < session.horizon.get(stream.name, 0):
                self.reordered[stream.kind] = self.reordered.get(stream.kind, 0) + 1
            else:
                session.horizon[stream.name] = n

    def request(self, session: Session, room: int, joined: bool) -> Transition:
        transition = Transition(joined, dict(session.horizon))
        session.rooms.setdefault(room, []).append(transition)
        return transition

    def acknowledge(self, transition: Transition) -> None:
        transition.acked = self.snapshot()

    def open_window(self, kind: str, now: float, detail: str = "") -> Window:
        live = [s for s in self.sessions if s.connected is not None and s.ended is None]
        window = Window(kind, now, {s.id: dict(s.horizon) for s in live}, detail=detail)
        self.windows.append(window)
        return window

    def event(
        self, what: str, at: float, actor: str, detail: str = "", until: float | None = None
    ) -> None:
        """Record an anomaly (an attempt from ``at`` to ``until``); :meth:`verdict` decides
        whether a fault explains it."""
        self.events.append(Event(what, at, actor, detail=detail, until=until))

    def end_session(self, session: Session, now: float, dropped: bool) -> list[Gap]:
        """``session`` is over; when dropped, open the gaps its actor will miss until back."""
        session.ended = now
        session.dropped = dropped
        if not dropped or session.connected is None:
            return []
        gaps = []
        for stream in self.streams.values():
            horizon = session.horizon.get(stream.name, 0)
            starts = [(EVERYONE, self.at(session.connected, stream))]
            for room in session.settled_rooms():
                acked = session.rooms[room][-1].acked
                assert acked is not None
                starts.append((room, self.at(acked, stream)))
            for room, start in starts:
                lo = max(horizon, start)
                if lo < stream.assigned or not stream.closed:
                    gaps.append(Gap(session.actor, room, stream.name, lo, now))
        self.gaps.extend(gaps)
        return gaps

    def close_gaps(self, gaps: list[Gap], room: int | None, snap: Snapshot) -> None:
        """The actor is back in ``room`` (EVERYONE: connected again; None: it gives up on
        every room) as of ``snap``."""
        for gap in gaps:
            if (room is None or gap.room == room) and gap.hi is None:
                gap.hi = max(gap.lo, self.at(snap, self.streams[gap.stream]))

    def missing_beacon(self, session: Session, stream: Stream) -> int | None:
        """The first confirmed beacon of ``stream`` sent since ``session`` connected that it
        has not received (None: none, or the next one is still being sent)."""
        beacons = stream.by_room.get(EVERYONE)
        if not beacons or session.connected is None:
            return None
        floor = max(session.horizon.get(stream.name, 0), self.at(session.connected, stream))
        i = bisect.bisect_right(beacons, floor)
        while i < len(beacons) and stream.status[beacons[i] - 1] == UNKNOWN:
            i += 1
        if i == len(beacons) or not stream.confirmed(beacons[i]):
            return None
        return beacons[i]

    def reached(self, session: Session, stream: Stream, n: int) -> bool:
        """Whether ``session`` got message ``n`` of ``stream``, or connected after it."""
        if session.connected is None or self.at(session.connected, stream) >= n:
            return True
        return session.horizon.get(stream.name, 0) >= n

    def check_stalls(self, session: Session, now: float, after: float) -> None:
        """Record a stall for each stream whose first beacon ``session`` misses was sent
        more than ``after`` seconds ago."""
        if session.connected is None or session.ended is not None:
            return
        for stream in self.streams.values():
            n = self.missing_beacon(session, stream)
            if n is None:
                continue
            sent = stream.time_of(n)
            if now - sent > after and session.stalls.get(stream.name) != n:
                session.stalls[stream.name] = n
                self.stalls.append(Stall(session.id, session.actor, stream.name, n, sent))

    # ---- the verdict -------------------------------------------------------------------

    def cause_of_loss(self, session: int, stream: Stream, n: int) -> str:
        sent = stream.time_of(n)
        for window in self.windows:
            if window.explains(session, stream.name, n, sent):
                return window.kind
        return OUTSIDE

    def cause_over(self, start: float, end: float | None) -> str:
        """The window overlapping ``start``..``end`` (just ``start`` when ``end`` is None)."""
        for window in self.windows:
            if window.covers(start) or (
                end is not None and window.start <= end and start <= (window.end or end)
            ):
                return window.kind
        return OUTSIDE

    def cause_at(self, t: float) -> str:
        for window in self.windows:
            if window.covers(t):
                return window.kind
        return OUTSIDE

    def verdict(self) -> dict[str, Tally]:
        """Judge every session, gap and event; returns a tally per stream kind."""
        tallies = {"ch": Tally(), "emit": Tally()}
        for stream in self.streams.values():
            tally = tallies[stream.kind]
            tally.sent += stream.assigned
            tally.unconfirmed += sum(1 for s in stream.status if s != OK)
        for session in self.sessions:
            self._judge_session(session, tallies)
            session.received.clear()  # judged: free the memory
        for gap in self.gaps:
            stream = self.streams[gap.stream]
            hi = gap.hi if gap.hi is not None else stream.assigned
            missed = sum(1 for n in stream.numbers(gap.room, gap.lo, hi) if stream.confirmed(n))
            if missed:
                cause = self.cause_at(gap.detected)
                bucket = tallies[stream.kind].missed_disconnected
                bucket[cause] = bucket.get(cause, 0) + missed
        for event in self.events:
            event.cause = self.cause_over(event.at, event.until)
        for stall in self.stalls:
            stall.cause = self.cause_of_loss(stall.session, self.streams[stall.stream], stall.n)
        for kind, count in self.reordered.items():
            tallies[kind].reordered = count
        return tallies

    def _judge_session(self, session: Session, tallies: dict[str, Tally]) -> None:
        if session.connected is None:
            return
        for stream in self.streams.values():
            tally = tallies[stream.kind]
            received = session.received.get(stream.name) or Received(stream.assigned + 1)
            final = session.horizon.get(stream.name, 0)
            intervals = {
                room: self._intervals(transitions, stream, final)
                for room, transitions in session.rooms.items()
            }
            connected_at = self.at(session.connected, stream)
            intervals[EVERYONE] = [(connected_at, final, True)]
            for room, spans in intervals.items():
                for lo, hi, inside in spans:
                    if not inside:
                        continue
                    for n in stream.numbers(room, lo, hi):
                        if not stream.confirmed(n):
                            continue
                        tally.expected += 1
                        if received.count(n):
                            tally.delivered += 1
                        else:
                            cause = self.cause_of_loss(session.id, stream, n)
                            tally.lost[cause] = tally.lost.get(cause, 0) + 1
                            if cause == OUTSIDE:
                                self._example("lost", session, stream, n)
            for n, count in received.items():
                if count > 1:
                    tally.duplicates += count - 1
                    self._example("duplicate", session, stream, n)
                room = stream.room_of(n)
                state = self._state(intervals.get(room, [(0, final, False)]), n)
                if state is False:
                    tally.misdelivered += 1
                    self._example("misdelivered", session, stream, n)
                elif state is None:
                    tally.unjudged += 1

    def _intervals(
        self, transitions: list[Transition], stream: Stream, final: int
    ) -> list[tuple[int, int, bool]]:
        """``(lo, hi, inside)``: the numbers ``lo < n <= hi`` of ``stream`` the session was
        settled in (``inside``) or settled out of the room for."""
        spans: list[tuple[int, int, bool]] = []
        lo, inside = 0, False
        for t in transitions:
            spans.append((lo, t.requested.get(stream.name, 0), inside))
            if t.acked is None:
                return spans  # never acknowledged: unknown from here on
            lo, inside = self.at(t.acked, stream), t.joined
        spans.append((lo, final, inside))
        return spans

    @staticmethod
    def _state(spans: list[tuple[int, int, bool]], n: int) -> bool | None:
        for lo, hi, inside in spans:
            if lo < n <= hi:
                return inside
        return None

    def _example(self, what: str, session: Session, stream: Stream, n: int) -> None:
        found = self.examples.setdefault(what, [])
        if len(found) < 5:
            room = stream.room_of(n)
            name = "everyone" if room == EVERYONE else self.room_names[room]
            found.append(
                f"{stream.name}#{n} to {name} sent at {stream.time_of(n):.3f}: session "
                f"{session.id} ({session.actor} on {session.host}, {session.transport})"
            )
