"""Safe removal of stale socket keys: the logic behind ``scripts/cleanup.py``.

A socket set (``P#<id>`` holding ``<id>``) is stale when its owner in ``P:owners``
is missing or its owner's heartbeat ``P:node:<id>`` has expired. Keys are read
with SCAN (never KEYS) in batches. On one Redis (or Sentinel's primary) each batch
goes to the ``CLEAN_BATCH`` Lua script, which decides and removes atomically inside
Redis: a socket of a live node is never touched, even if that node connects, joins
and leaves while the cleanup runs. Doing the checks server-side costs one round trip
per batch instead of several commands per key. On a Redis Cluster, whose slots the
legacy keys span, no script may do that: :mod:`legacy_store.slot_cleanup` decides and
removes per key, and repairs the one race the script excluded. Every step is
idempotent, so the cleanup can be re-run, or run twice at once, safely.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import redis.asyncio as aioredis

from sio_cluster.legacy_store.lua import CLEAN_BATCH
from sio_cluster.legacy_store.schema import Schema
from sio_cluster.legacy_store.slot_cleanup import Candidate, Removed, SlotCleanup
from sio_cluster.legacy_store.writes import is_cluster_client, text

Progress = Callable[[int, int], None]  # keys scanned, estimated total


@dataclass
class CleanupReport:
    """What a run found and removed (or, in a dry run, would remove).

    ``nodes_resynced`` counts the nodes found alive again after their sockets were
    removed (Redis Cluster only, see :mod:`legacy_store.slot_cleanup`): their heartbeat
    key was deleted, so they write their whole state back.
    """

    dry_run: bool
    live_nodes: int = 0
    dead_nodes: int = 0
    keys_scanned: int = 0
    stale_sockets: int = 0
    memberships_removed: int = 0
    keys_deleted: int = 0
    owner_entries_removed: int = 0
    nodes_resynced: int = 0
    dead_node_ids: set[str] = field(default_factory=set)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["dead_node_ids"] = sorted(self.dead_node_ids)
        return data


class CleanupForm(Protocol):
    """How a run reads the socket keys and removes the stale ones of a batch."""

    def socket_keys(self, pattern: str, count: int) -> AsyncIterator[list[str]]:
        """Every socket and room set, in batches (the last one possibly empty)."""
        ...

    async def clean(self, candidates: list[Candidate]) -> tuple[list[Removed], set[str]]:
        """Remove the stale sockets among ``candidates`` (or, in a dry run, only count
        them); and the ids of the nodes made to resync."""
        ...


class ScriptCleanup:
    """One Redis or Sentinel: SCAN with one cursor; ``CLEAN_BATCH`` decides and removes."""

    def __init__(self, redis: aioredis.Redis, schema: Schema, dry_run: bool) -> None:
        self.redis = redis
        self.schema = schema
        self.dry_run = dry_run
        self._script = redis.register_script(CLEAN_BATCH)

    async def socket_keys(self, pattern: str, count: int) -> AsyncIterator[list[str]]:
        cursor = 0
        while True:
            cursor, keys = await self.redis.scan(cursor, match=pattern, count=count, _type="SET")
            yield [text(k) for k in keys]
            if cursor == 0:
                break

    async def clean(self, candidates: list[Candidate]) -> tuple[list[Removed], set[str]]:
        args: list[str] = [self.schema.node_key_prefix, "1" if self.dry_run else "0"]
        for _, (room_prefix, sid) in candidates:
            args += [sid, room_prefix]
        results = await self._script(
            keys=[self.schema.owners_key, *(key for key, _ in candidates)], args=args
        )
        removed = [
            Removed(text(key), memberships, existed, emptied, owned, text(owner))
            for key, memberships, existed, emptied, owned, owner in results
        ]
        return removed, set()


class Cleanup:
    """One cleanup run against one Redis or one Redis Cluster.

    ``cluster`` picks the per-key form (:class:`SlotCleanup`); by default it is used
    when ``redis`` is a Cluster client.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        schema: Schema,
        dry_run: bool = False,
        batch: int = 1000,
        cluster: bool | None = None,
    ) -> None:
        self.redis = redis
        self.schema = schema
        self.batch = batch
        self.report = CleanupReport(dry_run=dry_run)
        if is_cluster_client(redis) if cluster is None else cluster:
            self._form: CleanupForm = SlotCleanup(redis, schema, dry_run)
        else:
            self._form = ScriptCleanup(redis, schema, dry_run)
        self._counted: set[str] = set()  # dry runs only: SCAN may return a key twice
        self._resynced: set[str] = set()

    async def run(self, progress: Progress | None = None) -> CleanupReport:
        """Scan every socket key, then the owners hash; remove what is stale."""
        head = self.schema.node_key_prefix
        async for _ in self.redis.scan_iter(match=head + "*", count=1000):
            self.report.live_nodes += 1
        total = int(await self.redis.dbsize())
        async for keys in self._form.socket_keys(self.schema.scan_pattern, self.batch):
            await self._clean(keys)
            self.report.keys_scanned += len(keys)
            if progress is not None:
                progress(self.report.keys_scanned, total)
        if progress is not None:
            # DBSIZE counted every key, SCAN returned the sets only: the scan is complete
            progress(self.report.keys_scanned, self.report.keys_scanned)
        await self._clean_owner_entries()
        self.report.dead_nodes = len(self.report.dead_node_ids)
        self.report.nodes_resynced = len(self._resynced)
        return self.report

    async def _clean_owner_entries(self) -> None:
        """Owner entries left without a socket set (for example by a crash mid-write)."""
        keys: list[str] = []
        async for key, _ in self.redis.hscan_iter(self.schema.owners_key, count=self.batch):
            keys.append(text(key))
            if len(keys) >= self.batch:
                await self._clean(keys, only_missing=True)
                keys = []
        await self._clean(keys, only_missing=True)

    async def _clean(self, keys: list[str], only_missing: bool = False) -> None:
        candidates = [(key, split) for key in keys if (split := self.schema.split(key))]
        if only_missing and candidates:
            # a socket set that exists was judged by the key scan; don't count it twice
            async with self.redis.pipeline(transaction=False) as pipe:
                for key, _ in candidates:
                    pipe.exists(key)
                found = await pipe.execute()
            candidates = [c for c, exists in zip(candidates, found, strict=True) if not exists]
        if not candidates:
            return
        removed, resynced = await self._form.clean(candidates)
        self._resynced |= resynced
        for key, memberships, existed, emptied, owned, owner in removed:
            if self.report.dry_run:
                if key in self._counted:
                    continue
                self._counted.add(key)
            self.report.stale_sockets += existed
            self.report.memberships_removed += memberships
            self.report.keys_deleted += existed + emptied
            self.report.owner_entries_removed += owned
            if owner:
                self.report.dead_node_ids.add(owner)
