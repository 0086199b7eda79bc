"""The host's sharded subscriber (``--adapter sharded``): SSUBSCRIBE, each channel on its shard.

Why its own connections: a shard channel is served only by the node owning its
hash slot (Redis >= 7), so on a Cluster the subscriptions are spread over one
connection per primary that owns one of our channels: at most the number of
primaries, whatever the number of workers or rooms. On one Redis (or the
Sentinel primary) every channel is on one connection.

What it survives: a connection that drops (node killed, failover) or a
``-MOVED`` answer, and Redis's own ``sunsubscribe`` push when a slot moves to
another node, all lead to the same repair: read the slot map again, then
subscribe every channel that is not subscribed on its owner's connection,
with capped backoff while that fails; logged once per outage and counted by the
caller's ``on_subscribed``.

A node that stops answering is reported and remade as the classic subscriber's Redis is
(:mod:`master.pubsub.liveness`): each connection is PINGed when quiet, :meth:`ShardedSource.
silent_for` is the longest silence of them (``/readyz`` turns 503 past ``stall_timeout``), a
stall is logged once with its node, and what a lost connection cost is counted by the same
reasons (``on_loss``). On a Cluster this is a node the classic subscriber may not be on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any

from sio_cluster.common.redis.topology import ShardMap, Topology
from sio_cluster.common.redis.url import without_password
from sio_cluster.master.pubsub.liveness import (
    DEFAULT_BOUNDS,
    Bounds,
    Liveness,
    Loss,
    LossHandler,
)
from sio_cluster.master.pubsub.resp import SubscriberError, connect
from sio_cluster.master.pubsub.source import backoff_delays

log = logging.getLogger(__name__)

ShardHandler = Callable[[bytes, bytes], None]  # channel, body


class ShardConnection:
    """One subscriber connection to one node, its watch, and the channels subscribed on it."""

    def __init__(self, url: str, liveness: Liveness) -> None:
        self.url = url
        self.liveness = liveness
        self.protocol = liveness.protocol
        self.channels: set[str] = set()

    @property
    def alive(self) -> bool:
        return not self.protocol.closed.done()

    def close(self) -> None:
        if self.protocol.transport is not None:
            self.protocol.transport.abort()


class ShardedSource:
    """Keeps every wanted channel SSUBSCRIBEd on the node serving it; forever."""

    def __init__(
        self,
        topology: Topology,
        on_subscribed: Callable[[], None] = lambda: None,
        client_name: str | None = None,
        bounds: Bounds = DEFAULT_BOUNDS,
        on_loss: LossHandler = lambda reason, estimate: None,
    ) -> None:
        self._topology = topology
        self._on_message: ShardHandler = lambda channel, body: None
        self._on_subscribed = on_subscribed
        self._client_name = client_name
        self._wanted: set[str] = set()
        self._connections: dict[str, ShardConnection] = {}
        self._map: ShardMap | None = None
        self._changed = asyncio.Event()
        self._bounds = bounds
        self._on_loss = on_loss
        self._rates: dict[str, float] = {}  # per node: what a lost connection's loss is rated at
        self._losses: list[Loss] = []  # connections lost since the last full subscription
        self._outage_logged = False
        self.connected = False

    def deliver_to(self, handler: ShardHandler) -> None:
        """Where every message goes: ``handler(channel, body)``, in the reading tick."""
        self._on_message = handler

    def connections(self) -> int:
        """Open subscriber connections now (at most one per primary)."""
        return sum(c.alive for c in self._connections.values())

    def silent_for(self) -> float:
        """The longest time any connection has heard nothing from its node (0 if none)."""
        live = [c.liveness.silent_for() for c in self._connections.values() if c.alive]
        return max(live, default=0.0)

    def add_channels(self, names: Iterable[str]) -> None:
        """Subscribe these channels too (now, and after every repair)."""
        new = set(names) - self._wanted
        if new:
            self._wanted |= new
            self._changed.set()

    def remove_channels(self, names: Iterable[str]) -> None:
        """Stop wanting these channels (a room this host no longer holds)."""
        gone = self._wanted & set(names)
        if gone:
            self._wanted -= gone
            self._changed.set()

    async def run(self) -> None:
        """Reconcile the subscriptions with the wanted channels until cancelled."""
        next_delay = backoff_delays(cap=self._topology.reconnect_cap)
        try:
            while True:
                self._changed.clear()
                try:
                    await self._reconcile()
                except (SubscriberError, OSError, TimeoutError) as exc:
                    for loss in self._losses:
                        loss.failed_reconnects += 1
                    self._outage(str(exc))
                    self._map = None
                    self.connected = False
                    await asyncio.sleep(next_delay())
                    continue
                if self._outage_logged:
                    log.warning(
                        "Redis is back: %d shard channels subscribed again", len(self._wanted)
                    )
                elif not self.connected:
                    log.info("subscribed to %d shard channels", len(self._wanted))
                if self._outage_logged or not self.connected:
                    self.connected = True
                    self._on_subscribed()
                for loss in self._losses:
                    loss.count(self._on_loss)
                self._losses.clear()
                self._outage_logged = False
                next_delay = backoff_delays(cap=self._topology.reconnect_cap)
                await self._wait_for_change()
        finally:
            for connection in self._connections.values():
                connection.close()
            self._connections.clear()
            self.connected = False

    def _outage(self, reason: str) -> None:
        if not self._outage_logged:
            log.error("sharded subscriber lost (%s); subscribing again", reason)
            self._outage_logged = True

    async def _wait_for_change(self) -> None:
        """Until a channel is added or removed, or a connection drops or is given up as mute."""
        while not self._changed.is_set():
            closed: list[asyncio.Future[Any]] = [
                c.protocol.closed for c in self._connections.values()
            ]
            changed = asyncio.ensure_future(self._changed.wait())
            await asyncio.wait(
                [changed, *closed],
                timeout=self._bounds.ping_interval,
                return_when=asyncio.FIRST_COMPLETED,
            )
            changed.cancel()
            self._check_health()

    def _check_health(self) -> None:
        """Drop the connections that closed or are mute: the next reconcile remakes them."""
        for connection in list(self._connections.values()):
            if not connection.alive:
                reason = connection.protocol.closed.result()
                self._drop(connection, str(reason or "connection closed by Redis"), False)
            elif not connection.liveness.check():
                silent = connection.liveness.silent_for()
                self._drop(connection, f"no answer to PING for {silent:.0f} s", True)

    def _drop(self, connection: ShardConnection, reason: str, stalled: bool) -> None:
        """Forget a lost connection and keep its loss to count (one that held no
        subscription yet lost nothing); a node went away, so its slots may be elsewhere now."""
        connection.close()
        self._connections.pop(connection.url, None)
        self._rates[connection.url] = connection.liveness.rate
        if connection.channels:
            self._losses.append(connection.liveness.lost(stalled))
        self._outage(f"{connection.liveness.name}: {reason}")
        self._map = None
        self._changed.set()

    async def _reconcile(self) -> None:
        """Subscribe what is wanted where it is served; drop what is not."""
        for connection in list(self._connections.values()):
            if not connection.alive:
                self._drop(connection, "connection closed", False)
        if self._map is None:
            self._map = await self._topology.shard_map()
        owner = self._map
        placed: dict[str, set[str]] = {}
        for channel in self._wanted:
            placed.setdefault(owner(channel), set()).add(channel)
        for url, connection in list(self._connections.items()):
            if url not in placed:
                connection.close()
                del self._connections[url]
        for url, channels in placed.items():
            connection = self._connections.get(url) or await self._open(url)
            stale = connection.channels - channels
            if stale:
                await self._call(connection, "SUNSUBSCRIBE", stale)
                connection.channels -= stale
            missing = channels - connection.channels
            if missing:
                await self._call(connection, "SSUBSCRIBE", missing)
                connection.channels |= missing

    async def _open(self, url: str) -> ShardConnection:
        holder: list[ShardConnection] = []
        protocol = await connect(
            url, self._on_item, on_push=lambda item: self._on_push(holder, item)
        )
        name = f"the shard subscriber on {without_password(url)}"
        liveness = Liveness(protocol, self._bounds, name, self._rates.get(url, 0.0))
        connection = ShardConnection(url, liveness)
        holder.append(connection)
        self._connections[url] = connection
        if self._client_name:
            await asyncio.wait_for(protocol.call("CLIENT", "SETNAME", self._client_name), 10)
        return connection

    async def _call(self, connection: ShardConnection, command: str, channels: set[str]) -> None:
        """One command per channel: on a Cluster, channels of different slots may not share
        one SSUBSCRIBE. A ``-MOVED`` answer raises (the map is read again)."""
        calls = [connection.protocol.call(command, name) for name in sorted(channels)]
        for answers in await asyncio.wait_for(asyncio.gather(*calls), 10):
            for answer in answers:
                if (
                    command == "SSUBSCRIBE"
                    and isinstance(answer, list)
                    and answer[:1] != [b"ssubscribe"]
                ):
                    self._on_push([connection], answer)  # a push that came before the reply

    def _on_item(self, pattern: bytes | None, channel: bytes, body: bytes) -> None:
        self._on_message(channel, body)  # looked up per message: see deliver_to

    def _on_push(self, holder: list[ShardConnection], item: list[object]) -> None:
        """Redis dropped a subscription by itself (its slot moved): subscribe it again."""
        if not holder or len(item) < 2 or item[0] != b"sunsubscribe":
            return
        name = item[1].decode() if isinstance(item[1], bytes) else str(item[1])
        connection = holder[0]
        if name in connection.channels and name in self._wanted:
            connection.channels.discard(name)
            log.warning("Redis moved shard channel %r; subscribing it again", name)
            self._map = None
            self._changed.set()
