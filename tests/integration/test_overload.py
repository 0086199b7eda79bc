"""Overload: a flood that outlasts the health timeout kills no busy worker, and every loss
is counted; a stuck worker is still killed; a paused Redis shows in /readyz; a subscriber
cut by Redis is counted."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from sio_cluster.master.embedded_redis import EmbeddedRedis
from tests.cluster import MasterProcess, publish_until_delivered, until
from tests.flood import CountingClient, PacedPublisher

HEALTH_TIMEOUT = 3
FLOOD_RATE = 40_000  # messages/s: more than two workers deliver to 25 clients each here
FLOOD_SECONDS = 10
PIPE_BOUND = 12 * 2**20  # ~150,000 of the flood's frames: 7 s of work for an unhindered worker
BURNERS = 2  # processes spinning beside the cluster: the host is busy, as in a real spike


@contextlib.contextmanager
def cpu_burners(count: int, workers: Iterable[int]) -> Iterator[None]:
    """``count`` processes that only spin, until the block ends, on one core with the
    ``workers`` (pids). Why: on an idle machine the workers nearly kept pace with the flood
    (its backlog drained 2.1 s after the last message, under the health timeout) and the
    test proved nothing; burners sharing the cores, as a host in a traffic spike shares them
    with its other work, were not enough on a faster machine (1.9 s). On one core with
    ``count`` burners each worker gets at most a share of ``1 / (count + 2)`` of it, however
    fast the machine, while the master and the publisher keep the other cores."""
    core = {max(os.sched_getaffinity(0))}
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        for pid in [*workers, *(burner.pid for burner in burners)]:
            os.sched_setaffinity(pid, core)
        yield
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()


def backlog(cluster: MasterProcess) -> int:
    """Bytes queued in the master for both workers."""
    return sum(
        int(cluster.metric(f'sio_master_worker_backlog_bytes{{worker="{worker}"}}'))
        for worker in (0, 1)
    )


def dropped(cluster: MasterProcess, worker: int) -> int:
    """Messages the master dropped for ``worker`` (its pipe over the bound)."""
    return int(cluster.metric(f'sio_master_messages_dropped_total{{worker="{worker}"}}'))


@pytest.mark.timeout(300)  # the backlog drains in 4-60 s, by how busy this machine is
async def test_a_flood_longer_than_the_health_timeout_kills_no_worker(
    start_master: Any, redis_server: EmbeddedRedis
) -> None:
    # a pipe bound below the flood's size: what a worker too far behind misses is dropped,
    # and must be counted
    extra = [
        "--worker-health-timeout",
        str(HEALTH_TIMEOUT),
        "--worker-buffer-bytes",
        str(PIPE_BOUND),
    ]
    cluster = await start_master(workers=2, extra=extra).ready()
    pids = cluster.worker_pids()
    readers = [await CountingClient.join(cluster.port_of(i % 2), "flood") for i in range(49)]
    deaf = await CountingClient.join(cluster.port_of(0), "flood", reading=False)
    try:
        publisher = PacedPublisher(redis_server.host, redis_server.port, "flood", pad=24)
        with cpu_burners(BURNERS, pids.values()):
            await publisher.run(FLOOD_RATE, FLOOD_SECONDS)
            published_at = time.monotonic()
            total = publisher.sent
            await until(lambda: backlog(cluster) == 0, 150, "the master's backlog drained", 0.2)
            backlog_after = time.monotonic() - published_at

        def missing() -> list[int]:
            """What each reader lacks beyond the drops counted for its worker."""
            drops = [dropped(cluster, 0), dropped(cluster, 1)]
            short = [total - c.count - drops[i % 2] for i, c in enumerate(readers)]
            return [n for n in short if n]

        def settled() -> bool:
            return not missing() or any(c.closed for c in readers)

        await until(settled, 90, "every reader has every message or its loss", interval=0.5)
        drained_after = time.monotonic() - published_at
        kills = [m.string for m in cluster.log_matches(r"killing it")]
        drops = [dropped(cluster, 0), dropped(cluster, 1)]
        print(
            f"\nflood: {total} messages, the master's backlog drained {backlog_after:.1f} s "
            f"and every reader settled {drained_after:.1f} s after the "
            f"last; short: {missing()}; readers cut: {sum(c.closed for c in readers)}; "
            f"dropped (pipe full) per worker: {drops}; kills: {kills}"
        )
        # the point of the test: the backlog in the master outlasted the health timeout
        assert backlog_after > HEALTH_TIMEOUT, backlog_after
        assert kills == []
        assert cluster.worker_pids() == pids
        assert not any(c.closed for c in readers)
        for worker in (0, 1):
            assert cluster.metric(f'sio_master_workers_killed_total{{worker="{worker}"}}') == 0
            assert cluster.metric(f'sio_master_worker_restarts_total{{worker="{worker}"}}') == 0
        assert cluster.metric('sio_master_messages_lost_total{reason="pipe_full"}') == sum(drops)
        # the client that never read was aborted, and what it had unsent is counted
        slow = 'sio_master_slow_clients_dropped{worker="0"}'
        await until(lambda: cluster.metric(slow) == 1, 5, "the deaf client counted")
        assert cluster.metric('sio_master_slow_client_bytes_dropped{worker="0"}') > 4 * 2**20
    finally:
        for client in [*readers, deaf]:
            await client.close()


async def test_a_stuck_worker_is_still_killed_and_what_it_held_is_counted(
    start_master: Any, clients: Any, redis_client: aioredis.Redis
) -> None:
    cluster = await start_master(
        workers=2, extra=["--worker-health-timeout", str(HEALTH_TIMEOUT)]
    ).ready()
    a = await clients(cluster.url(0), "a")
    b = await clients(cluster.url(1), "b")
    await a.call("join", "r")
    await b.call("join", "r")
    stuck = cluster.worker_pids()[1]
    os.kill(stuck, signal.SIGSTOP)
    stopped_at = time.monotonic()
    for i in range(100):
        await redis_client.publish("ch:n", json.dumps({"to": "r", "data": i}))
    await a.wait_count("n", 100)
    await cluster.wait_log(r"worker 1 .* silent for \d+ s; killing it", timeout=3 * HEALTH_TIMEOUT)
    assert time.monotonic() - stopped_at < HEALTH_TIMEOUT + 2
    await cluster.wait_log(r"worker 1 ready again", timeout=10)
    assert cluster.metric('sio_master_workers_killed_total{worker="1"}') == 1
    assert cluster.metric('sio_master_loss_events_total{reason="worker_lost"}') == 1
    # the 100 messages were queued for it after its last report: every one is counted
    assert cluster.metric('sio_master_messages_lost_total{reason="worker_lost"}') == 100
    await cluster.wait_log(r"worker 1 \(pid \d+\) is gone with about 100 messages")


async def test_a_paused_redis_turns_readyz_503_within_the_bound_and_loses_nothing(
    start_master: Any, own_redis: EmbeddedRedis, clients: Any
) -> None:
    bound = 2.0
    cluster = await start_master(
        redis_url=own_redis.url, extra=["--redis-stall-timeout", str(bound)]
    ).ready()
    probes = f"http://127.0.0.1:{cluster.metrics_port}/readyz"
    client = await clients(cluster.url(0), "c")
    await client.call("join", "r")
    assert (await readyz(probes))[0] == 200
    assert own_redis.process is not None
    redis_pid = own_redis.process.pid
    os.kill(redis_pid, signal.SIGSTOP)
    paused_at = time.monotonic()
    try:
        # a publish made during the pause waits in Redis's socket
        _, writer = await asyncio.open_connection(own_redis.host, own_redis.port)
        body = json.dumps({"to": "r", "data": "during"}).encode()
        writer.write(b"*3\r\n$7\r\nPUBLISH\r\n$6\r\nch:msg\r\n$%d\r\n%s\r\n" % (len(body), body))
        await until(lambda: _status(probes, 503), 2 * bound + 2, "503 while Redis is paused")
        noticed = time.monotonic() - paused_at
        status, state = await readyz(probes)
        assert state["redis_stalled"] is True and state["redis_silent_seconds"] >= bound
        assert state["redis_subscribed"] is True  # connected, and deaf
        await cluster.wait_log(r"Redis has not answered the subscriber for \d+ s")
        await until(lambda: time.monotonic() - paused_at > 10, 15, "a 10 s pause", 0.2)
        assert (await readyz(probes))[0] == 503
    finally:
        os.kill(redis_pid, signal.SIGCONT)
    await until(lambda: _status(probes, 200), 2 * bound + 2, "ready again")
    await client.wait_count("msg", 1)
    assert client.got("msg") == [("during",)]
    writer.close()
    print(f"\nRedis paused 10 s: /readyz 503 after {noticed:.1f} s (bound {bound} s)")
    assert noticed < 2 * bound + 1
    assert cluster.metric('sio_master_loss_events_total{reason="subscriber_stall"}') == 0


async def test_a_body_redis_cannot_buffer_is_counted_as_a_subscriber_cut(
    start_master: Any, own_redis: EmbeddedRedis, own_redis_client: aioredis.Redis, clients: Any
) -> None:
    cluster = await start_master(redis_url=own_redis.url).ready()
    client = await clients(cluster.url(0), "c")
    await client.call("join", "r")
    # Redis's default limit (32 MB hard) cuts at 30 MiB only when something else is queued
    # for the subscriber already; half of it cuts on the body alone, every time
    await own_redis_client.config_set("client-output-buffer-limit", "pubsub 16mb 8mb 60")
    await own_redis_client.publish("ch:big", "x" * (30 * 2**20))
    await cluster.wait_log(r"most likely its client-output-buffer-limit pubsub", timeout=20)
    assert cluster.metric('sio_master_loss_events_total{reason="subscriber_cut"}') == 1
    assert cluster.metric('sio_master_messages_lost_total{reason="subscriber_cut"}') >= 1
    assert cluster.metric('sio_master_loss_events_total{reason="subscriber_lost"}') == 0
    await publish_until_delivered(
        own_redis_client, "ch:after", {"to": "r"}, lambda: bool(client.got("after"))
    )


async def readyz(url: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return response.status, await response.json()


async def _status(url: str, status: int) -> bool:
    return (await readyz(url))[0] == status


async def test_a_subscriber_remade_after_a_long_stall_is_counted(
    start_master: Any, own_redis: EmbeddedRedis, own_redis_client: aioredis.Redis, clients: Any
) -> None:
    # the health interval cut from 15 s to 2 s, and the stall timeout (10 s, which would
    # outlast twice the interval) to 1 s: the give-up is the interval's, after 4 s
    interval = 2.0
    extra = ["--redis-health-check-interval", str(interval), "--redis-stall-timeout", "1"]
    cluster = await start_master(redis_url=own_redis.url, extra=extra).ready()
    client = await clients(cluster.url(0), "c")
    await client.call("join", "r")
    assert own_redis.process is not None
    redis_pid = own_redis.process.pid
    os.kill(redis_pid, signal.SIGSTOP)
    try:  # 4 s without an answer: the subscriber gives up on the connection and remakes it
        lost = await cluster.wait_log(
            r"Redis subscriber lost \(no answer to PING for (\d+) s", timeout=4 * interval + 10
        )
    finally:
        os.kill(redis_pid, signal.SIGCONT)
    assert int(lost.group(1)) >= 2 * interval  # not before twice the interval
    await cluster.wait_log(r"Redis stopped answering and the subscriber was remade", timeout=20)
    assert cluster.metric('sio_master_loss_events_total{reason="subscriber_stall"}') == 1
    assert cluster.metric('sio_master_loss_events_total{reason="subscriber_cut"}') == 0
    await publish_until_delivered(
        own_redis_client, "ch:after", {"to": "r"}, lambda: bool(client.got("after"))
    )
