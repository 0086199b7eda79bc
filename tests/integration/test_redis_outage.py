"""Redis goes away and comes back; a master that falls behind is cut off by Redis and recovers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from sio_cluster.master.embedded_redis import EmbeddedRedis
from tests.cluster import MasterProcess, publish_until_delivered, running_redis, until


async def test_outage_keeps_local_traffic_buffers_outbound_and_resumes(
    start_master: Any, own_redis: EmbeddedRedis, own_redis_client: aioredis.Redis, clients: Any
) -> None:
    cluster: MasterProcess = await start_master(redis_url=own_redis.url, workers=2).ready()
    a = await clients(cluster.url(0), "a")
    b = await clients(cluster.url(1), "b")
    await a.call("join", "team")
    await b.call("join", "team")
    await own_redis_client.publish("ch:before", json.dumps({"to": "team", "data": 0}))
    await b.wait_count("before", 1)

    traffic = asyncio.create_task(_background_publishes(own_redis_client, count=300))
    own_redis.kill()
    await cluster.wait_log(r"Redis subscriber lost")
    # while Redis is down, a handler emit still reaches the sibling worker...
    await a.call("emit", {"event": "during", "args": [1], "to": "team"})
    await b.wait_count("during", 1)
    # ...and its copy for other hosts waits in the outbound buffer
    await until(lambda: cluster.metric("sio_master_redis_outbox_messages") >= 1, what="buffered")

    own_redis.start()  # same port, empty
    await cluster.wait_log(r"Redis is back", timeout=20)
    await until(lambda: cluster.metric("sio_master_redis_outbox_messages") == 0, what="flushed")
    assert cluster.metric("sio_master_redis_buffer_dropped_total") == 0
    await traffic
    async with aioredis.Redis.from_url(own_redis.url) as fresh:
        await publish_until_delivered(
            fresh, "ch:after", {"to": "team", "data": 2}, lambda: len(b.got("after")) >= 1
        )
    assert cluster.metric("sio_master_redis_reconnects_total") >= 1
    assert cluster.metric("sio_master_workers_alive") == 2
    assert cluster.proc is not None and cluster.proc.poll() is None
    ids = [args[0] for args in b.got("load")]
    assert len(ids) == len(set(ids))  # at most once, whatever the outage cut


async def _background_publishes(publisher: aioredis.Redis, count: int) -> None:
    """Bounded traffic across the outage; failures while Redis is down are expected."""
    for i in range(count):
        with contextlib.suppress(RedisError, OSError):
            await publisher.publish("ch:load", json.dumps({"to": "team", "data": i}))
        await asyncio.sleep(0.005)


async def test_subscriber_cut_by_output_buffer_limit_reconnects(
    start_master: Any, own_redis: EmbeddedRedis, own_redis_client: aioredis.Redis, clients: Any
) -> None:
    cluster: MasterProcess = await start_master(redis_url=own_redis.url, workers=1).ready()
    a = await clients(cluster.url(0), "a")
    await own_redis_client.config_set("client-output-buffer-limit", "pubsub 256kb 128kb 1")

    async def subscriber_count() -> int:
        listed = await own_redis_client.client_list()
        return sum(1 for c in listed if c.get("name", "").endswith(f":{cluster.pid}:sub"))

    assert await subscriber_count() == 1
    os.kill(cluster.pid, signal.SIGSTOP)  # the master falls behind
    try:
        payload = "x" * 10_000
        for _ in range(100):  # at most ~100 MB; kernel buffers absorb the first megabytes
            if await subscriber_count() == 0:
                break
            async with own_redis_client.pipeline(transaction=False) as pipe:
                for i in range(100):
                    pipe.publish(
                        "ch:flood", json.dumps({"data": i, "to": "nobody", "except": payload})
                    )
                await pipe.execute()
        assert await subscriber_count() == 0  # Redis cut the slow subscriber
    finally:
        os.kill(cluster.pid, signal.SIGCONT)
    await cluster.wait_log(r"Redis subscriber lost", timeout=10)
    await cluster.wait_log(r"Redis is back", timeout=20)
    await publish_until_delivered(
        own_redis_client, "ch:ok", {"data": 1}, lambda: len(a.got("ok")) >= 1
    )
    assert await subscriber_count() == 1


@pytest.fixture(params=["classic", "sharded"])
def adapter_redis(request: pytest.FixtureRequest) -> Iterator[tuple[str, EmbeddedRedis]]:
    """Each form of the cross-host bus, on a private Redis (a Redis 7 for the sharded one)."""
    adapter = str(request.param)
    for server in running_redis(version7=adapter == "sharded"):
        yield adapter, server


async def test_publishes_held_through_an_outage_wait_for_the_other_hosts_to_be_back(
    start_master: Any, adapter_redis: tuple[str, EmbeddedRedis], clients: Any
) -> None:
    """Host B's master is stopped through a Redis restart, so host A is back first. A handler
    emit made on A during the outage, for a client on B, is held until B's master subscribed
    again, then arrives once (published at once, Redis would have had no one to give it to)."""
    adapter, own_redis = adapter_redis
    channel = "socket.io-request#/#" if adapter == "classic" else "socket.io#/#"
    extra = ["--adapter", adapter]
    a_host: MasterProcess = await start_master(
        redis_url=own_redis.url, workers=1, extra=extra
    ).ready()
    b_host: MasterProcess = await start_master(
        redis_url=own_redis.url, workers=1, extra=[*extra, "--worker-health-timeout", "60"]
    ).ready()
    a = await clients(a_host.url(0), "a")
    b = await clients(b_host.url(0), "b")
    await b.call("join", "team")

    async def reached_b() -> bool:
        # sharded: B's master subscribes the room's channel a moment after the join
        if not b.got("before"):
            await a.call("emit", {"event": "before", "args": [0], "to": "team"})
        return bool(b.got("before"))

    await until(reached_b, 15, "an emit from A reaching b", interval=0.2)
    listening = f'sio_master_bus_listeners{{channel="{channel}"}}'
    await until(lambda: a_host.metric(listening) == 2, 15, "host A counting both hosts")

    os.kill(b_host.pid, signal.SIGSTOP)
    try:
        own_redis.kill()
        await a_host.wait_log(r"Redis subscriber lost")
        await a.call("emit", {"event": "held", "args": [1], "to": "team"})
        await until(lambda: a_host.metric("sio_master_redis_outbox_messages") == 1, what="held")
        own_redis.start()  # same port, empty: no subscriber until each master is back
        await a_host.wait_log(r"holding the buffered publishes", timeout=20)
        assert a_host.metric("sio_master_redis_outbox_messages") == 1
        assert b.got("held") == []
    finally:
        os.kill(b_host.pid, signal.SIGCONT)
    await b.wait_count("held", 1, timeout=20)
    await until(lambda: a_host.metric("sio_master_redis_outbox_messages") == 0, what="flushed")
    await a.call("emit", {"event": "after", "args": [2], "to": "team"})
    await b.wait_count("after", 1)
    assert b.got("held") == [(1,)]
    assert a_host.metric("sio_master_redis_buffer_dropped_total") == 0
