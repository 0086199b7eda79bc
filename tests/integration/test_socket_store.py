"""The set-based store written by real masters (--store), and the stale-key cleanup."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from bench.measure import is_running
from sio_cluster.legacy_store.cleanup import Cleanup
from sio_cluster.legacy_store.schema import Schema
from sio_cluster.master.embedded_redis import EmbeddedRedis
from tests.cluster import REPO, MasterProcess, Recorder, until, until_equal

TTL = "2"
SCHEMA = Schema("socket.io")


def store_master(start_master: Any, own_redis: EmbeddedRedis, workers: int = 2) -> MasterProcess:
    return start_master(
        redis_url=own_redis.url, workers=workers, extra=["--store", "--node-ttl", TTL]
    )


async def contents(r: aioredis.Redis) -> dict[str, Any]:
    """Every socket/room set and the owners hash (heartbeats and lists left out)."""
    found: dict[str, Any] = {}
    async for key in r.scan_iter(match="socket.io#*"):
        found[key] = await r.smembers(key)
    owners = await r.hgetall(SCHEMA.owners_key)
    if owners:
        found[SCHEMA.owners_key] = owners
    return found


async def node_id(cluster: MasterProcess) -> str:
    return (await cluster.wait_log(r"store: node (\w+)")).group(1)


async def test_keys_follow_connect_join_leave_disconnect_exactly(
    start_master: Any, own_redis: EmbeddedRedis, own_redis_client: aioredis.Redis, clients: Any
) -> None:
    cluster = await store_master(start_master, own_redis).ready()
    node = await node_id(cluster)
    a = await clients(cluster.url(0), "a", namespaces=("/", "/chat"))
    b = await clients(cluster.url(1), "b")
    sa, sb, sc = a.sid(), b.sid(), a.sid("/chat")
    await a.call("join", "sports")
    await b.call("join", "sports")
    await b.call("join", "news")
    await a.call("join", "lobby", namespace="/chat")
    expected = {
        f"socket.io#{sa}": {sa, "sports"},
        f"socket.io#{sb}": {sb, "sports", "news"},
        "socket.io#sports": {sa, sb},
        "socket.io#news": {sb},
        f"socket.io#/chat#{sc}": {sc, "lobby"},
        "socket.io#/chat#lobby": {sc},
        SCHEMA.owners_key: {
            f"socket.io#{sa}": node,
            f"socket.io#{sb}": node,
            f"socket.io#/chat#{sc}": node,
        },
    }
    await until_contents(own_redis_client, expected)
    assert await own_redis_client.ttl(SCHEMA.node_key(node)) > 0

    await b.call("leave", "news")
    del expected["socket.io#news"]
    expected[f"socket.io#{sb}"] = {sb, "sports"}
    await until_contents(own_redis_client, expected)

    await a.close()
    for key in (f"socket.io#{sa}", f"socket.io#/chat#{sc}", "socket.io#/chat#lobby"):
        del expected[key]
    expected["socket.io#sports"] = {sb}
    expected[SCHEMA.owners_key] = {f"socket.io#{sb}": node}
    await until_contents(own_redis_client, expected)


async def until_contents(r: aioredis.Redis, expected: dict[str, Any]) -> None:
    """Wait until :func:`contents` is exactly ``expected``; on timeout, show the difference."""

    async def current() -> dict[str, Any] | None:
        try:
            return await contents(r)
        except RedisConnectionError:  # our own client, across a Redis restart
            return None

    await until_equal(current, expected, "the store's keys")


async def test_graceful_stop_removes_every_key_of_the_node(
    start_master: Any, own_redis: EmbeddedRedis, own_redis_client: aioredis.Redis, clients: Any
) -> None:
    cluster = await store_master(start_master, own_redis).ready()
    node = await node_id(cluster)
    made = [await clients(cluster.url(i % 2), f"c{i}") for i in range(4)]
    for i, client in enumerate(made):
        await client.call("join", f"room{i % 2}")
    await until_contents(
        own_redis_client,
        {
            **{f"socket.io#{c.sid()}": {c.sid(), f"room{i % 2}"} for i, c in enumerate(made)},
            "socket.io#room0": {made[0].sid(), made[2].sid()},
            "socket.io#room1": {made[1].sid(), made[3].sid()},
            SCHEMA.owners_key: {f"socket.io#{c.sid()}": node for c in made},
        },
    )
    cluster.signal(signal.SIGTERM)
    assert await cluster.wait_exit() == 0
    assert await own_redis_client.keys("*") == []


async def test_killed_worker_sockets_are_removed_at_once(
    start_master: Any, own_redis: EmbeddedRedis, own_redis_client: aioredis.Redis, clients: Any
) -> None:
    cluster = await store_master(start_master, own_redis).ready()
    a = await clients(cluster.url(0), "a")
    b = await clients(cluster.url(1), "b")
    await a.call("join", "shared")
    await b.call("join", "shared")
    os.kill(cluster.worker_pids()[1], signal.SIGKILL)
    node = await node_id(cluster)
    await until_contents(
        own_redis_client,
        {
            f"socket.io#{a.sid()}": {a.sid(), "shared"},
            "socket.io#shared": {a.sid()},
            SCHEMA.owners_key: {f"socket.io#{a.sid()}": node},
        },
    )


async def test_redis_restart_is_followed_by_writing_the_sockets_back(
    start_master: Any, own_redis: EmbeddedRedis, own_redis_client: aioredis.Redis, clients: Any
) -> None:
    cluster = await store_master(start_master, own_redis).ready()
    node = await node_id(cluster)
    a = await clients(cluster.url(0), "a")
    await a.call("join", "kept")
    expected = {
        f"socket.io#{a.sid()}": {a.sid(), "kept"},
        "socket.io#kept": {a.sid()},
        SCHEMA.owners_key: {f"socket.io#{a.sid()}": node},
    }
    await until_contents(own_redis_client, expected)
    own_redis.restart()  # same port, empty
    await until_contents(own_redis_client, expected)
    assert await own_redis_client.exists(SCHEMA.node_key(node)) == 1
    await cluster.wait_log("heartbeat key was gone")


def run_cleanup(url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "scripts/cleanup.py", "--redis-url", url, *extra],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


async def test_cleanup_removes_a_dead_masters_sockets_and_keeps_a_live_ones(
    start_master: Any, own_redis: EmbeddedRedis, own_redis_client: aioredis.Redis, clients: Any
) -> None:
    dead = await store_master(start_master, own_redis).ready()
    live = await store_master(start_master, own_redis).ready()
    dead_node = await node_id(dead)
    dead_clients = [await clients(dead.url(i % 2), f"d{i}") for i in range(3)]
    for i, client in enumerate(dead_clients):
        await client.call("join", "shared")
        await client.call("join", f"dead-only-{i % 2}")
    live_a = await clients(live.url(0), "la")
    live_b = await clients(live.url(1), "lb")
    await live_a.call("join", "shared")
    await live_b.call("join", "stable")
    # an orphan socket set of no known node (a legacy leftover) in a room with a live socket
    await own_redis_client.sadd("socket.io#orphan-sid", "orphan-sid", "stable")
    await own_redis_client.sadd("socket.io#stable", "orphan-sid")
    live_node = await node_id(live)
    d = [c.sid() for c in dead_clients]
    await until_contents(  # everything written before the crash
        own_redis_client,
        {
            **{
                f"socket.io#{sid}": {sid, "shared", f"dead-only-{i % 2}"} for i, sid in enumerate(d)
            },
            f"socket.io#{live_a.sid()}": {live_a.sid(), "shared"},
            f"socket.io#{live_b.sid()}": {live_b.sid(), "stable"},
            "socket.io#orphan-sid": {"orphan-sid", "stable"},
            "socket.io#shared": {*d, live_a.sid()},
            "socket.io#dead-only-0": {d[0], d[2]},
            "socket.io#dead-only-1": {d[1]},
            "socket.io#stable": {live_b.sid(), "orphan-sid"},
            SCHEMA.owners_key: {
                **{f"socket.io#{sid}": dead_node for sid in d},
                f"socket.io#{live_a.sid()}": live_node,
                f"socket.io#{live_b.sid()}": live_node,
            },
        },
    )

    dead.signal(signal.SIGKILL)
    await dead.wait_exit()
    await until(
        lambda: not any(is_running(pid) for pid in dead.known_pids),
        what="dead master's workers exit",
    )

    async def heartbeat_expired() -> bool:
        return not await own_redis_client.exists(SCHEMA.node_key(dead_node))

    await until(heartbeat_expired, what="the dead node's heartbeat expired")
    before = await contents(own_redis_client)

    dry = run_cleanup(own_redis.url, "--dry-run")
    assert await contents(own_redis_client) == before  # the dry run changed nothing
    assert "stale sockets: 4" in dry.stdout  # 3 of the dead node, 1 orphan
    assert "memberships to remove: 7" in dry.stdout  # 3 shared + 3 dead-only + 1 stable

    churn = asyncio.create_task(_churn(live_a, rounds=40))
    cleaned = await asyncio.to_thread(run_cleanup, own_redis.url)
    await churn
    assert "stale sockets: 4" in cleaned.stdout
    assert "memberships removed: 7" in cleaned.stdout
    assert "keys removed: 6" in cleaned.stdout  # 4 socket sets + dead-only-0 + dead-only-1
    assert "nodes seen: 2 (1 live, 1 dead)" in cleaned.stdout

    await until_contents(
        own_redis_client,
        {
            f"socket.io#{live_a.sid()}": {live_a.sid(), "shared"},
            f"socket.io#{live_b.sid()}": {live_b.sid(), "stable"},
            "socket.io#shared": {live_a.sid()},
            "socket.io#stable": {live_b.sid()},
            SCHEMA.owners_key: {
                f"socket.io#{live_a.sid()}": live_node,
                f"socket.io#{live_b.sid()}": live_node,
            },
        },
    )
    again = run_cleanup(own_redis.url)
    assert "stale sockets: 0" in again.stdout and "keys removed: 0" in again.stdout


async def _churn(client: Recorder, rounds: int) -> None:
    """A live node joining and leaving rooms while the cleanup runs (bounded)."""
    for i in range(rounds):
        await client.call("join", f"churn-{i % 3}")
        await client.call("leave", f"churn-{i % 3}")


async def test_concurrent_cleanups_count_and_remove_each_socket_once(
    own_redis_client: aioredis.Redis,
) -> None:
    for i in range(300):
        sid = f"s{i}"
        await own_redis_client.sadd(f"socket.io#{sid}", sid, "room-a", f"room-{i % 7}")
        await own_redis_client.sadd("socket.io#room-a", sid)
        await own_redis_client.sadd(f"socket.io#room-{i % 7}", sid)
        await own_redis_client.hset(SCHEMA.owners_key, f"socket.io#{sid}", "gone-node")
    await own_redis_client.set(SCHEMA.node_key("alive"), "{}", ex=60)
    await own_redis_client.sadd("socket.io#keep", "keep", "room-a")
    await own_redis_client.hset(SCHEMA.owners_key, "socket.io#keep", "alive")
    await own_redis_client.sadd("socket.io#room-a", "keep")
    reports = await asyncio.gather(
        *(Cleanup(own_redis_client, SCHEMA, batch=50).run() for _ in range(2))
    )
    assert sum(rep.stale_sockets for rep in reports) == 300
    assert sum(rep.memberships_removed for rep in reports) == 600
    assert sum(rep.owner_entries_removed for rep in reports) == 300
    assert await contents(own_redis_client) == {
        "socket.io#keep": {"keep", "room-a"},
        "socket.io#room-a": {"keep"},
        SCHEMA.owners_key: {"socket.io#keep": "alive"},
    }
