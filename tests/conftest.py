"""Fixtures: real Redis servers, real masters, real clients; everything torn down."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from sio_cluster.master.embedded_redis import EmbeddedRedis
from tests.cluster import MasterProcess, Recorder, running_redis


@pytest.fixture(scope="module")
def redis_server() -> Iterator[EmbeddedRedis]:
    """A private redis-server for the test module, on a free loopback port."""
    yield from running_redis()


@pytest.fixture
def own_redis() -> Iterator[EmbeddedRedis]:
    """A private redis-server for one test (it may kill or restart it)."""
    yield from running_redis()


@pytest.fixture
async def redis_client(redis_server: EmbeddedRedis) -> AsyncIterator[aioredis.Redis]:
    """A client of the module's Redis; replies are bytes."""
    async with aioredis.Redis.from_url(redis_server.url) as client:
        yield client


@pytest.fixture
async def own_redis_client(own_redis: EmbeddedRedis) -> AsyncIterator[aioredis.Redis]:
    """A client of the test's own Redis; replies are decoded to str."""
    async with aioredis.Redis.from_url(own_redis.url, decode_responses=True) as client:
        yield client


@pytest.fixture(scope="module")
def cluster(redis_server: EmbeddedRedis) -> Iterator[MasterProcess]:
    """One master with two workers, shared by the tests of a module."""
    with MasterProcess(redis_server.url, workers=2).start() as master:
        yield master.ready_sync()


@pytest.fixture(scope="module")
def hosts(redis_server: EmbeddedRedis) -> Iterator[tuple[MasterProcess, MasterProcess]]:
    """Two masters with two workers each on the module's Redis: two hosts of one cluster."""
    with (
        MasterProcess(redis_server.url, workers=2).start() as a,
        MasterProcess(redis_server.url, workers=2).start() as b,
    ):
        yield a.ready_sync(), b.ready_sync()


@pytest.fixture
def start_master(redis_server: EmbeddedRedis) -> Iterator[Callable[..., MasterProcess]]:
    """Start masters on the module's Redis (``redis_url=None`` for an embedded one)."""
    started: list[MasterProcess] = []

    def start(redis_url: Any = "module", **kwargs: Any) -> MasterProcess:
        url = redis_server.url if redis_url == "module" else redis_url
        master = MasterProcess(url, **kwargs).start()
        started.append(master)
        return master

    try:
        yield start
    finally:
        for master in started:
            master.cleanup()


@pytest.fixture
async def clients() -> AsyncIterator[Callable[..., Any]]:
    """Make connected :class:`Recorder` clients; all are closed after the test."""
    made: list[Recorder] = []

    async def connect(url: str, name: str = "", namespaces: tuple[str, ...] = ("/",)) -> Recorder:
        recorder = Recorder(name or f"client{len(made)}")
        made.append(recorder)
        return await recorder.connect(url, namespaces)

    try:
        yield connect
    finally:
        for recorder in made:
            await recorder.close()
