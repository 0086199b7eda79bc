"""Health endpoints for probes and balancers: the master's ``/readyz`` and ``/healthz`` (on the
metrics port) and every worker's ``/healthz`` (on its own port)."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from sio_cluster.master.embedded_redis import EmbeddedRedis
from tests.cluster import MasterProcess, running_redis, until


@pytest.fixture(params=["classic", "sharded"])
def adapter(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def redis_for(adapter: str) -> Iterator[EmbeddedRedis]:
    """The test's own Redis (it kills and restarts it): a Redis 7 for the sharded form."""
    yield from running_redis(version7=adapter == "sharded")


async def get(url: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return response.status, await response.json()


async def readyz(probes: str) -> tuple[int, dict[str, Any]] | None:
    try:
        return await get(f"{probes}/readyz")
    except aiohttp.ClientError:
        return None


async def test_readyz_follows_the_workers_and_every_redis_subscriber(
    start_master: Any, redis_for: EmbeddedRedis, clients: Any, adapter: str
) -> None:
    cluster: MasterProcess = await start_master(
        redis_url=redis_for.url, workers=2, extra=["--adapter", adapter]
    ).ready()
    probes = f"http://127.0.0.1:{cluster.metrics_port}"
    ready = {
        "ready": True,
        "workers": 2,
        "workers_expected": 2,
        "redis_subscribed": True,
        "redis_stalled": False,
        "stopping": False,
    }
    await until(lambda: _is(probes, 200, ready), what="ready")
    assert await get(f"{probes}/healthz") == (200, {"status": "ok", "pid": cluster.pid})
    await clients(cluster.url(1), "c")
    for worker in (0, 1):
        status, state = await get(f"http://127.0.0.1:{cluster.port_of(worker)}/healthz")
        assert (status, state["worker"], state["status"]) == (200, worker, "ok")
        assert state["connections"] == worker  # the one client is on worker 1

    redis_for.kill()  # every worker serves, but nothing from Redis arrives: not ready
    outage = {**ready, "ready": False, "redis_subscribed": False}
    await until(lambda: _is(probes, 503, outage), timeout=20, what="503 during the outage")
    redis_for.start()
    await until(lambda: _is(probes, 200, ready), timeout=20, what="ready again")


async def _is(probes: str, status: int, state: dict[str, Any]) -> bool:
    return await readyz(probes) == (status, state)


async def test_log_format_json_gives_one_object_per_line_from_every_process(
    start_master: Any, clients: Any
) -> None:
    cluster: MasterProcess = await start_master(workers=2, extra=["--log-format", "json"]).ready()
    await clients(cluster.url(1), "c")
    cluster.signal(signal.SIGTERM)
    assert await cluster.wait_exit() == 0
    lines = [json.loads(line) for line in cluster.lines]  # every line, or this raises
    assert {tuple(sorted(line)) for line in lines} == {("level", "logger", "message", "role", "ts")}
    assert {line["role"] for line in lines} == {"master", "worker-0", "worker-1"}
    messages = [(line["role"], line["message"]) for line in lines]
    assert ("master", "stopped") in messages and ("worker-1", "stopped") in messages
    assert any(role == "master" and m.startswith("cluster ready") for role, m in messages)
