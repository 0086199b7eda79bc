"""The master's seat in a socket.io 0.9 ``RedisStore`` fleet (``--redis-store-09``).

Why: a team running socket.io 0.9 servers on ``RedisStore`` can start our hosts beside them on
the same Redis and move clients over gradually; the master holds the Redis connections, so it
is the one member of the fleet per host (workers have none). What it does:

- 0.9 -> us: a ``dispatch`` (``io.sockets.in(room).emit``, ``socket.broadcast.emit``) goes to
  our sockets of its namespace and room minus its exceptions, through the same fanout as
  everything else, once per host; a ``dispatch-remote`` (``socket.emit`` for a socket another
  server holds) to our socket with that id, if this host holds it.
- us -> 0.9: a worker's broadcast goes out as ``dispatch`` in 0.9's packet form, once per host
  (each host's master sees its own workers' broadcasts only); an emit to a 0.9 client's id as
  ``dispatch-remote``. A ``ch:*`` message reaches every master, so only the one holding the
  relay lease (a Redis key, renewed every roll call) passes it on, or 0.9 clients would get one
  copy per host.
- memberships: our sockets' joins and leaves go out as ``join``/``leave`` (endpoint ``<nsp>``
  for the namespace, ``<nsp>/<room>`` for a room) and a socket gone as ``disconnect``, so 0.9's
  ``io.sockets.clients(room)`` counts them; the 0.9 clients' memberships are kept
  (:class:`master.store09.view.FleetView`) for our ``fetch_sockets``.
- a 0.9 server killed publishes nothing, and 0.9 itself never forgets its clients. So every
  roll-call interval the master asks every 0.9 server to handle a no-op for a reserved client
  id (``message-remote``: that id leaves ``''``), which each live one answers with a ``leave``
  under its node id. A server silent for 2.5 intervals is lost: its clients are dropped here
  and a ``disconnect`` is published for each, so the surviving 0.9 servers drop them too.
  Silence counts only while this master hears itself: a round whose own roll call did not
  come back to it, or that ran late, proves nothing about the others (see :meth:`_judge`).

Unreadable store messages are counted (``sio_master_store09_malformed``), logged at a limited
rate and ignored.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import redis.asyncio as aioredis
from prometheus_client import Counter
from redis.exceptions import RedisClusterException, RedisError

from sio_cluster.common.ratelimit import RateLimitedLogger
from sio_cluster.master.bus.core import decode_parts, encode_parts
from sio_cluster.master.bus.listeners import BusTransport
from sio_cluster.master.metrics import Metrics
from sio_cluster.master.routing.fanout import Fanout
from sio_cluster.master.routing.messages import Delivery
from sio_cluster.master.store09.view import FleetView
from sio_cluster.master.store09.wire import (
    CHANNELS,
    DISCONNECT,
    DISCONNECT_REMOTE,
    DISPATCH,
    DISPATCH_REMOTE,
    JOIN,
    LEAVE,
    MESSAGE_REMOTE,
    OUR_NODE_PREFIX,
    ROLL_CALL_ID,
    ROLL_CALL_PACKET,
    StoreFormatError,
    StoreMessage,
    decode_message,
    encode_message,
    event_packet,
    read_client,
    read_direct,
    read_dispatch,
    read_membership,
    room_names,
)
from sio_cluster.wire.frames import Broadcast, Room
from sio_cluster.wire.operations import FetchSockets, SocketInfo
from sio_cluster.wire.sio09.packets import endpoint_of

log = logging.getLogger(__name__)

LOST_AFTER_ROLL_CALLS = 2.5  # a 0.9 server silent this many roll-call intervals is lost
LATE_AFTER_ROLL_CALLS = 2.0  # a round this many intervals long: this master was paused
RELAY_LEASE_KEY = "sio-cluster:store09:relay"
CLOSE_SECONDS = 2.0  # the most a stopping master spends telling the 0.9 fleet


class LegacyFleet:
    """This master as a member of a socket.io 0.9 ``RedisStore`` fleet."""

    channels = CHANNELS

    def __init__(
        self,
        publish: Callable[[str, bytes], None],
        transport: BusTransport,
        commands: aioredis.Redis,
        fanout: Fanout,
        metrics: Metrics,
        roll_call: float,
    ) -> None:
        self.node_id = OUR_NODE_PREFIX + uuid.uuid4().hex
        self.view = FleetView()
        self.relays_channel_messages = False  # holds the ch:* relay lease
        # the sockets of this host with their namespaces (a 0.9 client of ours, --allow-v09,
        # has one sid in all of them), and of our other hosts (from their joins, by their
        # node id): an emit to one of them is nothing for the 0.9 fleet
        self._our_sids: dict[str, set[str]] = {}
        self.hosts = FleetView()
        self._publish = publish
        self._transport = transport  # to publish at once, when the bus's publisher is gone
        self._commands = commands
        self._fanout = fanout
        self._metrics = metrics
        self._roll_call = roll_call
        self._limiter = RateLimitedLogger(log)
        self._published: dict[str, Counter] = {}  # per channel, looked up once
        self._received: dict[str, Counter] = {}
        self._echoed = False  # this master's roll call came back to it in the current round
        metrics.watch_store09(lambda: len(self.view.clients), lambda: len(self.view.heard))

    # ---- 0.9 -> our sockets ---------------------------------------------------------

    def on_message(self, channel: str, body: bytes) -> None:
        """A message on one of :data:`CHANNELS`."""
        counter = self._received.get(channel)
        if counter is None:
            counter = self._received[channel] = self._metrics.store09_received.labels(channel)
        counter.inc()
        try:
            message = decode_message(body)
            if message.ours:  # our hosts reach each other through the adapter bus
                if message.node_id != self.node_id:
                    self._note_ours(channel, message)
                elif channel == LEAVE and read_membership(message)[0] == ROLL_CALL_ID:
                    self._echoed = True  # this master hears the fleet's channels
                return
            if channel == DISPATCH:
                self._dispatch(message)
            elif channel == DISPATCH_REMOTE:
                self._direct(message)
            elif channel == JOIN:
                client_id, endpoint = read_membership(message)
                if client_id != ROLL_CALL_ID:
                    self.view.join(message.node_id, client_id, endpoint)
            elif channel == LEAVE:
                self.view.leave(*read_membership(message))
            elif channel in (DISCONNECT, DISCONNECT_REMOTE):
                self.view.drop(read_client(message))
            # a sign of life, once read: a malformed message names no server to watch
            self.view.heard_from(message.node_id, asyncio.get_running_loop().time())
        except StoreFormatError as exc:
            self._metrics.store09_malformed.labels(channel=channel).inc()
            self._limiter.log(
                logging.WARNING, channel, "unreadable 0.9 store message on %r: %s", channel, exc
            )

    def _note_ours(self, channel: str, message: StoreMessage) -> None:
        """Another master of ours: its sockets, and that it is alive (its roll-call ``leave``)."""
        if channel == JOIN:
            self.hosts.join(message.node_id, *read_membership(message))
        elif channel == LEAVE:
            self.hosts.leave(*read_membership(message))
        elif channel == DISCONNECT:
            self.hosts.drop(read_client(message))
        self.hosts.heard_from(message.node_id, asyncio.get_running_loop().time())

    def is_ours(self, sid: str) -> bool:
        """A socket of one of our hosts."""
        return sid in self._our_sids or sid in self.hosts.clients

    def _dispatch(self, message: StoreMessage) -> None:
        dispatch = read_dispatch(message)
        if dispatch is None:
            return
        namespace, data = dispatch.namespace, dispatch.data
        rooms = None if dispatch.room is None else [dispatch.room]
        self._fanout.deliver(
            namespace, rooms, dispatch.exceptions, lambda: encode_parts(namespace, data)
        )

    def _direct(self, message: StoreMessage) -> None:
        direct = read_direct(message)
        if direct is None:
            return
        namespace, data = direct.namespace, direct.data
        self._fanout.deliver(
            namespace, [direct.client_id], (), lambda: encode_parts(namespace, data)
        )

    # ---- our sockets -> 0.9 ---------------------------------------------------------

    def send(self, channel: str, *args: Any) -> None:
        counter = self._published.get(channel)
        if counter is None:
            counter = self._published[channel] = self._metrics.store09_published.labels(channel)
        counter.inc()
        self._publish(channel, encode_message(self.node_id, *args))

    def our_join(self, namespace: str, sid: str, room: Room | None) -> None:
        if room is None:
            self._our_sids.setdefault(sid, set()).add(namespace)
        if room != sid:  # a socket's own room is no 0.9 room
            self.send(JOIN, sid, endpoint_of(namespace, room))

    def our_leave(self, namespace: str, sid: str, room: Room | None) -> None:
        """A room left, or a namespace: a socket still in another namespace (a 0.9 client of
        ours keeps its sid in all) leaves that one, as 0.9 publishes it; ``disconnect``, which
        takes a client out of every endpoint on every 0.9 server, is for its last one."""
        if room is None:
            namespaces = self._our_sids.get(sid, set())
            namespaces.discard(namespace)
            if namespaces:
                self.send(LEAVE, sid, endpoint_of(namespace))
                return
            self._our_sids.pop(sid, None)
            self.send(DISCONNECT, sid)
        elif room != sid:
            self.send(LEAVE, sid, endpoint_of(namespace, room))

    def relay_broadcast(self, broadcast: Broadcast) -> None:
        """A worker's broadcast, for the 0.9 servers' clients."""
        if len(broadcast.parts) > 1:
            self._metrics.store09_unsendable.inc()  # binary attachments: 0.9 has no binary
            return
        rooms = self._theirs(broadcast.rooms)
        if rooms != []:
            namespace, data = decode_parts(broadcast.parts)
            self._broadcast(namespace, rooms, broadcast.exclude, data)

    def relay_channel_message(self, delivery: Delivery) -> None:
        """A ``ch:*`` message, passed on by the lease holder only (every master gets it)."""
        if self.relays_channel_messages:
            rooms = self._theirs(delivery.to)
            if rooms != []:
                namespace, data = decode_parts([delivery.packet])
                self._broadcast(namespace, rooms, delivery.exclude, data)

    def _theirs(self, rooms: Sequence[Room] | None) -> list[Room] | None:
        """The rooms an emit can reach 0.9 clients in: all but our own sockets (None: all);
        an emit to our sockets only is not even decoded."""
        if rooms is None:
            return None
        return [room for room in rooms if not self.is_ours(str(room))]

    def _broadcast(
        self, namespace: str, rooms: Sequence[Room] | None, exclude: Iterable[Room], data: Any
    ) -> None:
        """One ``dispatch`` per room, each excepting the 0.9 clients the rooms before it
        reached (0.9 knows no emit to several rooms: a client in two must get one copy);
        a room that is a 0.9 client's id goes to that client alone (``dispatch-remote``)."""
        try:
            packet = event_packet(namespace, data)
        except ValueError:
            self._metrics.store09_unsendable.inc()
            return
        excepted = {str(room) for room in exclude}
        excepted |= self.view.ids_in(endpoint_of(namespace, room) for room in exclude)
        if rooms is None:
            self.send(DISPATCH, endpoint_of(namespace), packet, None, sorted(excepted))
            return
        for room in rooms:
            client_id = str(room)
            if client_id in self.view.clients:
                if client_id not in excepted:
                    self.send(DISPATCH_REMOTE, client_id, packet, None)
                    excepted.add(client_id)
                continue
            endpoint = endpoint_of(namespace, room)
            self.send(DISPATCH, endpoint, packet, None, sorted(excepted))
            excepted |= self.view.ids_in([endpoint])

    # ---- our fetch_sockets ------------------------------------------------------------

    def fetch(self, operation: FetchSockets) -> list[dict[str, Any]]:
        """The 0.9 clients ``operation`` selects, as fetched sockets (id and rooms)."""
        namespace, selector = operation.namespace, operation.selector
        if selector.rooms is None:
            ids = set(self.view.members.get(endpoint_of(namespace), ()))
        else:
            ids = self.view.ids_in(endpoint_of(namespace, room) for room in selector.rooms)
            ids |= {str(room) for room in selector.rooms if str(room) in self.view.clients}
        ids -= self.view.ids_in(endpoint_of(namespace, room) for room in selector.exclude)
        ids -= {str(room) for room in selector.exclude}
        return [
            SocketInfo(
                cid, (cid, *room_names(namespace, sorted(self.view.clients[cid].endpoints)))
            ).to_wire()
            for cid in sorted(ids)
            if cid in self.view.clients
        ]

    # ---- roll call and relay lease --------------------------------------------------

    async def run(self) -> None:
        """Every roll-call interval: renew the relay lease, call the roll (and answer it for
        our other masters, which hear this ``leave`` of nothing as 0.9 servers do), then
        judge who stayed silent."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        while True:
            await self._renew_lease()
            self._echoed = False
            self.send(MESSAGE_REMOTE, ROLL_CALL_ID, ROLL_CALL_PACKET)
            self.send(LEAVE, ROLL_CALL_ID, "")
            await asyncio.sleep(self._roll_call)
            now = loop.time()
            self._judge(now, now - started)
            started = now

    def _judge(self, now: float, round_time: float) -> None:
        """Forget the servers, 0.9's and ours, silent for 2.5 intervals while this master
        heard itself. A round whose roll call did not come back (Redis down or stalled, our
        subscriber reconnecting) or that ran late (this master paused) could not hear the
        others either: everyone's silence restarts from now. Without that, an outage longer
        than 2.5 intervals made every live server look lost, and the ``disconnect`` published
        for each of its clients would make the 0.9 servers drop their own live clients."""
        if not self._echoed or round_time > self._roll_call * LATE_AFTER_ROLL_CALLS:
            self.view.heard_all(now)
            self.hosts.heard_all(now)
            return
        silence = self._roll_call * LOST_AFTER_ROLL_CALLS
        for view, what in ((self.view, "0.9 server"), (self.hosts, "master of ours")):
            for node in view.silent(now, silence):
                self._lost(view, node, what, silence)

    def _lost(self, view: FleetView, node: Any, what: str, silence: float) -> None:
        """A server gone without a word: its sockets leave every 0.9 server's rooms."""
        gone = view.drop_node(node)
        if view is self.view:
            self._metrics.store09_servers_lost.inc()
        log.warning(
            "%s %s silent for %.1f s: lost, with its %d sockets", what, node, silence, len(gone)
        )
        for client_id in gone:
            self.send(DISCONNECT, client_id)

    async def close(self, sockets: Iterable[str]) -> None:
        """This host stops: tell the 0.9 fleet its ``sockets`` are gone and give up the relay
        lease, directly (the bus's publisher has stopped), within a bounded time."""
        gone = [(DISCONNECT, encode_message(self.node_id, sid)) for sid in sockets]
        try:
            async with asyncio.timeout(CLOSE_SECONDS):
                await self._transport.publish(gone)  # pipelined, or in turn on a Cluster
                if self.relays_channel_messages:
                    await self._commands.delete(RELAY_LEASE_KEY)
        except (RedisError, RedisClusterException, OSError, TimeoutError) as exc:
            log.warning("could not tell the 0.9 fleet this host stops: %s", exc)

    async def _renew_lease(self) -> None:
        """Hold the ``ch:*`` relay lease (one master relays those), or learn who does."""
        ttl = int(self._roll_call * 3 * 1000)
        try:
            if await self._commands.set(RELAY_LEASE_KEY, self.node_id, nx=True, px=ttl):
                held = True
            else:
                holder = await self._commands.get(RELAY_LEASE_KEY)
                held = holder in (self.node_id, self.node_id.encode())
                if held:
                    await self._commands.pexpire(RELAY_LEASE_KEY, ttl)
        except (RedisError, OSError) as exc:
            log.debug("relay lease not renewed: %s", exc)
            return
        if held != self.relays_channel_messages:
            log.info("0.9 fleet: %s the ch:* relay", "holding" if held else "not holding")
        self.relays_channel_messages = held
