"""The set-based store (``--store``) and its cleanup on one Redis and on a 3+3 Redis Cluster.

On each, through the same clients a master and ``sio-cleanup`` use (``topology_for``):
``--ops`` changes written through a :class:`SocketStore` (connect, two joins, a leave,
then a disconnect or a third join, per socket), timed from the first change queued to the
last one readable; a resync of ``--sockets`` sockets in 2 of 1,000 rooms each (a node
writing its whole state back); then that node stops and its heartbeat key is deleted, and
the cleanup runs as a dry run and for real, checked to remove exactly those sockets.
One Redis: MULTI/EXEC batches and the Lua scripts. Cluster: the per-key forms.

    python bench/store_cluster.py            # 20,000 changes, 20,000 stale sockets
    python bench/store_cluster.py --quick    # 2,000 and 2,000
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # python bench/...

from bench.harness import Options, markdown_table, write_json  # noqa: E402
from bench.redis_cluster import RedisCluster  # noqa: E402
from sio_cluster.common.redis.topology import topology_for  # noqa: E402
from sio_cluster.legacy_store.cleanup import Cleanup  # noqa: E402
from sio_cluster.legacy_store.schema import Schema  # noqa: E402
from sio_cluster.legacy_store.socket_store import SocketStore  # noqa: E402
from sio_cluster.master.embedded_redis import EmbeddedRedis  # noqa: E402

SCHEMA = Schema()
ROOMS = 1000
POLL = 0.002
HEADER = ["Redis", "step", "count", "seconds", "per second"]
Sockets = list[tuple[str, str, list[Hashable]]]


@asynccontextmanager
async def redis_at(kind: str) -> AsyncIterator[str]:
    """A private one-node Redis or 3+3 Cluster; its URL."""
    if kind == "one":
        server = EmbeddedRedis().start()
        try:
            yield server.url
        finally:
            server.close()
    else:
        cluster = RedisCluster()
        try:
            yield "redis+cluster://" + cluster.seeds(cluster.nodes[:1])
        finally:
            cluster.close()


async def until(check: Any) -> None:
    while not await check():
        await asyncio.sleep(POLL)


async def run_on(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    async with redis_at(kind) as url:
        topology = topology_for(url)
        commands = topology.commands(2, "bench:cmd")  # as a master's: 2 command connections
        probe = topology.commands(1, "bench:probe")
        try:
            return await measure(commands, probe, args)
        finally:
            await commands.aclose()
            await probe.aclose()
            await topology.close()


async def measure(commands: Any, probe: Any, args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    live: Sockets = []
    writer = SocketStore(commands, SCHEMA, "writer", 15, lambda: live)
    running = [asyncio.create_task(writer.run())]
    await until(lambda: probe.exists(SCHEMA.node_key("writer")))
    sockets = args.ops // 5
    started = time.perf_counter()
    for i in range(sockets):
        sid = f"w{i}"
        writer.join("/", sid, None)
        writer.join("/", sid, f"room{i % ROOMS}")
        writer.join("/", sid, f"room{(i * 7 + 3) % ROOMS}")
        writer.leave("/", sid, f"room{i % ROOMS}")
        if i % 2:
            writer.leave("/", sid, None)
        else:
            writer.join("/", sid, "last")
    last = f"w{sockets - 1 - (sockets - 1) % 2}"  # the last socket that joined "last"
    await until(lambda: probe.sismember("socket.io#last", last))
    results["store writes"] = (sockets * 5, time.perf_counter() - started)

    stale: Sockets = [
        ("/", f"d{i}", [f"room{i % ROOMS}", f"room{(i * 7 + 3) % ROOMS}"])
        for i in range(args.sockets)
    ]
    node = SocketStore(commands, SCHEMA, "dead", 15, lambda: stale)
    started = time.perf_counter()
    running.append(asyncio.create_task(node.run()))
    final_room = f"socket.io#{stale[-1][2][-1]}"
    await until(lambda: probe.sismember(final_room, stale[-1][1]))
    results["resync"] = (len(stale), time.perf_counter() - started)
    running.pop().cancel()  # the node dies: its keys stay, its heartbeat goes
    await probe.delete(SCHEMA.node_key("dead"))

    for mode in ("cleanup, dry run", "cleanup"):
        started = time.perf_counter()
        report = await Cleanup(commands, SCHEMA, dry_run=mode != "cleanup").run()
        results[mode] = (report.stale_sockets, time.perf_counter() - started)
        assert report.stale_sockets == len(stale), report
        assert report.memberships_removed == 2 * len(stale), report
        assert report.dead_node_ids == {"dead"}, report
    assert not await probe.exists(f"socket.io#d{len(stale) - 1}")
    assert await probe.hlen(SCHEMA.owners_key) == sockets - sockets // 2
    for task in running:
        task.cancel()
    await asyncio.gather(*running, return_exceptions=True)
    return {
        step: {"count": count, "seconds": round(seconds, 3), "per_s": round(count / seconds)}
        for step, (count, seconds) in results.items()
    }


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    return {kind: await run_on(kind, args) for kind in ("one", "cluster")}


def main() -> None:
    options = Options(__doc__, quick={"ops": 2_000, "sockets": 2_000})
    options.add_argument("--ops", type=int, default=20_000, help="changes written (x5)")
    options.add_argument("--sockets", type=int, default=20_000, help="stale sockets cleaned")
    args = options.parse()
    results = asyncio.run(bench(args))
    rows = []
    for kind, steps in results.items():
        for step, m in steps.items():
            label = "one Redis" if kind == "one" else "3+3 Cluster"
            rows.append([label, step, f"{m['count']:,}", m["seconds"], f"{m['per_s']:,}"])
    print(markdown_table(HEADER, rows))
    print("written to", write_json(args.out, "store_cluster", {"args": vars(args), **results}))


if __name__ == "__main__":
    main()
