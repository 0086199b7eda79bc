"""Safe removal of stale socket keys: the logic behind ``scripts/cleanup.py``.

A socket set (``P#<id>`` holding ``<id>``) is stale when its owner in ``P:owners``
is missing or its owner's heartbeat ``P:node:<id>`` has expired. Stale sockets
are removed from their rooms and deleted by the atomic ``REMOVE_IF_STALE``
script, which checks liveness again at the moment it runs: a socket of a live
node is never touched, even if that node connects, joins and leaves while the
cleanup runs. Keys are read with SCAN (never KEYS) in batches; every step is
idempotent, so the cleanup can be re-run, or run twice at once, safely.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import redis.asyncio as aioredis

from legacy_store.lua import REMOVE_IF_STALE
from legacy_store.schema import Schema

Progress = Callable[[int, int], None]  # keys scanned, estimated total


@dataclass
class CleanupReport:
    """What a run found and removed (or, in a dry run, would remove)."""

    dry_run: bool
    live_nodes: int = 0
    dead_nodes: int = 0
    keys_scanned: int = 0
    stale_sockets: int = 0
    memberships_removed: int = 0
    keys_deleted: int = 0
    owner_entries_removed: int = 0
    dead_node_ids: set[str] = field(default_factory=set)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["dead_node_ids"] = sorted(self.dead_node_ids)
        return data


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class Cleanup:
    """One cleanup run against one Redis."""

    def __init__(
        self, redis: aioredis.Redis, schema: Schema, dry_run: bool = False, batch: int = 1000
    ) -> None:
        self.redis = redis
        self.schema = schema
        self.batch = batch
        self.report = CleanupReport(dry_run=dry_run)
        self._script = redis.register_script(REMOVE_IF_STALE)
        self._alive: dict[str, bool] = {}
        self._counted: set[str] = set()  # dry runs only: SCAN may return a key twice

    async def run(self, progress: Progress | None = None) -> CleanupReport:
        """Scan every socket key, then the owners hash; remove what is stale."""
        async for key in self.redis.scan_iter(match=self.schema.node_key_prefix + "*", count=1000):
            self._alive[_text(key)[len(self.schema.node_key_prefix) :]] = True
        self.report.live_nodes = len(self._alive)
        total = int(await self.redis.dbsize())
        cursor = 0
        while True:
            cursor, keys = await self.redis.scan(
                cursor, match=self.schema.scan_pattern, count=self.batch, _type="SET"
            )
            await self._check_socket_keys([_text(k) for k in keys])
            self.report.keys_scanned += len(keys)
            if progress is not None:
                progress(self.report.keys_scanned, total)
            if cursor == 0:
                break
        await self._check_owner_entries()
        return self.report

    async def _is_alive(self, node_id: str) -> bool:
        alive = self._alive.get(node_id)
        if alive is None:
            alive = bool(await self.redis.exists(self.schema.node_key(node_id)))
            self._alive[node_id] = alive
        if not alive:
            self.report.dead_node_ids.add(node_id)
            self.report.dead_nodes = len(self.report.dead_node_ids)
        return alive

    async def _check_socket_keys(self, keys: list[str]) -> None:
        parsed = [(key, split) for key in keys if (split := self.schema.split(key)) is not None]
        if not parsed:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for key, (_, sid) in parsed:
                pipe.sismember(key, sid)
                pipe.hget(self.schema.owners_key, key)
            answers = await pipe.execute()
        candidates = []
        for i, (key, (prefix, sid)) in enumerate(parsed):
            is_socket, owner = answers[2 * i], answers[2 * i + 1]
            if not is_socket:
                continue  # a room set
            if owner is None or not await self._is_alive(_text(owner)):
                candidates.append((key, prefix, sid))
        await self._remove(candidates)

    async def _check_owner_entries(self) -> None:
        """Owner entries of dead nodes whose socket set is already gone."""
        dead: list[tuple[str, str, str]] = []
        async for key, owner in self.redis.hscan_iter(self.schema.owners_key, count=self.batch):
            split = self.schema.split(_text(key))
            if split is not None and not await self._is_alive(_text(owner)):
                dead.append((_text(key), *split))
            if len(dead) >= self.batch:
                await self._remove_ownerless(dead)
                dead = []
        await self._remove_ownerless(dead)

    async def _remove_ownerless(self, entries: list[tuple[str, str, str]]) -> None:
        if not entries:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for key, _, _ in entries:
                pipe.exists(key)
            exists = await pipe.execute()
        # entries whose socket set exists were handled by the key scan
        await self._remove([e for e, found in zip(entries, exists, strict=True) if not found])

    async def _remove(self, candidates: list[tuple[str, str, str]]) -> None:
        if not candidates:
            return
        dry = "1" if self.report.dry_run else "0"
        async with self.redis.pipeline(transaction=False) as pipe:
            for key, prefix, sid in candidates:
                await self._script(
                    keys=[key, self.schema.owners_key],
                    args=[sid, prefix, self.schema.node_key_prefix, dry],
                    client=pipe,
                )
            results = await pipe.execute()
        for (key, _, _), (memberships, existed, emptied, owned) in zip(
            candidates, results, strict=True
        ):
            if memberships < 0 or not (existed or owned):
                continue  # a live owner, or already removed by a concurrent run
            if self.report.dry_run:
                if key in self._counted:
                    continue
                self._counted.add(key)
            self.report.stale_sockets += existed
            self.report.memberships_removed += memberships
            self.report.keys_deleted += existed + emptied
            self.report.owner_entries_removed += owned
