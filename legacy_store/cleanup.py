"""Safe removal of stale socket keys: the logic behind ``scripts/cleanup.py``.

A socket set (``P#<id>`` holding ``<id>``) is stale when its owner in ``P:owners``
is missing or its owner's heartbeat ``P:node:<id>`` has expired. Keys are read
with SCAN (never KEYS) in batches; each batch goes to the ``CLEAN_BATCH`` Lua
script, which decides and removes atomically inside Redis: a socket of a live
node is never touched, even if that node connects, joins and leaves while the
cleanup runs. Doing the checks server-side costs one round trip per batch
instead of several commands per key. Every step is idempotent, so the cleanup
can be re-run, or run twice at once, safely.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import redis.asyncio as aioredis

from legacy_store.lua import CLEAN_BATCH
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
        self._script = redis.register_script(CLEAN_BATCH)
        self._counted: set[str] = set()  # dry runs only: SCAN may return a key twice

    async def run(self, progress: Progress | None = None) -> CleanupReport:
        """Scan every socket key, then the owners hash; remove what is stale."""
        head = self.schema.node_key_prefix
        async for _ in self.redis.scan_iter(match=head + "*", count=1000):
            self.report.live_nodes += 1
        total = int(await self.redis.dbsize())
        cursor = 0
        while True:
            cursor, keys = await self.redis.scan(
                cursor, match=self.schema.scan_pattern, count=self.batch, _type="SET"
            )
            await self._clean([_text(k) for k in keys])
            self.report.keys_scanned += len(keys)
            if progress is not None:
                progress(self.report.keys_scanned, total)
            if cursor == 0:
                break
        await self._clean_owner_entries()
        self.report.dead_nodes = len(self.report.dead_node_ids)
        return self.report

    async def _clean_owner_entries(self) -> None:
        """Owner entries left without a socket set (for example by a crash mid-write)."""
        keys: list[str] = []
        async for key, _ in self.redis.hscan_iter(self.schema.owners_key, count=self.batch):
            keys.append(_text(key))
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
        args: list[str] = [self.schema.node_key_prefix, "1" if self.report.dry_run else "0"]
        for _, (room_prefix, sid) in candidates:
            args += [sid, room_prefix]
        results = await self._script(
            keys=[self.schema.owners_key, *(key for key, _ in candidates)], args=args
        )
        for key, memberships, existed, emptied, owned, owner in results:
            key = _text(key)
            if self.report.dry_run:
                if key in self._counted:
                    continue
                self._counted.add(key)
            self.report.stale_sockets += existed
            self.report.memberships_removed += memberships
            self.report.keys_deleted += existed + emptied
            self.report.owner_entries_removed += owned
            if owner:
                self.report.dead_node_ids.add(_text(owner))
