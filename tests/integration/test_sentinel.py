"""Redis behind Sentinel: the masters follow a failover (the primary killed, a replica promoted).

Real processes only: a primary, a replica and three sentinels (one of them dead before the
masters start), two masters as two hosts, python-socketio clients.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from sio_cluster.common.redis.topology import SentinelPrimary
from sio_cluster.common.redis.url import parse_sentinel_url
from tests.cluster import (
    REPO,
    MasterProcess,
    Recorder,
    check_exactly_once_after_recovery,
    publish_until_delivered,
    until,
)
from tests.redis_sentinel import SentinelSet


@pytest.fixture
def sentinels() -> Iterator[SentinelSet]:
    found = SentinelSet()
    try:
        yield found
    finally:
        found.close()


def named_clients(client_list: list[dict[str, Any]], pid: int) -> list[str]:
    """The names of one master's connections in a CLIENT LIST."""
    return sorted(c["name"].rsplit(":", 1)[1] for c in client_list if f":{pid}:" in c["name"])


async def test_a_failover_is_followed_and_delivery_resumes_exactly_once(
    sentinels: SentinelSet, start_master: Any, clients: Any
) -> None:
    sentinels.sentinels[0].kill()  # listed first in the URL: discovery must skip it
    url = sentinels.url()
    host_a: MasterProcess = await start_master(redis_url=url, workers=2).ready()
    host_b: MasterProcess = await start_master(redis_url=url, workers=1).ready()
    a0 = await clients(host_a.url(0), "a0")
    a1 = await clients(host_a.url(1), "a1")
    b0 = await clients(host_b.url(0), "b0")
    everyone = [a0, a1, b0]
    for client in everyone:
        await client.call("join", "team")
    primary = aioredis.Redis(port=sentinels.primary.port, decode_responses=True)
    await primary.publish("ch:before", json.dumps({"to": "team", "data": 0}))
    await a0.call("emit", {"event": "across", "args": [1], "to": "team", "skip_sid": a0.sid()})
    for client in everyone:
        await client.wait_count("before", 1)
    await until(lambda: len(a1.got("across")) == 1 and len(b0.got("across")) == 1)
    # one subscriber and at most two command connections per host, on the primary
    for host in (host_a, host_b):
        names = named_clients(await primary.client_list(), host.pid)
        assert names[-1] == "sub" and len(names) <= 3, names  # cmd: opened when used
    await primary.aclose()

    killed = time.monotonic()
    sentinels.primary.kill()
    await host_a.wait_log(r"Redis subscriber lost")
    # during the outage a handler emit still reaches the sibling worker; its copy for the
    # other host waits in the outbound buffer
    await a0.call("emit", {"event": "during", "args": [1], "to": "team", "skip_sid": a0.sid()})
    await a1.wait_count("during", 1)
    await until(lambda: host_a.metric("sio_master_redis_outbox_messages") >= 1, what="buffered")

    replica = ("127.0.0.1", sentinels.replica.port)
    await until(lambda: sentinels.primary_address() == replica, timeout=30, what="promotion")
    promoted = time.monotonic()
    new_primary = aioredis.Redis(port=sentinels.replica.port, decode_responses=True)
    await publish_until_delivered(
        new_primary,
        "ch:probe",
        {"to": "team", "data": 1},
        lambda: all(c.got("probe") for c in everyone),
        timeout=20,
    )
    recovered = time.monotonic()
    print(
        f"\nfailover: primary killed -> promoted {promoted - killed:.2f} s, "
        f"promoted -> both hosts delivering {recovered - promoted:.2f} s"
    )
    assert recovered - promoted < 10
    await host_a.wait_log(r"Sentinel names a new primary")
    await until(lambda: host_a.metric("sio_master_redis_outbox_messages") == 0, what="flushed")
    assert host_a.metric("sio_master_redis_buffer_dropped_total") == 0

    # after recovery: every message exactly once, in order, on every host
    await check_exactly_once_after_recovery(new_primary, a0, everyone, 30)
    for client in everyone:
        assert len(client.got("before")) == 1
        assert len(client.got("during")) <= 1  # at most once, whatever the outage cut
    for host in (host_a, host_b):
        names = named_clients(await new_primary.client_list(), host.pid)
        assert names[-1] == "sub" and len(names) <= 3, names  # cmd: opened when used
    await new_primary.aclose()


async def test_store_and_cleanup_work_through_sentinel(
    sentinels: SentinelSet, start_master: Any, clients: Any
) -> None:
    url = sentinels.url()
    host: MasterProcess = await start_master(redis_url=url, workers=1, extra=["--store"]).ready()
    client: Recorder = await clients(host.url(0), "c")
    await client.call("join", "kept")
    primary = aioredis.Redis(port=sentinels.primary.port, decode_responses=True)

    async def stored() -> bool:
        return bool(await primary.sismember("socket.io#kept", client.sid()))

    await until(stored, what="store keys")
    await primary.aclose()
    cleanup = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "scripts/cleanup.py", "--redis-url", url, "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cleanup.returncode == 0, cleanup.stderr
    report = json.loads(cleanup.stdout.strip().splitlines()[-1])
    assert (report["live_nodes"], report["stale_sockets"]) == (1, 0), report


async def test_commands_wait_for_a_free_connection_instead_of_failing(
    sentinels: SentinelSet,
) -> None:
    topology = SentinelPrimary(parse_sentinel_url(sentinels.url()))
    commands = topology.commands(2, "sio-test:cmd")
    started = time.monotonic()
    # five blocking pops of 0.2 s on two connections: they queue, none fails
    results = await asyncio.gather(*(commands.blpop([f"empty{i}"], 0.2) for i in range(5)))
    assert results == [None] * 5
    assert time.monotonic() - started >= 0.55
    names = [c["name"] for c in await commands.client_list()]
    assert names.count("sio-test:cmd") == 2
    await commands.aclose()
    await topology.close()
