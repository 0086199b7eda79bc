"""The cleanup's per-key form, for a Redis Cluster (no script may span the legacy keys).

Per batch of candidate keys, in round trips: the owners (one HMGET of ``P:owners``) and
the members of every candidate (SMEMBERS: a socket set holds its own id, a room set does
not); the heartbeat (EXISTS ``P:node:<id>``) of each distinct owner; then, for each stale
socket, SREM from each room it names (counting memberships and emptied rooms as the
``CLEAN_BATCH`` script does), then the DEL of its set, then the HDEL of its owner entry,
so a run cut short leaves a socket set that still names its rooms, or an owner entry alone.

What the script's atomicity excluded and this form must repair: a node presumed dead
(its heartbeat expired) that comes back while its sockets are being removed. Coming back,
the node finds its heartbeat key gone (SET XX fails), SETs the key again and only then
rewrites all its live sockets (:meth:`legacy_store.socket_store.SocketStore._resync`);
deletes of this batch may land after some of those writes. So once a batch's deletes are
complete, the heartbeats of the owners whose sockets it removed are checked again
(:meth:`SlotCleanup.recheck`), and the key of every owner found alive is DELeted: that
node's next heartbeat (SET XX) fails and it writes its whole state again.

Why that converges: the deletes completed before the recheck began. If the node's SET came
before the recheck, the recheck sees the key and deletes it, so the node resyncs once more,
after the recheck; if the SET came after the recheck, all the writes of that resync come
after it too, hence after the deletes. Either way the node's last resync follows every
delete of this batch; a later batch that finds the node dead again (its key deleted, the
resync not yet begun) repeats the same check after its own deletes. A key absent at the
recheck needs nothing: a live node whose key is absent resyncs on its next heartbeat.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any, NamedTuple

import redis.asyncio as aioredis

from sio_cluster.legacy_store.schema import Schema
from sio_cluster.legacy_store.writes import pipelined, text

log = logging.getLogger(__name__)

Candidate = tuple[str, tuple[str, str]]  # key, (room key prefix, id)


class Removed(NamedTuple):
    """One stale socket removed (or, in a dry run, to remove): ``CLEAN_BATCH``'s answer."""

    key: str
    memberships: int  # rooms it was taken out of
    existed: int  # 1 if its socket set existed (0: an owner entry alone)
    emptied: int  # rooms left empty, so deleted by Redis
    owned: int  # 1 if it had an owner entry
    owner: str  # that owner's node id, or ""


class Stale(NamedTuple):
    key: str
    sid: str
    room_prefix: str
    rooms: list[str]
    existed: bool
    owner: str


class SlotCleanup:
    """Reads and removes per key; see the module docstring."""

    def __init__(self, redis: aioredis.Redis, schema: Schema, dry_run: bool) -> None:
        self.redis = redis
        self.schema = schema
        self.dry_run = dry_run

    async def socket_keys(self, pattern: str, count: int) -> AsyncIterator[list[str]]:
        """redis-py's Cluster ``scan_iter`` SCANs every primary, each with its own cursor
        (from 5.0.2, the lowest version supported, on); its keys are cut into batches."""
        keys: list[str] = []
        async for key in self.redis.scan_iter(match=pattern, count=count, _type="SET"):
            keys.append(text(key))
            if len(keys) >= count:
                yield keys
                keys = []
        yield keys

    async def clean(self, candidates: list[Candidate]) -> tuple[list[Removed], set[str]]:
        """The three steps below, as one batch."""
        stale = await self.stale(candidates)
        if not stale:
            return [], set()
        removed = await self.remove(stale)
        if self.dry_run:
            return removed, set()
        return removed, await self.recheck({s.owner for s in stale if s.owner})

    async def stale(self, candidates: list[Candidate]) -> list[Stale]:
        """The candidates that are sockets (not room sets) of no live node."""
        keys = [key for key, _ in candidates]

        def read(pipe: Any) -> None:
            pipe.hmget(self.schema.owners_key, keys)
            for key in keys:
                pipe.smembers(key)

        owner_replies, *member_replies = await pipelined(self.redis, read)
        owners = ["" if owner is None else text(owner) for owner in owner_replies]
        alive = await self._alive({owner for owner in owners if owner})
        stale = []
        for (key, (prefix, sid)), owner, replies in zip(
            candidates, owners, member_replies, strict=True
        ):
            members = {text(m) for m in replies}
            existed = bool(members)  # Redis deletes a set with its last member
            if (owner and alive[owner]) or (existed and sid not in members):
                continue  # a live socket, or a room set
            if existed or owner:
                stale.append(Stale(key, sid, prefix, sorted(members - {sid}), existed, owner))
        return stale

    async def remove(self, stale: list[Stale]) -> list[Removed]:
        """Out of its rooms, then the set, then the owner entry of each stale socket.

        A real run counts what its own commands removed (a socket removed by a cleanup
        running at the same time is counted by that one); a dry run counts what it read.
        """
        counts = await self._leave_rooms(stale)
        if self.dry_run:
            return [
                Removed(s.key, members, int(s.existed), emptied, int(bool(s.owner)), s.owner)
                for s, (members, emptied) in zip(stale, counts, strict=True)
            ]

        def delete_sets(pipe: Any) -> None:
            for s in stale:
                pipe.delete(s.key)

        def delete_owner_entries(pipe: Any) -> None:
            for s in stale:
                pipe.hdel(self.schema.owners_key, s.key)

        deleted = await pipelined(self.redis, delete_sets)
        owned = await pipelined(self.redis, delete_owner_entries)
        return [
            Removed(s.key, members, int(existed), emptied, int(entry), s.owner)
            for s, (members, emptied), existed, entry in zip(
                stale, counts, deleted, owned, strict=True
            )
        ]

    async def _alive(self, owners: set[str]) -> dict[str, bool]:
        nodes = sorted(owners)

        def read(pipe: Any) -> None:
            for node in nodes:
                pipe.exists(self.schema.node_key(node))

        return dict(zip(nodes, map(bool, await pipelined(self.redis, read)), strict=True))

    async def _leave_rooms(self, stale: list[Stale]) -> list[tuple[int, int]]:
        """Per stale socket: (memberships, rooms emptied), counted as ``CLEAN_BATCH`` does.

        Per key, redis-py keeps the order, so two stale sockets of one room are counted
        as the script counts them one after the other.
        """

        def queue(pipe: Any) -> None:
            for s in stale:
                for room in s.rooms:
                    if self.dry_run:
                        pipe.sismember(s.room_prefix + room, s.sid)
                        pipe.scard(s.room_prefix + room)
                    else:
                        pipe.srem(s.room_prefix + room, s.sid)
                        pipe.exists(s.room_prefix + room)

        replies = iter(await pipelined(self.redis, queue) if any(s.rooms for s in stale) else [])
        counts = []
        for s in stale:
            memberships = emptied = 0
            for _ in s.rooms:
                member, left = int(next(replies)), int(next(replies))
                memberships += member
                emptied += member and left == (1 if self.dry_run else 0)
            counts.append((memberships, emptied))
        return counts

    async def recheck(self, owners: set[str]) -> set[str]:
        """After the deletes: the owners found alive again are made to resync."""
        alive = await self._alive(owners)
        back = sorted(node for node, is_alive in alive.items() if is_alive)
        if back:

            def delete(pipe: Any) -> None:
                for node in back:
                    pipe.delete(self.schema.node_key(node))

            await pipelined(self.redis, delete)
        for node in back:
            log.warning(
                "node %s is alive again while its sockets were being removed: "
                "its heartbeat key is deleted, so it writes its sockets back",
                node,
            )
        return set(back)
