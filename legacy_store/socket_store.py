"""The master's writer of the set-based socket/room store (``--store``).

The master already learns every connect, join, leave and disconnect of its
workers' sockets; this module mirrors them into the legacy key schema
(:mod:`legacy_store.schema`) for tools that read it, and keeps the node's
liveness so stale keys can be told from live ones.

Why a queue and batches: the routing hot path must never wait on Redis. Changes
are queued synchronously in a :class:`common.outbox.Outbox` and written by one
task, up to 500 changes a batch, in the form the Redis allows
(:mod:`legacy_store.writes`): on one Redis or Sentinel each batch is ONE MULTI/EXEC
(so every join/leave updates both the room set and the socket set atomically,
and a disconnect runs the atomic Lua script); on a Redis Cluster, whose slots the
legacy keys span, it is written per key in ordered phases. Why a full resync: when
a write fails, or the heartbeat finds its key gone (Redis restarted, or the node was
presumed dead and cleaned), queued changes are no longer a reliable delta; the
master's routing table is the truth, so the whole live state is written back
and this node's leftovers are removed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Hashable, Iterable
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from sio_cluster.common.outbox import Outbox
from sio_cluster.legacy_store.schema import Schema
from sio_cluster.legacy_store.writes import Op, Socket, is_cluster_client, writes_for

log = logging.getLogger(__name__)

LiveSockets = Callable[[], Iterable[tuple[str, str, list[Hashable]]]]
MAX_QUEUED = 100_000  # beyond this a full resync is cheaper than the backlog
RESYNC_CHUNK = 500
RETRY_DELAY = 1.0

RESYNC: Op = ("resync", "", "", None)


class MembershipStore(Protocol):
    """What the master tells a store about its sockets (``--store``, or nothing)."""

    def join(self, namespace: str, sid: str, room: Hashable) -> None: ...

    def leave(self, namespace: str, sid: str, room: Hashable) -> None: ...

    async def run(self) -> None: ...

    async def close(self) -> None: ...


class NoStore:
    """The master's store without ``--store``: membership is kept nowhere but in memory."""

    def join(self, namespace: str, sid: str, room: Hashable) -> None:
        pass

    def leave(self, namespace: str, sid: str, room: Hashable) -> None:
        pass

    async def run(self) -> None:
        pass

    async def close(self) -> None:
        pass


class SocketStore:
    """Mirrors the master's sockets into Redis and keeps its heartbeat alive.

    ``cluster`` picks the per-key writes of a Redis Cluster; by default they are used
    when ``redis`` is a Cluster client.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        schema: Schema,
        node_id: str,
        ttl: float,
        live_sockets: LiveSockets,
        cluster: bool | None = None,
    ) -> None:
        self._redis = redis
        self._writes = writes_for(
            redis, schema, node_id, is_cluster_client(redis) if cluster is None else cluster
        )
        self.schema = schema
        self.node_id = node_id
        self._ttl = ttl
        self._live_sockets = live_sockets
        self._ops: Outbox[Op] = Outbox(
            "the socket store",
            self._write,
            limit=MAX_QUEUED,
            overflow="newest",
            keep_on_failure=False,
            on_failure=self._write_failed,
            batch=RESYNC_CHUNK,
            retry_delay=RETRY_DELAY,
        )
        self._dirty = False
        self._mark_dirty()  # the first write is the heartbeat and the (empty) state
        self._info = json.dumps(
            {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}
        )

    # ---- called on the routing hot path (synchronous, never blocks) -----------

    def _queue(self, op: Op) -> None:
        if self._dirty:
            return  # the pending resync will write the current state anyway
        if not self._ops.put(op):
            log.warning("store backlog over %d changes; a full resync replaces it", MAX_QUEUED)
            self._mark_dirty()

    def join(self, namespace: str, sid: str, room: Hashable) -> None:
        """A membership change reported by a worker; ``None`` means connected."""
        if room is None:
            self._queue(("connect", namespace, sid, None))
        elif room != sid:
            self._queue(("join", namespace, sid, room))

    def leave(self, namespace: str, sid: str, room: Hashable) -> None:
        """A membership ended; ``None`` means the socket disconnected."""
        if room is None:
            self._queue(("disconnect", namespace, sid, None))
        elif room != sid:
            self._queue(("leave", namespace, sid, room))

    def _mark_dirty(self) -> None:
        """Queued changes are no longer a reliable delta: write the whole state instead."""
        self._dirty = True
        self._ops.clear()
        self._ops.put(RESYNC)

    def _write_failed(self, exc: Exception) -> None:
        """The outbox logged it; what was queued is no longer a reliable delta."""
        self._mark_dirty()

    # ---- the writer task -------------------------------------------------------

    async def run(self) -> None:
        """Write queued changes, resync when needed, refresh the heartbeat; forever."""
        log.info("store: node %s, keys %s#...", self.node_id, self.schema.prefix)
        heartbeat = asyncio.create_task(self._heartbeat())
        try:
            await self._ops.run()
        finally:
            heartbeat.cancel()

    async def _write(self, ops: list[Op]) -> None:
        if ops[0] is RESYNC:
            await self._resync()
            ops = ops[1:]
        if ops:
            await self._writes.apply(ops)

    async def _heartbeat(self) -> None:
        key = self.schema.node_key(self.node_id)
        while True:
            await asyncio.sleep(self._ttl / 3)
            if self._dirty:
                continue
            try:
                refreshed = await self._redis.set(key, self._info, ex=int(self._ttl), xx=True)
            except (RedisError, OSError) as exc:
                log.warning("store heartbeat failed: %s", exc)
                continue
            if not refreshed:
                log.warning("this node's heartbeat key was gone; writing its sockets back")
                self._mark_dirty()

    async def _resync(self) -> None:
        """Write the whole live state, then remove this node's keys that are not live."""
        self._dirty = False
        snapshot = list(self._live_sockets())
        await self._redis.set(self.schema.node_key(self.node_id), self._info, ex=int(self._ttl))
        live_keys: set[str] = set()
        for start in range(0, len(snapshot), RESYNC_CHUNK):
            ops: list[Op] = []
            for namespace, sid, rooms in snapshot[start : start + RESYNC_CHUNK]:
                live_keys.add(self.schema.socket_key(namespace, sid))
                ops.append(("connect", namespace, sid, None))
                ops.extend(("join", namespace, sid, room) for room in rooms)
            await self._writes.apply(ops)
        await self._remove_owned(keep=live_keys)
        if snapshot:
            log.info("store: wrote %d live sockets", len(snapshot))

    async def _remove_owned(self, keep: set[str]) -> int:
        """Remove every socket this node owns in Redis except those in ``keep``."""
        stale = []
        async for key, owner in self._redis.hscan_iter(self.schema.owners_key, count=1000):
            if owner.decode() == self.node_id and key.decode() not in keep:
                stale.append(key.decode())
        sockets: list[Socket] = []
        for key in stale:
            split = self.schema.split(key)
            if split is not None:
                prefix, sid = split
                sockets.append((key, sid, prefix))
        await self._writes.remove(sockets)
        return len(stale)

    async def close(self) -> None:
        """Graceful stop: remove every key of this node (what is still queued concerns
        those keys only, so it is not written first)."""
        try:
            await self._remove_owned(keep=set())
            await self._redis.delete(self.schema.node_key(self.node_id))
            log.info("store: removed this node's keys")
        except (RedisError, OSError) as exc:
            log.warning("store: could not remove this node's keys (%s); cleanup will", exc)
