"""How the socket store's changes reach Redis: one transaction per batch, or per key.

On one Redis (or the primary Sentinel names), :class:`TransactionWrites` writes a batch in
ONE MULTI/EXEC and a disconnect runs the ``DISCONNECT`` Lua script: every batch is atomic,
and a disconnect reads the socket's rooms and leaves them with no read-then-write race.

On a Redis Cluster the legacy key names (kept exactly, existing tools read them) hash to
different slots, so there is no MULTI/EXEC across them and no script may touch several.
:class:`SlotWrites` writes the batch per key instead, through non-transactional Cluster
pipelines (redis-py sends each node its commands in order), in phases that keep what the
cleanup relies on:

A. the owner entries (``HSET P:owners``) of the sockets the batch connects, first and in a
   round trip of their own: a socket set never exists without its owner entry, or a
   concurrent cleanup would take a live socket for one of no known node;
B. the batch's set changes, reduced to their net effect (:func:`slot_plan`), and the
   members (SMEMBERS) of every socket set being removed;
C. the removed sockets taken out of the rooms read in B; then their socket sets deleted;
   then their owner entries. A removal cut short by a failure leaves a socket set that
   still names its rooms, or an owner entry alone, for the next resync or cleanup to
   finish; and at no moment does a socket set exist without its owner entry.

Why the net effect: each change sets one member of one set present or absent, so only the
last change of each (key, member) pair matters, and a batch reduced to one command per pair
may be sent again whole or in part, in any order, with the same result. That matters
because redis-py's Cluster pipeline retries after a connection error by sending again every
command whose reply was an error or falsy (a 0 from SADD or SREM included), out of order
with the commands it does not resend. The sockets of one sid come from this master only,
in order, and sids are unique, so a disconnect is the last change of its socket: reading
its set in B (after the previous batches, which are complete) and removing in C gives the
end state the Lua script gives.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from sio_cluster.legacy_store.lua import DISCONNECT
from sio_cluster.legacy_store.schema import Schema

Op = tuple[str, str, str, Hashable]  # kind, namespace, sid, room
Socket = tuple[str, str, str]  # socket key, sid, room key prefix
REMOVE_CHUNK = 500


def is_cluster_client(redis: Any) -> bool:
    """Whether ``redis`` is redis-py's asyncio Cluster client (the store's writes differ)."""
    return isinstance(redis, RedisCluster)


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class Writes(Protocol):
    """Writes the store's changes in the form its Redis allows."""

    async def apply(self, ops: Sequence[Op]) -> None:
        """Write one batch of changes (connect, join, leave, disconnect), in order."""
        ...

    async def remove(self, sockets: Sequence[Socket]) -> None:
        """Remove these sockets: from their rooms, then their sets and owner entries."""
        ...


def writes_for(redis: aioredis.Redis, schema: Schema, node_id: str, cluster: bool) -> Writes:
    if cluster:
        return SlotWrites(redis, schema, node_id)
    return TransactionWrites(redis, schema, node_id)


class TransactionWrites:
    """One Redis or Sentinel: a batch in one MULTI/EXEC, a disconnect in one Lua script."""

    def __init__(self, redis: aioredis.Redis, schema: Schema, node_id: str) -> None:
        self._redis = redis
        self.schema = schema
        self.node_id = node_id
        self._disconnect = redis.register_script(DISCONNECT)

    async def apply(self, ops: Sequence[Op]) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            for op in ops:
                await self._add_op(pipe, op)
            await pipe.execute()

    async def _add_op(self, pipe: Any, op: Op) -> None:
        kind, namespace, sid, room = op
        socket_key = self.schema.socket_key(namespace, sid)
        if kind == "connect":
            pipe.sadd(socket_key, sid)
            pipe.hset(self.schema.owners_key, socket_key, self.node_id)
        elif kind == "join":
            pipe.sadd(self.schema.room_key(namespace, str(room)), sid)
            pipe.sadd(socket_key, str(room))
        elif kind == "leave":
            pipe.srem(self.schema.room_key(namespace, str(room)), sid)
            pipe.srem(socket_key, str(room))
        else:
            await self._disconnect(
                keys=[socket_key, self.schema.owners_key],
                args=[sid, self.schema.room_prefix(namespace)],
                client=pipe,
            )

    async def remove(self, sockets: Sequence[Socket]) -> None:
        for key, sid, prefix in sockets:
            await self._disconnect(keys=[key, self.schema.owners_key], args=[sid, prefix])


@dataclass
class SlotPlan:
    """The net effect of a batch: what each phase of :class:`SlotWrites` sends."""

    connected: set[str] = field(default_factory=set)  # socket keys: owner entries (A)
    added: dict[str, set[str]] = field(default_factory=dict)  # key -> members to SADD (B)
    removed: dict[str, set[str]] = field(default_factory=dict)  # key -> members to SREM (B)
    gone: list[Socket] = field(default_factory=list)  # disconnected: read in B, removed in C


def slot_plan(ops: Iterable[Op], schema: Schema) -> SlotPlan:
    """Reduce a batch to the last change of each (key, member) pair.

    A disconnect drops every change of its sid still pending in the batch: what the
    previous batches wrote is read back (SMEMBERS) and removed, which covers all of it.
    """
    present: dict[tuple[str, str], bool] = {}  # (key, member) -> SADD (True) or SREM
    pairs_of: dict[str, list[tuple[str, str]]] = {}  # socket key -> its pending pairs
    plan = SlotPlan()
    for kind, namespace, sid, room in ops:
        socket_key = schema.socket_key(namespace, sid)
        pairs = pairs_of.setdefault(socket_key, [])
        if kind == "disconnect":
            for pair in pairs:
                present.pop(pair, None)
            pairs.clear()
            plan.connected.discard(socket_key)
            plan.gone.append((socket_key, sid, schema.room_prefix(namespace)))
            continue
        if kind == "connect":
            plan.connected.add(socket_key)
            changes = [(socket_key, sid)]
        else:
            changes = [(schema.room_key(namespace, str(room)), sid), (socket_key, str(room))]
        for pair in changes:
            present[pair] = kind != "leave"
            pairs.append(pair)
    for (key, member), add in present.items():
        (plan.added if add else plan.removed).setdefault(key, set()).add(member)
    return plan


class SlotWrites:
    """A Redis Cluster: per key, in the phases of the module docstring."""

    def __init__(self, redis: aioredis.Redis, schema: Schema, node_id: str) -> None:
        self._redis = redis
        self.schema = schema
        self.node_id = node_id

    async def apply(self, ops: Sequence[Op]) -> None:
        plan = slot_plan(ops, self.schema)
        if plan.connected:
            owners = [part for key in plan.connected for part in (key, self.node_id)]
            await self._redis.hset(self.schema.owners_key, items=owners)

        def phase_b(pipe: Any) -> None:
            for key, members in plan.added.items():
                pipe.sadd(key, *members)
            for key, members in plan.removed.items():
                pipe.srem(key, *members)
            for key, _, _ in plan.gone:
                pipe.smembers(key)

        replies = await self._send(phase_b)
        if plan.gone:
            await self._remove_read(plan.gone, replies[-len(plan.gone) :])

    async def remove(self, sockets: Sequence[Socket]) -> None:
        for start in range(0, len(sockets), REMOVE_CHUNK):
            chunk = sockets[start : start + REMOVE_CHUNK]

            def read(pipe: Any, chunk: Sequence[Socket] = chunk) -> None:
                for key, _, _ in chunk:
                    pipe.smembers(key)

            await self._remove_read(chunk, await self._send(read))

    async def _remove_read(self, sockets: Sequence[Socket], members: Sequence[Any]) -> None:
        """Phase C: out of the rooms their sets name, then the sets, then the owner entries."""
        leaving: dict[str, set[str]] = {}  # room key -> sids to SREM
        for (_, sid, prefix), rooms in zip(sockets, members, strict=True):
            for room in map(text, rooms):
                if room != sid:
                    leaving.setdefault(prefix + room, set()).add(sid)

        def leave(pipe: Any) -> None:
            for room_key, sids in leaving.items():
                pipe.srem(room_key, *sids)

        if leaving:
            await self._send(leave)

        def delete(pipe: Any) -> None:
            for key, _, _ in sockets:
                pipe.delete(key)

        await self._send(delete)
        await self._redis.hdel(self.schema.owners_key, *(key for key, _, _ in sockets))

    async def _send(self, queue: Callable[[Any], None]) -> list[Any]:
        return await pipelined(self._redis, queue)


async def pipelined(redis: aioredis.Redis, queue: Callable[[Any], None]) -> list[Any]:
    """The replies to the commands ``queue`` adds to one non-transactional pipeline."""
    async with redis.pipeline(transaction=False) as pipe:
        queue(pipe)
        return list(await pipe.execute())
