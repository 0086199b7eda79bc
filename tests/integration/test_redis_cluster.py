"""A Redis Cluster (3 primaries + 3 replicas, real processes) under two masters.

The masters are seeded with different nodes; ``ch:*`` messages are published on
every node; a primary is killed and its replica takes over.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from bench.redis_cluster import RedisCluster
from sio_cluster.master.server import NODE_COMMAND_USERS
from tests.cluster import (
    MasterProcess,
    check_exactly_once_after_recovery,
    op,
    publish_until_delivered,
    running_cluster,
    until,
)
from tests.node_peer import NodePeer, ensure_node_modules, missing_tools


@pytest.fixture
def redis_cluster() -> Iterator[RedisCluster]:
    yield from running_cluster()


def url_of(cluster: RedisCluster, seeds: list[int]) -> str:
    return "redis+cluster://" + cluster.seeds([cluster.nodes[i] for i in seeds])


async def subscriber_node(cluster: RedisCluster, pid: int) -> Any:
    """The node a master's subscriber connection is on."""
    for node in cluster.live():
        async with aioredis.Redis(port=node.port, decode_responses=True) as client:
            names = [entry["name"] for entry in await client.client_list()]
            if any(name.endswith(f":{pid}:sub") for name in names):
                return node
    raise AssertionError(f"no subscriber of master {pid} on the cluster")


async def named_connections(cluster: RedisCluster, pid: int) -> tuple[dict[str, int], int]:
    """How many connections of one master, by role, on all live nodes together; and the
    most command connections it has on any one node."""
    counts: dict[str, int] = {}
    most_on_a_node = 0
    for node in cluster.live():
        async with aioredis.Redis(port=node.port, decode_responses=True) as client:
            names = [e["name"] for e in await client.client_list() if f":{pid}:" in e["name"]]
        for name in names:
            role = name.rsplit(":", 1)[1]
            counts[role] = counts.get(role, 0) + 1
        most_on_a_node = max(most_on_a_node, sum(n.endswith(":cmd") for n in names))
    return counts, most_on_a_node


async def test_masters_seeded_apart_form_one_cluster_and_follow_a_failover(
    redis_cluster: RedisCluster, start_master: Any, clients: Any
) -> None:
    host_a: MasterProcess = await start_master(
        redis_url=url_of(redis_cluster, [0, 1]), workers=2
    ).ready()
    host_b: MasterProcess = await start_master(
        redis_url=url_of(redis_cluster, [4]), workers=1
    ).ready()
    a0 = await clients(host_a.url(0), "a0")
    a1 = await clients(host_a.url(1), "a1")
    b0 = await clients(host_b.url(0), "b0")
    everyone = [a0, a1, b0]
    for client in everyone:
        await client.call("join", "team")

    # a ch:* message published on ANY node reaches every target once
    for i, node in enumerate(redis_cluster.nodes):
        async with aioredis.Redis(port=node.port) as publisher:
            await publisher.publish("ch:node", json.dumps({"to": "team", "data": i}))
    for client in everyone:
        await client.wait_count("node", 6)
        assert sorted(args[0] for args in client.got("node")) == list(range(6)), client.name
    # handler emits and cluster operations cross the two hosts
    await a0.call("emit", {"event": "across", "args": [1], "to": "team", "skip_sid": a0.sid()})
    await until(lambda: len(a1.got("across")) == 1 and len(b0.got("across")) == 1)
    fetched = await op(b0, "fetch_sockets", to="team")
    assert sorted(s["id"] for s in fetched) == sorted(c.sid() for c in everyone)
    for host in (host_a, host_b):
        counts, most_on_a_node = await named_connections(redis_cluster, host.pid)
        print(f"\nconnections of one master on the cluster: {counts}")
        assert counts.get("sub") == 1 and most_on_a_node <= NODE_COMMAND_USERS

    # kill the node host A's subscriber reads from, and a primary (the same node if it
    # is one): A's subscriber must move, and the slots of the primary fail over
    victims = [await subscriber_node(redis_cluster, host_a.pid)]
    if victims[0] not in redis_cluster.primaries():  # a replica: kill another shard's primary
        with redis_cluster.client(victims[0]) as replica:
            its_primary = int(replica.execute_command("ROLE")[2])
        victims.append(next(p for p in redis_cluster.primaries() if p.port != its_primary))
    killed = time.monotonic()
    for victim in victims:
        victim.kill()
    survivor = redis_cluster.live()[0]
    async with aioredis.Redis(port=survivor.port) as publisher:
        await publish_until_delivered(
            publisher,
            "ch:probe",
            {"to": "team", "data": 1},
            lambda: all(c.got("probe") for c in everyone),
            timeout=30,
        )
        recovered = time.monotonic()
        await until(lambda: len(redis_cluster.primaries()) == 3, timeout=30, what="a new primary")
        promoted = time.monotonic()
        await host_a.wait_log(r"Redis is back")
        print(
            f"\ncluster: nodes killed -> every host delivering again {recovered - killed:.2f} s; "
            f"-> replica promoted {promoted - killed:.2f} s"
        )
        await check_exactly_once_after_recovery(publisher, a0, everyone, 20)


async def test_a_node_server_on_the_cluster_is_a_member(
    redis_cluster: RedisCluster, start_master: Any, clients: Any
) -> None:
    """Node socket.io + @socket.io/redis-adapter (on an ioredis Cluster) and a master."""
    reason = missing_tools()
    if reason:
        pytest.skip(f"Node peers need Node.js: {reason}")
    ensure_node_modules()
    url = url_of(redis_cluster, [2])
    host: MasterProcess = await start_master(redis_url=url, workers=2).ready()
    node = NodePeer(url, requests_timeout_ms=3000).start()
    try:
        p0 = await clients(host.url(0), "p0")
        p1 = await clients(host.url(1), "p1")
        n0 = await node.connect("n0")
        await node.connect("n1")
        await p1.call("join", "room")
        await node.cmd("join", client="n0", room="room")

        await node.cmd("emit", to="room", event="from-node", args=[1])
        await p0.call("emit", {"event": "from-py", "args": [2], "to": "room"})
        for mark in range(2):  # a fence from each side: everything before it has arrived
            await node.cmd("emit", event="mark", args=[mark])
            await p0.call("emit", {"event": "mark", "args": [mark]})
        # Node's ioredis publishes each channel on the node owning its slot, so its messages
        # to two channels may arrive out of order: wait for the message itself too
        await p1.wait_count("from-node", 1)
        await node.wait_count("n0", "from-py", 1)
        for client in (p0, p1):
            await client.wait_count("mark", 4)
        for name in ("n0", "n1"):
            await node.wait_count(name, "mark", 4)
        assert [p0.got("from-node"), p1.got("from-node")] == [[], [(1,)]]
        assert [node.got("n0", "from-py"), node.got("n1", "from-py")] == [[[2]], []]

        theirs = await node.cmd("fetchSockets", to="room")
        assert sorted(s["id"] for s in theirs) == sorted([p1.sid(), n0])
        ours = await op(p0, "fetch_sockets", to="room")
        assert sorted(s["id"] for s in ours) == sorted([p1.sid(), n0])
    finally:
        node.close()


@pytest.fixture
def redis7_cluster() -> Iterator[RedisCluster]:
    yield from running_cluster(version7=True)


async def owner_of(cluster: RedisCluster, channel: str) -> Any:
    """The primary serving ``channel``'s hash slot now."""
    for node in cluster.primaries():
        async with aioredis.Redis(port=node.port) as client:
            slot = await client.execute_command("CLUSTER", "KEYSLOT", channel)
            for start, end, primary, *_ in await client.execute_command("CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    return next(n for n in cluster.live() if n.port == int(primary[1]))
    raise AssertionError(f"no primary serves {channel!r}")


async def test_sharded_adapter_on_a_cluster_with_node_and_a_failover(
    redis7_cluster: RedisCluster, start_master: Any, clients: Any
) -> None:
    """Two masters seeded apart and Node's createShardedAdapter (node-redis createCluster),
    all SSUBSCRIBEd on the primaries owning their channels; then the primary serving the
    namespace channel is killed, and the shard subscribers follow its replica."""
    reason = missing_tools()
    if reason:
        pytest.skip(f"Node peers need Node.js: {reason}")
    ensure_node_modules()
    sharded = ["--adapter", "sharded"]
    host_a: MasterProcess = await start_master(
        redis_url=url_of(redis7_cluster, [0, 1]), workers=2, extra=sharded
    ).ready()
    host_b: MasterProcess = await start_master(
        redis_url=url_of(redis7_cluster, [4]), workers=1, extra=sharded
    ).ready()
    node = NodePeer(url_of(redis7_cluster, [2]), 3000, adapter="sharded").start()
    try:
        a0 = await clients(host_a.url(0), "a0")
        a1 = await clients(host_a.url(1), "a1")
        b0 = await clients(host_b.url(0), "b0")
        n0 = await node.connect("n0")
        ours = [a0, a1, b0]
        for client in ours:
            await client.call("join", "team")
        await node.cmd("join", client="n0", room="team")

        async def fenced_round(mark: int) -> None:
            """Each side emits to the room, then a fence on the namespace channel."""
            await a0.call("emit", {"event": "from-py", "args": [mark], "to": "team"})
            await node.cmd("emit", to="team", event="from-node", args=[mark])
            await until(lambda: all(len(c.got("from-node")) == mark for c in ours))
            await node.wait_count("n0", "from-py", mark)

        await fenced_round(1)
        assert [c.got("from-py") for c in ours] == [[(1,)]] * 3
        assert [c.got("from-node") for c in ours] == [[(1,)]] * 3
        theirs = await node.cmd("fetchSockets", to="team")
        assert sorted(s["id"] for s in theirs) == sorted([*(c.sid() for c in ours), n0])
        fetched = await op(b0, "fetch_sockets", to="team")
        assert sorted(s["id"] for s in fetched) == sorted([*(c.sid() for c in ours), n0])
        for host in (host_a, host_b):
            counts, most_on_a_node = await named_connections(redis7_cluster, host.pid)
            print(f"\nconnections of one master, sharded, on the cluster: {counts}")
            assert counts.get("sub") == 1 and 1 <= counts.get("ssub", 0) <= 3
            assert most_on_a_node <= NODE_COMMAND_USERS

        victim = await owner_of(redis7_cluster, "socket.io#/#")
        killed = time.monotonic()
        victim.kill()
        await host_a.wait_log(r"sharded subscriber lost", timeout=30)
        await until(lambda: len(redis7_cluster.primaries()) == 3, timeout=30, what="promotion")
        promoted = time.monotonic()
        await host_a.wait_log(r"Redis is back: \d+ shard channels", timeout=30)
        await host_b.wait_log(r"Redis is back: \d+ shard channels", timeout=30)
        # exactly once after recovery: a numbered round from host A to the room
        for i in range(1, 6):
            await a0.call("emit", {"event": "after", "args": [i], "to": "team"})
        await until(lambda: len(b0.got("after")) >= 5, timeout=30, what="b0 after recovery")
        recovered = time.monotonic()
        await a0.call("emit", {"event": "mark", "args": [], "to": "team"})
        await b0.wait_count("mark", 1)
        assert b0.got("after") == [(i,) for i in range(1, 6)]
        assert a1.got("after") == [(i,) for i in range(1, 6)]
        print(
            f"\nsharded: primary killed -> replica promoted {promoted - killed:.2f} s; "
            f"-> host B delivering again {recovered - killed:.2f} s"
        )
    finally:
        node.close()
