"""Our master and a REAL Node.js server using ``createShardedAdapter`` (SPUBLISH/SSUBSCRIBE)
on one Redis 7: the interop tests of :mod:`tests.integration.test_node_interop` that concern the
adapter protocol, run again with ``--adapter sharded`` against Node's sharded adapter
(subscriptionMode "dynamic", its default), plus what only the sharded form has.

Left out, as Node's sharded adapter has no such thing: the @socket.io/redis-emitter tests
(the emitter publishes classic PUBLISH only) and ``allRooms`` (a ClusterAdapter answers it
locally), and the captures of the classic wire format.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from sio_cluster.master.embedded_redis import EmbeddedRedis
from tests.cluster import MasterProcess, running_redis, until
from tests.integration import test_node_interop as interop
from tests.integration.test_node_interop import (  # noqa: F401 (collected here, with this module's fixtures)
    INTEROP_APP,
    NAMESPACES,
    fetched_ids,
    pytestmark,
    test_acks_both_ways,
    test_close_room_with_a_node_server_empties_it_everywhere_promptly,
    test_disconnect_sockets_with_a_node_server_counts_its_sockets_and_returns_promptly,
    test_fetch_sockets_both_ways_ids_and_rooms,
    test_integer_and_string_rooms_of_one_name_stay_apart_as_in_node,
    test_node_emit_to_an_integer_room_reaches_our_sockets_in_it,
    test_node_fetch_sockets_sees_our_handshake_and_session_as_data,
    test_node_socket_operations_reach_our_sockets,
    test_our_emit_to_an_integer_room_reaches_node_sockets_in_it,
    test_server_side_emit_both_ways,
    test_sockets_join_with_a_node_server_counts_its_sockets_and_returns_promptly,
    test_sockets_leave_with_a_node_server_counts_its_sockets_and_returns_promptly,
    test_string_room_and_sid_broadcasts_cross_both_ways,
)
from tests.node_peer import NodePeer

node_modules = interop.node_modules  # the fixtures this module shares with the classic one
node = interop.node


@pytest.fixture(scope="module")
def redis_server() -> Iterator[EmbeddedRedis]:
    yield from running_redis(version7=True)


@pytest.fixture(scope="module")
def master(redis_server: EmbeddedRedis) -> Iterator[MasterProcess]:
    extra = ["--adapter", "sharded"]
    process = MasterProcess(redis_server.url, workers=2, app=INTEROP_APP, extra=extra).start()
    try:
        yield process.ready_sync()
    finally:
        process.cleanup()


def shard_servers(url: str, channels: list[str]) -> list[int]:
    with redis.Redis.from_url(url) as client:
        reply = client.execute_command("PUBSUB", "SHARDNUMSUB", *channels)
    return [int(n) for n in reply[1::2]]


@pytest.fixture(scope="module")
def peer(
    redis_server: EmbeddedRedis, master: MasterProcess, node_modules: None
) -> Iterator[NodePeer]:
    """Node's sharded adapter; ready when Redis counts both servers per namespace."""
    started = NodePeer(redis_server.url, requests_timeout_ms=3000, adapter="sharded").start()
    channels = [f"socket.io#{n}#" for n in NAMESPACES]
    deadline = time.monotonic() + 10
    try:
        while shard_servers(redis_server.url, channels) != [2] * len(channels):
            assert time.monotonic() < deadline, "not 2 servers on the shard channels"
            time.sleep(0.02)
        yield started
    finally:
        started.close()


async def test_room_channels_are_subscribed_while_this_host_holds_the_room(
    master: MasterProcess, node: NodePeer, redis_server: EmbeddedRedis, clients: Any
) -> None:
    """Dynamic mode: a broadcast to one room goes on that room's channel, which a server
    reads only while it holds the room; sid rooms stay on the namespace channel."""
    assert master.metric("sio_master_redis_reconnects_total") == 0  # two subscribers, no outage
    channel = "socket.io#/#dyn-room#"
    p0 = await clients(master.url(0), "p0")
    p1 = await clients(master.url(1), "p1")
    await p0.call("join", "dyn-room")
    await until(lambda: shard_servers(redis_server.url, [channel]) == [1], what="we subscribe")
    await p1.call("join", "dyn-room")
    n0 = await node.connect("n0")
    await node.cmd("join", client="n0", room="dyn-room")
    assert shard_servers(redis_server.url, [channel, f"socket.io#/#{p0.sid()}#"]) == [2, 0]

    await node.cmd("emit", to="dyn-room", event="dyn", args=[1])
    await node.cmd("emit", event="mark")
    for p in (p0, p1):
        await p.wait_count("mark", 1)
    assert [p0.got("dyn"), p1.got("dyn")] == [[(1,)], [(1,)]]

    await p0.call("leave", "dyn-room")
    assert shard_servers(redis_server.url, [channel]) == [2]  # p1 still holds it here
    await p1.call("leave", "dyn-room")
    await until(lambda: shard_servers(redis_server.url, [channel]) == [1], what="we unsubscribe")
    assert await fetched_ids(p0, to="dyn-room") == {n0}


async def test_unreadable_shard_messages_are_counted_and_nothing_valid_is_lost(
    master: MasterProcess, node: NodePeer, redis_server: EmbeddedRedis, clients: Any
) -> None:
    metric = 'sio_master_messages_rejected_total{reason="bad_adapter_message"}'
    before = master.metric(metric)
    p0 = await clients(master.url(0), "p0")
    await p0.call("join", "bad-room")
    await until(lambda: shard_servers(redis_server.url, ["socket.io#/#bad-room#"]) == [1])
    bad = [  # readable-looking ones only where Node does not read: they would crash it
        ("socket.io#/#", b"\xc1not msgpack"),
        ("socket.io#/#", b"{not json"),
        ("socket.io#/#bad-room#", b'{"uid":"x","nsp":"/","type":3,"data":{"packet":{}}}'),
        ("socket.io#/#bad-room#", b'{"uid":"x","nsp":"/","type":"3"}'),
    ]
    with redis.Redis.from_url(redis_server.url) as client:
        for channel, body in bad:
            client.execute_command("SPUBLISH", channel, body)
    await node.cmd("emit", to="bad-room", event="fine", args=[1])
    await node.cmd("emit", event="mark")
    await p0.wait_count("mark", 1)
    assert p0.got("fine") == [(1,)]
    await until(lambda: master.metric(metric) == before + len(bad), what="4 counted")
