"""Several masters on one Redis form one cluster, in either form of the redis-adapter
protocol: every test runs with ``--adapter classic`` (PUBLISH, on the tests' Redis) and
with ``--adapter sharded`` (SPUBLISH/SSUBSCRIBE, on a Redis 7)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from sio_cluster.master.embedded_redis import EmbeddedRedis
from tests.cluster import MasterProcess, Recorder, op, running_redis, until


@pytest.fixture(scope="module", params=["classic", "sharded"])
def adapter(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def redis_server(adapter: str) -> Iterator[EmbeddedRedis]:
    """The module's Redis: a Redis 7 for the sharded form (it needs SSUBSCRIBE)."""
    yield from running_redis(version7=adapter == "sharded")


@pytest.fixture(scope="module")
def hosts(
    redis_server: EmbeddedRedis, adapter: str
) -> Iterator[tuple[MasterProcess, MasterProcess]]:
    """Two masters with two workers each: two hosts of one cluster."""
    extra = ["--adapter", adapter]
    with (
        MasterProcess(redis_server.url, workers=2, extra=extra).start() as a,
        MasterProcess(redis_server.url, workers=2, extra=extra).start() as b,
    ):
        yield a.ready_sync(), b.ready_sync()


async def everyone(hosts: tuple[MasterProcess, MasterProcess], clients: Any) -> list[Recorder]:
    """a0, a1 on host A's two workers; b0, b1 on host B's."""
    a, b = hosts
    return [
        await clients(a.url(0), "a0"),
        await clients(a.url(1), "a1"),
        await clients(b.url(0), "b0"),
        await clients(b.url(1), "b1"),
    ]


async def test_handler_emits_reach_every_host_exactly_once(
    hosts: tuple[MasterProcess, MasterProcess], clients: Any
) -> None:
    a0, a1, b0, b1 = all_ = await everyone(hosts, clients)
    for r in (a1, b0):
        await r.call("join", "x-room")
    await a0.call("emit", {"event": "to-room", "args": [1], "to": "x-room"})
    await a0.call("emit", {"event": "to-all", "args": ["all"], "skip_sid": b1.sid()})
    await a0.call("emit", {"event": "to-sid", "args": [], "to": b1.sid()})
    await a0.call(
        "emit",
        {"event": "to-list", "args": [2], "to": ["x-room", b1.sid()], "skip_sid": [b0.sid()]},
    )
    await a0.call("emit", {"event": "mark", "args": []})  # fence along the same path
    for r in all_:
        await r.wait_count("mark", 1)
    assert [r.got("to-room") for r in all_] == [[], [(1,)], [(1,)], []]
    assert [r.got("to-all") for r in all_] == [[("all",)]] * 3 + [[]]
    assert [r.got("to-sid") for r in all_] == [[], [], [], [()]]
    assert [r.got("to-list") for r in all_] == [[], [(2,)], [], [(2,)]]


async def test_one_ch_publish_reaches_every_targeted_socket_of_the_cluster_once(
    hosts: tuple[MasterProcess, MasterProcess], clients: Any, redis_client: aioredis.Redis
) -> None:
    all_ = await everyone(hosts, clients)
    for r in all_[1:]:
        await r.call("join", "ch-room")
    await redis_client.publish("ch:news", json.dumps({"to": "ch-room", "data": "n"}))
    await redis_client.publish("ch:mark", json.dumps({}))
    for r in all_:
        await r.wait_count("mark", 1)
    assert [r.got("news") for r in all_] == [[], [("n",)], [("n",)], [("n",)]]


async def test_remote_room_operations_and_acks_across_hosts(
    hosts: tuple[MasterProcess, MasterProcess], clients: Any, redis_client: aioredis.Redis
) -> None:
    a0, a1, b0, b1 = await everyone(hosts, clients)
    # read-your-writes across hosts: the owning master confirmed before the call returned
    assert await op(a0, "enter_room", sid=b0.sid(), room="far-room") == "ok"
    await a1.call("emit", {"event": "after-join", "args": [], "to": "far-room"})
    await b0.wait_count("after-join", 1)
    assert await b0.call("join", "probe") == ["far-room", "probe"]
    assert await op(a0, "leave_room", sid=b0.sid(), room="far-room") == "ok"
    assert await b0.call("join", "probe") == ["probe"]
    # a socket of this host is handled here, without waiting for other hosts
    started = asyncio.get_running_loop().time()
    assert await op(a0, "enter_room", sid=a1.sid(), room="near-room") == "ok"
    assert asyncio.get_running_loop().time() - started < 2.5  # the remote timeout is 5 s
    assert await a1.call("join", "probe") == ["near-room", "probe"]
    # an unknown sid is an error once every host has had its chance to answer
    result = await op(a0, "enter_room", sid="nobody", room="r")
    assert result["error"].startswith("KeyError")

    answering = Recorder("answering")
    answering.client.on("question", lambda data: ["answer", data])
    try:
        await answering.connect(hosts[1].url(1))
        assert await op(a0, "call", sid=answering.sid(), event="question", data=5) == ["answer", 5]
    finally:
        await answering.close()

    assert await op(a1, "disconnect", sid=b1.sid()) == "ok"
    await until(lambda: not b1.client.connected, what="b1 disconnected by host A")


async def test_fetch_join_and_server_side_emit_across_hosts(
    hosts: tuple[MasterProcess, MasterProcess], clients: Any
) -> None:
    a0, a1, b0, b1 = await everyone(hosts, clients)
    await a1.call("join", "wide")
    await b1.call("join", "wide")
    fetched = await op(a0, "fetch_sockets", to="wide")
    assert fetched == sorted(
        [{"id": r.sid(), "rooms": sorted([r.sid(), "wide"])} for r in (a1, b1)],
        key=lambda s: str(s["id"]),
    )
    assert await op(b0, "sockets_join", rooms=["wider"], to="wide") == 2
    assert await a1.call("join", "probe") == ["probe", "wide", "wider"]
    assert await b1.call("join", "probe") == ["probe", "wide", "wider"]

    # server_side_emit: this host's other worker, and host B (counted as one server)
    assert await op(a0, "server_side_emit", args=["hi"]) == 2
    for r in (a1, b0, b1):
        await r.wait_count("announced", 1)
    await a0.call("emit", {"event": "mark", "args": [], "to": a0.sid()})
    await a0.wait_count("mark", 1)
    assert a0.got("announced") == []


async def test_redis_connections_per_host_do_not_grow_with_workers(
    start_master: Any, clients: Any, redis_client: aioredis.Redis, adapter: str
) -> None:
    counts: dict[int, list[str]] = {}
    for workers in (1, 4):
        cluster = await start_master(workers=workers, extra=["--adapter", adapter]).ready()
        for i in range(workers):  # worker broadcasts: published on a command connection
            client = await clients(cluster.url(i), f"w{i}")
            await client.call("emit", {"event": "e", "args": [], "to": "nobody"})
        await redis_client.delete("sio-master:rejected")
        async with redis_client.pipeline(transaction=False) as pipe:
            for _ in range(50):
                pipe.publish("ch:bad", "not json")
            await pipe.execute()

        async def kept(pid: int = cluster.pid) -> int:
            entries = await redis_client.lrange("sio-master:rejected", 0, -1)
            return sum(1 for e in entries if json.loads(e)["pid"] == pid)

        async def all_kept() -> bool:  # by this master's command connections
            return await kept() >= 50

        await until(all_kept, what=f"50 rejected messages kept by {workers} worker(s)' master")
        assert await kept() == 50
        named = [
            c["name"].rsplit(":", 1)[1]
            for c in await redis_client.client_list()
            if c.get("name", "").startswith("sio-master:") and f":{cluster.pid}:" in c["name"]
        ]
        counts[workers] = sorted(named)
    shard_subscribers = 1 if adapter == "sharded" else 0  # one Redis: one node to subscribe on
    for names in counts.values():
        assert names.count("sub") == 1
        assert names.count("ssub") == shard_subscribers
        assert 1 <= names.count("cmd") <= 2  # COMMAND_CONNECTIONS
        assert len(names) <= 3 + shard_subscribers
