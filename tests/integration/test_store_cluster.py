"""``--store`` and ``sio-cleanup`` on a Redis Cluster (3 primaries + 3 replicas, real processes).

The legacy key names span hash slots, so the store and the cleanup write per key
(:mod:`legacy_store.writes`, :mod:`legacy_store.slot_cleanup`). One Cluster is shared by
the tests that kill no node (emptied before each); the failover test has its own.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Hashable, Iterator
from typing import Any, cast

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.cluster import RedisCluster as ClusterClient
from redis.exceptions import RedisError

from bench.measure import is_running
from bench.redis_cluster import RedisCluster
from sio_cluster.legacy_store.cleanup import Cleanup, CleanupReport
from sio_cluster.legacy_store.schema import Schema
from sio_cluster.legacy_store.slot_cleanup import SlotCleanup
from sio_cluster.legacy_store.socket_store import SocketStore
from sio_cluster.master.server import NODE_COMMAND_USERS, STORE_COMMAND_USERS
from tests.cluster import REPO, MasterProcess, Recorder, running_cluster, until, until_equal
from tests.integration.test_redis_cluster import named_connections

SCHEMA = Schema("socket.io")
TTL = "2"
BAD_LOG = re.compile(
    r"\b(ERROR|CRITICAL)\b|CROSSSLOT|MOVED|Traceback|MaxConnections|heartbeat failed"
)
Live = dict[tuple[str, str], set[str]]  # (namespace, sid) -> rooms, as a master's table


@pytest.fixture(scope="module")
def shared_cluster() -> Iterator[RedisCluster]:
    yield from running_cluster()


@pytest.fixture
def redis_cluster(shared_cluster: RedisCluster) -> RedisCluster:
    """The module's Cluster, emptied."""
    for node in shared_cluster.primaries():
        with shared_cluster.client(node) as client:
            client.flushall()
    return shared_cluster


@pytest.fixture
def own_cluster() -> Iterator[RedisCluster]:
    """A Cluster of the test's own (it kills a node)."""
    yield from running_cluster()


def url_of(cluster: RedisCluster) -> str:
    return "redis+cluster://" + cluster.seeds(cluster.primaries()[:1])


@pytest.fixture
async def client_of() -> AsyncIterator[Any]:
    """Make Cluster clients (``decode`` for str replies, else bytes as the master has)."""
    made: list[ClusterClient] = []

    def make(cluster: RedisCluster, decode: bool = True) -> ClusterClient:
        seeds = [ClusterNode("127.0.0.1", node.port) for node in cluster.live()]
        client = ClusterClient(startup_nodes=seeds, decode_responses=decode)
        made.append(client)
        return client

    try:
        yield make
    finally:
        for client in made:
            await client.aclose()


async def contents(r: ClusterClient) -> dict[str, Any]:
    """Every socket/room set on every primary, and the owners hash."""
    found: dict[str, Any] = {}
    async for key in r.scan_iter(match="socket.io#*"):
        found[key] = await r.smembers(key)
    owners = await r.hgetall(SCHEMA.owners_key)
    if owners:
        found[SCHEMA.owners_key] = owners
    return found


async def until_contents(r: ClusterClient, expected: dict[str, Any], timeout: float = 10) -> None:
    """Wait until :func:`contents` is exactly ``expected``; on timeout, show the difference."""

    async def current() -> dict[str, Any] | None:
        try:
            return await contents(r)
        except RedisError:  # our own client, across a failover
            return None

    await until_equal(current, expected, "the store's keys", timeout)


def keys_by_primary(cluster: RedisCluster) -> dict[int, list[str]]:
    """The keys each primary holds, after checking each is in a slot that primary serves."""
    found: dict[int, list[str]] = {}
    for node in cluster.primaries():
        with cluster.client(node) as client:
            ranges = [
                (int(start), int(end))
                for start, end, (_, port, *_), *_ in client.execute_command("CLUSTER", "SLOTS")
                if int(port) == node.port
            ]
            keys = sorted(client.scan_iter(match="socket.io*"))
            for key in keys:
                slot = int(client.execute_command("CLUSTER", "KEYSLOT", key))
                assert any(start <= slot <= end for start, end in ranges), (key, node.port)
            found[node.port] = keys
    return found


async def node_id(master: MasterProcess) -> str:
    return (await master.wait_log(r"store: node (\w+)")).group(1)


def bad_lines(master: MasterProcess) -> list[str]:
    return [line for line in master.lines if BAD_LOG.search(line)]


async def test_a_master_keeps_the_keys_exactly_each_on_its_slots_node(
    redis_cluster: RedisCluster, start_master: Any, clients: Any, client_of: Any
) -> None:
    url = url_of(redis_cluster)
    master = await start_master(
        redis_url=url, workers=2, extra=["--store", "--node-ttl", TTL]
    ).ready()
    node = await node_id(master)
    r = client_of(redis_cluster)
    a = await clients(master.url(0), "a", namespaces=("/", "/chat"))
    b = await clients(master.url(1), "b")
    sa, sb, sc = a.sid(), b.sid(), a.sid("/chat")
    for client, room in ((a, "sports"), (b, "sports"), (b, "news"), (b, "misc")):
        await client.call("join", room)
    await a.call("join", "lobby", namespace="/chat")
    await b.call("leave", "misc")
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
    await until_contents(r, expected)
    held = keys_by_primary(redis_cluster)
    assert sorted(k for keys in held.values() for k in keys) == sorted(
        [*expected, SCHEMA.node_key(node)]
    )
    assert sum(1 for keys in held.values() if keys) >= 2  # the keys do span the primaries

    await b.call("leave", "news")
    del expected["socket.io#news"]
    expected[f"socket.io#{sb}"] = {sb, "sports"}
    await until_contents(r, expected)
    await a.close()
    for key in (f"socket.io#{sa}", f"socket.io#/chat#{sc}", "socket.io#/chat#lobby"):
        del expected[key]
    expected["socket.io#sports"] = {sb}
    expected[SCHEMA.owners_key] = {f"socket.io#{sb}": node}
    await until_contents(r, expected)
    assert bad_lines(master) == []
    counts, most_on_a_node = await named_connections(redis_cluster, master.pid)
    assert counts.get("sub") == 1
    assert most_on_a_node <= NODE_COMMAND_USERS + STORE_COMMAND_USERS  # the pool never refuses

    master.signal(signal.SIGTERM)  # a graceful stop removes every key of the node
    assert await master.wait_exit() == 0
    assert [key async for key in r.scan_iter()] == []
    assert bad_lines(master) == []


def run_cleanup(url: str, *extra: str) -> dict[str, Any]:
    """``python scripts/cleanup.py --json``: its report (the summary printed before it)."""
    done = subprocess.run(
        [sys.executable, "scripts/cleanup.py", "--redis-url", url, "--json", *extra],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    report.pop("seconds")
    return report


async def test_cleanup_removes_exactly_a_killed_masters_keys(
    redis_cluster: RedisCluster, start_master: Any, clients: Any, client_of: Any
) -> None:
    url = url_of(redis_cluster)
    extra = ["--store", "--node-ttl", TTL]
    dead = await start_master(redis_url=url, workers=2, extra=extra).ready()
    live = await start_master(redis_url=url, workers=1, extra=extra).ready()
    dead_node, live_node = await node_id(dead), await node_id(live)
    r = client_of(redis_cluster)
    dead_clients = [await clients(dead.url(i % 2), f"d{i}") for i in range(3)]
    for i, client in enumerate(dead_clients):
        await client.call("join", "shared")
        await client.call("join", f"dead-only-{i % 2}")
    live_a = await clients(live.url(0), "la")
    live_b = await clients(live.url(0), "lb")
    await live_a.call("join", "shared")
    await live_b.call("join", "stable")
    # an orphan socket set of no known node (a legacy leftover) in a room with a live socket
    await r.sadd("socket.io#orphan-sid", "orphan-sid", "stable")
    await r.sadd("socket.io#stable", "orphan-sid")
    d = [c.sid() for c in dead_clients]
    la, lb = live_a.sid(), live_b.sid()
    live_keys = {
        f"socket.io#{la}": {la, "shared"},
        f"socket.io#{lb}": {lb, "stable"},
    }
    await until_contents(
        r,
        {
            **{f"socket.io#{s}": {s, "shared", f"dead-only-{i % 2}"} for i, s in enumerate(d)},
            **live_keys,
            "socket.io#orphan-sid": {"orphan-sid", "stable"},
            "socket.io#shared": {*d, la},
            "socket.io#dead-only-0": {d[0], d[2]},
            "socket.io#dead-only-1": {d[1]},
            "socket.io#stable": {lb, "orphan-sid"},
            SCHEMA.owners_key: {
                **{f"socket.io#{s}": dead_node for s in d},
                f"socket.io#{la}": live_node,
                f"socket.io#{lb}": live_node,
            },
        },
    )

    dead.signal(signal.SIGKILL)
    await dead.wait_exit()
    await until(lambda: not any(is_running(p) for p in dead.known_pids), what="workers exit")

    async def heartbeat_expired() -> bool:
        return not await r.exists(SCHEMA.node_key(dead_node))

    await until(heartbeat_expired, what="the dead node's heartbeat expired")
    before = await contents(r)
    found = {
        "live_nodes": 1,
        "dead_nodes": 1,
        "dead_node_ids": [dead_node],
        "keys_scanned": 10,  # 6 socket sets + shared, dead-only-0, dead-only-1, stable
        "stale_sockets": 4,  # 3 of the dead node, 1 orphan
        "memberships_removed": 7,  # 3 shared + 3 dead-only + 1 stable
        "owner_entries_removed": 3,
        "nodes_resynced": 0,
    }
    # a dry run counts a room as emptied only if the socket is its last member now, as
    # the Lua script does: dead-only-0 still holds two stale sockets
    assert run_cleanup(url, "--dry-run") == {**found, "dry_run": True, "keys_deleted": 5}
    assert await contents(r) == before

    # 4 socket sets + dead-only-0 + dead-only-1
    assert run_cleanup(url) == {**found, "dry_run": False, "keys_deleted": 6}
    await until_contents(
        r,
        {
            **live_keys,
            "socket.io#shared": {la},
            "socket.io#stable": {lb},
            SCHEMA.owners_key: {f"socket.io#{la}": live_node, f"socket.io#{lb}": live_node},
        },
        timeout=1,
    )
    again = run_cleanup(url)
    assert (again["stale_sockets"], again["keys_deleted"], again["live_nodes"]) == (0, 0, 1)
    assert bad_lines(live) == []


def store_on(r: ClusterClient, node: str, live: Live, ttl: float) -> SocketStore:
    def sockets() -> list[tuple[str, str, list[Hashable]]]:
        return [(ns, sid, list[Hashable](sorted(rooms))) for (ns, sid), rooms in live.items()]

    return SocketStore(cast(aioredis.Redis, r), SCHEMA, node, ttl, sockets)


def expected_keys(live: Live, node: str) -> dict[str, Any]:
    """The exact keys a node's sockets should have (one namespace, "/")."""
    keys: dict[str, Any] = {}
    for (_, sid), rooms in live.items():
        keys[f"socket.io#{sid}"] = {sid, *rooms}
        for room in rooms:
            keys.setdefault(f"socket.io#{room}", set()).add(sid)
    if live:
        keys[SCHEMA.owners_key] = {f"socket.io#{sid}": node for _, sid in live}
    return keys


def apply(store: SocketStore, live: Live, op: str, sid: str, room: str | None = None) -> None:
    """What the master does on a worker's report: its table, then the store."""
    key = ("/", sid)
    if op == "join":
        if room is None:
            live[key] = set()
        else:
            live[key].add(room)
        store.join("/", sid, room)
    elif room is None:
        del live[key]
        store.leave("/", sid, None)
    else:
        live[key].discard(room)
        store.leave("/", sid, room)


async def test_repeated_cleanups_never_touch_a_live_node_under_churn(
    redis_cluster: RedisCluster, client_of: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    r = client_of(redis_cluster)
    bytes_client = client_of(redis_cluster, decode=False)
    dead: Live = {("/", f"dead{i}"): {"shared", f"room{i % 4}"} for i in range(40)}
    dead_store = store_on(bytes_client, "dead-node", dead, 15)
    writing = asyncio.create_task(dead_store.run())
    await until_contents(r, expected_keys(dead, "dead-node"))
    writing.cancel()  # a node that stops writing: its heartbeat key is left to expire
    await asyncio.gather(writing, return_exceptions=True)
    await r.delete(SCHEMA.node_key("dead-node"))

    live: Live = {}
    store = store_on(bytes_client, "live-node", live, 15)
    writing = asyncio.create_task(store.run())
    reports: list[CleanupReport] = []
    try:
        stop = asyncio.Event()
        cleaning = asyncio.create_task(_cleanups(bytes_client, reports, stop))
        generation = [0] * 60  # a sid is never used again once disconnected
        for i in range(600):  # bounded churn: connects, joins, leaves, disconnects
            sid = f"live{i % 60}-{generation[i % 60]}"
            if ("/", sid) not in live:
                apply(store, live, "join", sid)
            elif i % 7 == 0:
                apply(store, live, "leave", sid)
                generation[i % 60] += 1
            elif f"room{i % 4}" in live[("/", sid)]:
                apply(store, live, "leave", sid, f"room{i % 4}")
            else:
                apply(store, live, "join", sid, f"room{i % 4}")
            if i % 20 == 0:
                await asyncio.sleep(0.005)  # let the writer and the cleanup interleave
        await until_contents(r, expected_keys(live, "live-node"))
        done = len(reports)  # and two whole cleanups more on the final state
        await until(lambda: len(reports) >= done + 2, what="two more cleanups")
        await until_contents(r, expected_keys(live, "live-node"))
        stop.set()
        await until(cleaning.done, 30, "the last cleanup to end")
        cleaning.result()
    finally:
        writing.cancel()
        await asyncio.gather(writing, return_exceptions=True)
    assert sum(report.stale_sockets for report in reports) == 40
    assert all(report.dead_node_ids <= {"dead-node"} for report in reports)
    assert sum(report.nodes_resynced for report in reports) == 0
    ours = [rec for rec in caplog.records if rec.name.startswith("sio_cluster.")]
    assert [rec.getMessage() for rec in ours if rec.levelno >= logging.WARNING] == []


async def _cleanups(r: ClusterClient, reports: list[CleanupReport], stop: asyncio.Event) -> None:
    """Cleanups one after the other until ``stop``. Not stopped by cancelling: on Python 3.11
    a cancel that meets a completing wait_for inside redis-py can be lost (the test once ran
    for 23 minutes, its cleanups going on)."""
    while not stop.is_set():
        reports.append(await Cleanup(cast(aioredis.Redis, r), SCHEMA, batch=10).run())
        await asyncio.sleep(0.01)


async def test_a_node_back_during_a_cleanup_is_made_to_write_its_state_again(
    redis_cluster: RedisCluster, client_of: Any, caplog: pytest.LogCaptureFixture
) -> None:
    r = client_of(redis_cluster)
    bytes_client = client_of(redis_cluster, decode=False)
    live: Live = {("/", f"s{i}"): {"shared", f"room{i % 2}"} for i in range(5)}
    store = store_on(bytes_client, "node-n", live, 9)  # heartbeat every 3 s: not in the steps
    writing = asyncio.create_task(store.run())
    try:
        full = expected_keys(live, "node-n")
        await until_contents(r, full)
        node_key = SCHEMA.node_key("node-n")
        await r.delete(node_key)  # the node is presumed dead: its heartbeat expired

        # the cleanup's steps, with the node coming back between its decision and its deletes
        cleanup = SlotCleanup(bytes_client, SCHEMA, dry_run=False)
        candidates = [(key, SCHEMA.split(key)) for key in full if key != SCHEMA.owners_key]
        stale = await cleanup.stale([(k, s) for k, s in candidates if s is not None])
        assert sorted(s.key for s in stale) == sorted(f"socket.io#{sid}" for _, sid in live)
        await r.set(node_key, "{}", ex=9)  # the node's resync: its key first, then its sockets
        removed = await cleanup.remove(stale)
        assert sum(entry.memberships for entry in removed) == 10
        assert await contents(r) == {}  # the race: a live node's sockets are gone
        assert await cleanup.recheck({"node-n"}) == {"node-n"}
        assert not await r.exists(node_key)

        await until_contents(r, full)  # its next heartbeat fails and it writes them back
        assert await r.exists(node_key)
    finally:
        writing.cancel()
        await asyncio.gather(writing, return_exceptions=True)
    assert "heartbeat key was gone" in caplog.text
    assert "node node-n is alive again" in caplog.text


async def test_the_store_follows_a_failover_of_the_owners_hash_primary(
    own_cluster: RedisCluster, start_master: Any, clients: Any, client_of: Any
) -> None:
    url = url_of(own_cluster)
    master = await start_master(redis_url=url, workers=1, extra=["--store"]).ready()
    node = await node_id(master)
    r = client_of(own_cluster)
    team: list[Recorder] = [await clients(master.url(0), f"c{i}") for i in range(3)]
    for client in team:
        await client.call("join", "team")
    sids = [c.sid() for c in team]
    expected: dict[str, Any] = {
        **{f"socket.io#{sid}": {sid, "team"} for sid in sids},
        "socket.io#team": set(sids),
        SCHEMA.owners_key: {f"socket.io#{sid}": node for sid in sids},
    }
    await until_contents(r, expected)

    slot = await r.cluster_keyslot(SCHEMA.owners_key)
    with own_cluster.client(own_cluster.primaries()[0]) as any_node:
        owner_port = next(
            int(port)
            for start, end, (_, port, *_), *_ in any_node.execute_command("CLUSTER", "SLOTS")
            if int(start) <= slot <= int(end)
        )
    victim = next(n for n in own_cluster.primaries() if n.port == owner_port)
    killed = time.monotonic()
    victim.kill()
    # a connect (its owner entry is on the killed primary) and joins, written once the
    # replica is promoted
    late = await clients(master.url(0), "late")
    await late.call("join", "after")
    await team[0].call("join", "after")
    expected[f"socket.io#{sids[0]}"] = {sids[0], "team", "after"}
    expected[f"socket.io#{late.sid()}"] = {late.sid(), "after"}
    expected["socket.io#after"] = {sids[0], late.sid()}
    expected[SCHEMA.owners_key][f"socket.io#{late.sid()}"] = node
    await until_contents(r, expected, timeout=30)
    recovered = time.monotonic()
    await until(lambda: len(own_cluster.primaries()) == 3, timeout=30, what="a new primary")
    resynced = bool(master.log_matches(r"store: wrote \d+ live sockets"))
    print(
        f"\nstore: owners hash primary killed -> a new connect and joins in Redis "
        f"{recovered - killed:.2f} s ({'after a resync' if resynced else 'no resync needed'})"
    )
    assert recovered - killed < 20
