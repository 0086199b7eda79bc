"""The shard subscriber (``--adapter sharded``) reports a mute Redis node as the classic one
does: a Cluster node serving a shard channel paused while the ``ch:*`` subscriber's node
answers turns ``/readyz`` 503 within ``--redis-stall-timeout``, is logged, and delivers what
was published during the pause once it answers; a connection given up as mute is remade and
counted as ``subscriber_stall``."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from bench.redis_cluster import RedisCluster
from sio_cluster.common.redis.topology import OneRedis
from sio_cluster.master.bus.sharded_wire import MessageType, encode, event_packet, opts_of
from sio_cluster.master.embedded_redis import EmbeddedRedis
from sio_cluster.master.pubsub.liveness import Bounds
from sio_cluster.master.pubsub.resp import command
from sio_cluster.master.pubsub.sharded_source import ShardedSource
from sio_cluster.wire.operations import Selector
from tests.cluster import MasterProcess, running_cluster, running_redis, until
from tests.integration.test_overload import _status, readyz
from tests.integration.test_redis_cluster import owner_of, subscriber_node, url_of

BOUND = 2.0  # --redis-stall-timeout of the paused-node test


@pytest.fixture
def quiet_cluster() -> Iterator[RedisCluster]:
    """A Redis 7 Cluster that takes no failover for a minute: a paused primary stays one."""
    for cluster in running_cluster(version7=True):
        for node in cluster.live():
            with cluster.client(node) as client:
                client.config_set("cluster-node-timeout", 60_000)
        yield cluster


def room_broadcast(room: str, data: list[Any]) -> bytes:
    """What another server of the cluster publishes for a broadcast to ``room``."""
    selector = Selector((room,), ())
    packet = {"packet": event_packet("/", data), "opts": opts_of(selector)}
    return encode("0123456789abcdef", "/", MessageType.BROADCAST, packet)


async def test_a_paused_shard_node_turns_readyz_503_and_loses_nothing(
    quiet_cluster: RedisCluster, start_master: Any, clients: Any
) -> None:
    master: MasterProcess = await start_master(
        redis_url=url_of(quiet_cluster, [0, 1, 2]),
        workers=1,
        extra=["--adapter", "sharded", "--redis-stall-timeout", str(BOUND)],
    ).ready()
    probes = f"http://127.0.0.1:{master.metrics_port}/readyz"
    classic = await subscriber_node(quiet_cluster, master.pid)
    # a room whose shard channel is served by a node the ch:* subscriber is not on
    for i in range(64):
        room, channel = f"r{i}", f"socket.io#/#r{i}#"
        paused = await owner_of(quiet_cluster, channel)
        if paused.port != classic.port:
            break
    client = await clients(master.url(0), "c")
    await client.call("join", room)
    async with aioredis.Redis(port=paused.port) as node:

        async def subscribed() -> bool:
            return (await node.execute_command("PUBSUB", "SHARDNUMSUB", channel))[1] == 1

        await until(subscribed, 10, "the room's shard channel subscribed")
    assert (await readyz(probes))[0] == 200
    assert paused.process is not None
    os.kill(paused.process.pid, signal.SIGSTOP)
    paused_at = time.monotonic()
    try:
        # published during the pause: waits in the paused node's socket
        _, writer = await asyncio.open_connection("127.0.0.1", paused.port)
        writer.write(command("SPUBLISH", channel, room_broadcast(room, ["during", 1])))
        await until(lambda: _status(probes, 503), 2 * BOUND + 2, "503 while the node is paused")
        noticed = time.monotonic() - paused_at
        _, state = await readyz(probes)
        assert state["redis_stalled"] is True and state["redis_silent_seconds"] >= BOUND
        assert state["redis_subscribed"] is True  # connected, and deaf
        await master.wait_log(
            rf"Redis has not answered the shard subscriber on redis://127\.0\.0\.1:{paused.port}/0 "
            r"for \d+ s \(stalled\?\)"
        )
        # the ch:* subscriber's node answers: its messages still arrive
        async with aioredis.Redis(port=classic.port) as node:
            await node.publish("ch:live", json.dumps({"to": room, "data": "during"}))
        await client.wait_count("live", 1)
    finally:
        os.kill(paused.process.pid, signal.SIGCONT)
    await until(lambda: _status(probes, 200), 10, "ready again")
    await master.wait_log(rf"Redis answers the shard subscriber on \S+:{paused.port}/0 again")
    await client.wait_count("during", 1)
    assert client.got("during") == [(1,)]
    assert client.got("live") == [("during",)]
    writer.close()
    print(f"\nshard node paused: /readyz 503 after {noticed:.1f} s (bound {BOUND} s)")
    assert master.metric('sio_master_loss_events_total{reason="subscriber_stall"}') == 0
    assert len(master.log_matches("Redis has not answered the shard subscriber")) == 1


@pytest.fixture
def redis7() -> Iterator[EmbeddedRedis]:
    yield from running_redis(version7=True)


async def test_a_shard_connection_mute_past_its_bound_is_remade_and_counted_as_a_stall(
    redis7: EmbeddedRedis, caplog: pytest.LogCaptureFixture
) -> None:
    """In process, with the 15 s health interval cut to 0.5 s: stalled after 0.6 s, given up
    after 1 s, remade once the node answers, and its loss counted (a master gives up after
    twice --redis-health-check-interval, as for the classic subscriber:
    tests/integration/test_overload.py)."""
    caplog.set_level(logging.INFO)
    losses: list[tuple[str, int]] = []
    received: list[tuple[bytes, bytes]] = []
    source = ShardedSource(
        OneRedis(redis7.url),
        bounds=Bounds(stall_timeout=0.6, health_interval=0.5),
        on_loss=lambda *loss: losses.append(loss),
    )
    source.deliver_to(lambda channel, body: received.append((channel, body)))
    source.add_channels(["socket.io#/#"])
    task = asyncio.create_task(source.run())
    assert redis7.process is not None
    try:
        await until(lambda: source.connected, 10, "subscribed")
        os.kill(redis7.process.pid, signal.SIGSTOP)
        try:
            await until(lambda: "no answer to PING for" in caplog.text, 10, "given up")
            assert "Redis has not answered the shard subscriber on" in caplog.text
        finally:
            os.kill(redis7.process.pid, signal.SIGCONT)
        await until(lambda: bool(losses), 15, "the loss counted")
        assert losses == [("subscriber_stall", 0)]
        assert "the shard subscriber on redis://127.0.0.1" in caplog.text
        assert "was remade; deaf for" in caplog.text
        async with aioredis.Redis.from_url(redis7.url) as publisher:

            async def delivered() -> bool:
                if not received:
                    await publisher.execute_command("SPUBLISH", "socket.io#/#", "after")
                return bool(received)

            await until(delivered, 10, "a message after the stall", interval=0.1)
        assert received[0] == (b"socket.io#/#", b"after")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
