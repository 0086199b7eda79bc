"""The soak's Socket.IO clients: actors churning through rooms, emitters making handler emits.

Every connection is a fresh python-socketio ``AsyncClient`` with its own reconnection
off: the actor reconnects itself, so each connection is exactly one ledger
:class:`~bench.soak_ledger.Session` with a known start and end, and a disconnect is
seen as such (it opens the gaps the actor misses until it is back in its rooms).

Both kinds talk to ``tests/probe_app.py``: ``join``/``leave`` (acknowledged once the
master applied the change: read-your-writes) and ``emit`` (the worker's handler calls
``sio.emit`` with the given targets, acknowledged once it returned).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import socketio

from bench.soak_ledger import EVERYONE, Gap, Ledger, Session, Stream

CALL_TIMEOUT = 15.0  # longer than any SIGSTOP the soak gives a worker
CONNECT_TIMEOUT = 10.0
CLOSE_TIMEOUT = 10.0
RETRY_DELAYS = (0.2, 0.4, 0.8, 1.6, 2.0)  # between connect attempts, then 2 s each
EVENT = "soak"

Clock = Callable[[], float]


class CallFailed(Exception):
    """No acknowledgement: the connection dropped, or none came within the timeout."""


async def pause(seconds: float, *events: asyncio.Event) -> None:
    """Sleep ``seconds``, or less if any of ``events`` is set meanwhile."""
    if any(e.is_set() for e in events):
        return
    waits = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, timeout=max(seconds, 0.0), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


class Connection:
    """One Socket.IO connection, recording every ``soak`` event into its session."""

    def __init__(self, ledger: Ledger, session: Session, clock: Clock) -> None:
        self.ledger = ledger
        self.session = session
        self.clock = clock
        self.client = socketio.AsyncClient(
            reconnection=False, handle_sigint=False, request_timeout=CALL_TIMEOUT
        )
        self.dropped = asyncio.Event()
        self.gaps: list[Gap] = []
        self._closing = False
        self.client.on("connect", self._on_connect)
        self.client.on("disconnect", self._on_disconnect)
        self.client.on(EVENT, self._on_soak)

    def _on_connect(self) -> None:
        self.session.connected = self.ledger.snapshot()

    def _on_disconnect(self, reason: Any = None) -> None:
        if self._closing or self.session.ended is not None:
            return
        now = self.clock()
        self.gaps = self.ledger.end_session(self.session, now, dropped=True)
        self.ledger.event("disconnected", now, self.session.actor, f"{reason}")
        self.dropped.set()

    def _on_soak(self, data: Any) -> None:
        self.ledger.receive(self.session, data)

    async def open(self, url: str) -> bool:
        """Connect; False (and a ledger event, dated when it was tried) if it did not work."""
        tried = self.clock()
        try:
            await asyncio.wait_for(
                self.client.connect(
                    url, transports=[self.session.transport], wait_timeout=CONNECT_TIMEOUT
                ),
                CONNECT_TIMEOUT + 5,
            )
        except (socketio.exceptions.ConnectionError, TimeoutError, OSError, ValueError) as exc:
            self.ledger.event(
                "connect failed", tried, self.session.actor, repr(exc), until=self.clock()
            )
        if self.session.connected is None or self.dropped.is_set():
            await self.close()
            return False
        return True

    async def call(self, event: str, data: Any, on_ack: Callable[[], None]) -> Any:
        """Emit with an acknowledgement; ``on_ack`` runs the moment it arrives."""
        answer: asyncio.Future[tuple[Any, ...]] = asyncio.get_running_loop().create_future()

        def acked(*args: Any) -> None:
            if not answer.done():
                on_ack()
                answer.set_result(args)

        try:
            await self.client.emit(event, data, callback=acked)
        except socketio.exceptions.SocketIOError as exc:
            raise CallFailed(repr(exc)) from None
        dropped: asyncio.Future[Any] = asyncio.ensure_future(self.dropped.wait())
        try:
            await asyncio.wait(
                [answer, dropped], timeout=CALL_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            dropped.cancel()
        if not answer.done():
            answer.cancel()
            raise CallFailed("dropped" if self.dropped.is_set() else "timed out")
        args = answer.result()
        return args[0] if len(args) == 1 else args

    async def close(self) -> None:
        """End the session (if the server has not) and release the client's resources."""
        if self.session.ended is None:
            self._closing = True
            self.ledger.end_session(self.session, self.clock(), dropped=False)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.client.disconnect(), CLOSE_TIMEOUT)


@dataclass
class Plan:
    """What the clients do: the rooms, how often and how they change."""

    rooms: Sequence[str]
    max_rooms: int = 3
    pause: tuple[float, float] = (0.5, 3.0)  # between two steps of an actor
    reconnect: float = 0.08  # chance that a step is a disconnect and a new connection
    polling: float = 0.3  # chance that a connection is polling-only (else websocket-only)


class Client:
    """What actors and emitters share: connecting again and again until told to finish."""

    def __init__(
        self,
        name: str,
        host: str,
        urls: Callable[[], list[str]],
        ledger: Ledger,
        rng: random.Random,
        plan: Plan,
        clock: Clock,
    ) -> None:
        self.name = name
        self.host = host
        self.urls = urls
        self.ledger = ledger
        self.rng = rng
        self.plan = plan
        self.clock = clock
        self.quiet = asyncio.Event()  # the final phase: stop changing things
        self.finish = asyncio.Event()  # close and return
        self.retired = False  # its master is going away: do not connect again
        self.gaps: list[Gap] = []
        self.connection: Connection | None = None

    async def connect(self) -> Connection | None:
        """A new connection to one of the host's workers; None once finished or retired."""
        attempt = 0
        while not self.finish.is_set() and not self.retired:
            transport = "polling" if self.rng.random() < self.plan.polling else "websocket"
            session = self.ledger.new_session(self.name, self.host, transport)
            connection = Connection(self.ledger, session, self.clock)
            self.connection = connection
            if await connection.open(self.rng.choice(self.urls())):
                assert session.connected is not None
                self.ledger.close_gaps(self.gaps, EVERYONE, session.connected)
                return connection
            self.gaps += connection.gaps  # dropped at once, in its first moments
            delay = RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)]
            attempt += 1
            await pause(delay, self.finish)
        return None

    async def ended(self, connection: Connection) -> None:
        """After a connection: keep the gaps a drop opened, release the client."""
        self.gaps += connection.gaps
        await connection.close()

    def give_up(self) -> None:
        """Whatever the actor still misses stops counting now."""
        self.ledger.close_gaps(self.gaps, None, self.ledger.snapshot())

    async def run(self) -> None:
        try:
            while not self.finish.is_set() and not self.retired:
                connection = await self.connect()
                if connection is None:
                    break
                try:
                    await self.live(connection)
                finally:
                    await self.ended(connection)
        finally:
            self.give_up()
            if self.connection is not None:
                await self.connection.close()

    async def live(self, connection: Connection) -> None:
        raise NotImplementedError


class Actor(Client):
    """A user: wants to be in a few rooms, joins and leaves, sometimes reconnects."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.wanted: set[int] = set()

    async def live(self, connection: Connection) -> None:
        for room in sorted(self.wanted):
            if not await self.change(connection, room, join=True):
                return
        while True:
            if self.quiet.is_set():
                await pause(3600, self.finish, connection.dropped)
            else:
                await pause(self.rng.uniform(*self.plan.pause), self.finish, connection.dropped)
            if connection.dropped.is_set() or self.finish.is_set():
                return
            if self.quiet.is_set():
                continue
            if self.rng.random() < self.plan.reconnect:
                return  # a new connection, by choice
            rooms = len(self.plan.rooms)
            join = not self.wanted or (
                len(self.wanted) < self.plan.max_rooms and self.rng.random() < 0.55
            )
            if join:
                room = self.rng.choice([r for r in range(rooms) if r not in self.wanted])
            else:
                room = self.rng.choice(sorted(self.wanted))
            if not await self.change(connection, room, join):
                return

    async def change(self, connection: Connection, room: int, join: bool) -> bool:
        """Join or leave ``room``; False if no acknowledgement came (the connection ends)."""
        session = connection.session
        asked = self.clock()
        transition = self.ledger.request(session, room, join)

        def acked() -> None:
            self.ledger.acknowledge(transition)
            if join and transition.acked is not None:
                self.ledger.close_gaps(self.gaps, room, transition.acked)

        try:
            rooms = await connection.call("join" if join else "leave", self.plan.rooms[room], acked)
        except CallFailed as exc:
            if not connection.dropped.is_set():
                self.ledger.event("call failed", asked, self.name, str(exc), until=self.clock())
            return False
        if join:
            self.wanted.add(room)
        else:
            self.wanted.discard(room)
        known = sorted(self.plan.rooms[r] for r in session.settled_rooms())
        if sorted(map(str, rooms or [])) != known:
            self.ledger.event("room view", self.clock(), self.name, f"server {rooms}, ours {known}")
        return True


class Emitter(Client):
    """A client whose worker's handler emits numbered events to rooms (and beacons to
    everyone, which give every socket a horizon of this stream)."""

    def __init__(self, *args: Any, rate: float, beacon_every: int = 4, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rate = rate
        self.beacon_every = beacon_every
        self.fence: tuple[str, int] | None = None  # (stream, number) of its last beacon
        self.fenced = asyncio.Event()

    async def live(self, connection: Connection) -> None:
        stream = self.ledger.open_stream(f"e{connection.session.id}", "emit")
        try:
            await self._emit(connection, stream)
        finally:
            self.ledger.close_stream(stream)

    async def _emit(self, connection: Connection, stream: Stream) -> None:
        count = 0
        next_at = self.clock()
        while not self.finish.is_set():
            if self.quiet.is_set():
                if not self.fenced.is_set():
                    if not await self._send(connection, stream, EVERYONE):
                        return
                    self.fence = (stream.name, stream.assigned)
                    self.fenced.set()
                await pause(3600, self.finish, connection.dropped)
            else:
                await pause(next_at - self.clock(), self.finish, self.quiet, connection.dropped)
            if connection.dropped.is_set() or self.finish.is_set():
                return
            if self.quiet.is_set():
                continue
            every = count % self.beacon_every == 0
            room = EVERYONE if every else self.rng.randrange(len(self.plan.rooms))
            if not await self._send(connection, stream, room):
                return
            count += 1
            next_at = max(next_at + 1 / self.rate, self.clock() - 1)

    async def _send(self, connection: Connection, stream: Stream, room: int) -> bool:
        name = None if room == EVERYONE else self.plan.rooms[room]
        asked = self.clock()
        n = stream.assign(room, asked)
        spec = {"event": EVENT, "args": [{"s": stream.name, "n": n, "r": name}], "to": name}
        try:
            await connection.call("emit", spec, lambda: stream.settle(n, True))
        except CallFailed as exc:
            stream.settle(n, False)
            if not connection.dropped.is_set():
                self.ledger.event("call failed", asked, self.name, str(exc), until=self.clock())
            return False
        return True
