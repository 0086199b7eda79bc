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
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from sio_cluster.common.redis.topology import ShardMap, Topology
from sio_cluster.master.pubsub.resp import SubscriberError, SubscriberProtocol, connect
from sio_cluster.master.pubsub.source import HEALTH_INTERVAL, backoff_delays

log = logging.getLogger(__name__)

ShardHandler = Callable[[bytes, bytes], None]  # channel, body


class ShardConnection:
    """One subscriber connection to one node and the channels subscribed on it."""

    def __init__(self, url: str, protocol: SubscriberProtocol) -> None:
        self.url = url
        self.protocol = protocol
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
    ) -> None:
        self._topology = topology
        self._on_message: ShardHandler = lambda channel, body: None
        self._on_subscribed = on_subscribed
        self._client_name = client_name
        self._wanted: set[str] = set()
        self._connections: dict[str, ShardConnection] = {}
        self._map: ShardMap | None = None
        self._changed = asyncio.Event()
        self.connected = False

    def deliver_to(self, handler: ShardHandler) -> None:
        """Where every message goes: ``handler(channel, body)``, in the reading tick."""
        self._on_message = handler

    def connections(self) -> int:
        """Open subscriber connections now (at most one per primary)."""
        return sum(c.alive for c in self._connections.values())

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
        outage = False
        try:
            while True:
                self._changed.clear()
                try:
                    await self._reconcile()
                except (SubscriberError, OSError, TimeoutError) as exc:
                    if not outage:
                        log.error("sharded subscriber lost (%s); subscribing again", exc)
                        outage = True
                    self._map = None
                    self.connected = False
                    await asyncio.sleep(next_delay())
                    continue
                if not self.connected:
                    if outage:
                        log.warning(
                            "Redis is back: %d shard channels subscribed again", len(self._wanted)
                        )
                    else:
                        log.info("subscribed to %d shard channels", len(self._wanted))
                    self.connected = True
                    self._on_subscribed()
                outage = False
                next_delay = backoff_delays(cap=self._topology.reconnect_cap)
                await self._wait_for_change()
        finally:
            for connection in self._connections.values():
                connection.close()
            self._connections.clear()
            self.connected = False

    async def _wait_for_change(self) -> None:
        """Until a channel is added or removed, a connection drops, or one is mute."""
        while not self._changed.is_set():
            closed: list[asyncio.Future[Any]] = [
                c.protocol.closed for c in self._connections.values()
            ]
            changed = asyncio.ensure_future(self._changed.wait())
            await asyncio.wait(
                [changed, *closed], timeout=HEALTH_INTERVAL, return_when=asyncio.FIRST_COMPLETED
            )
            changed.cancel()
            if any(future.done() for future in closed):
                self._map = None  # a node went away: its slots may be elsewhere now
                self._changed.set()
            self._check_health()

    def _check_health(self) -> None:
        now = time.monotonic()
        for connection in self._connections.values():
            quiet = now - connection.protocol.last_read
            if quiet > HEALTH_INTERVAL * 2:
                connection.close()  # mute: dropped, and repaired by the next reconcile
            elif quiet > HEALTH_INTERVAL:
                connection.protocol.send("PING")

    async def _reconcile(self) -> None:
        """Subscribe what is wanted where it is served; drop what is not."""
        for url, connection in list(self._connections.items()):
            if not connection.alive:
                del self._connections[url]
                self._map = None
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
        connection = ShardConnection(url, protocol)
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
