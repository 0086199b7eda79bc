"""legacy_store.RedisStore against a real Redis: two stores, the 0.9 wire body, client hashes."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from sio_cluster.legacy_store.redis_store import RedisStore, json_pack
from sio_cluster.master.embedded_redis import EmbeddedRedis
from tests.cluster import until


@pytest.fixture
async def stores(redis_server: EmbeddedRedis) -> AsyncIterator[tuple[RedisStore, RedisStore]]:
    a = RedisStore(redis_url=redis_server.url, node_id=111)
    pub, sub, cmd = (aioredis.Redis.from_url(redis_server.url) for _ in range(3))
    b = RedisStore(redis_pub=pub, redis_sub=sub, redis_client=cmd, node_id=222)
    try:
        yield a, b
    finally:
        await a.destroy()
        await b.destroy()
        for client in (pub, sub, cmd):
            await client.aclose()


async def test_subscribers_get_other_nodes_messages_only(
    stores: tuple[RedisStore, RedisStore],
) -> None:
    a, b = stores
    got_a: list[tuple[Any, ...]] = []
    got_b: list[tuple[Any, ...]] = []

    async def consumer_b(*args: Any) -> None:  # coroutine consumers are awaited
        got_b.append(args)

    await a.subscribe("join", lambda *args: got_a.append(args))
    await b.subscribe("join", consumer_b)
    await a.publish("join", "sid-1", "/room")
    await b.publish("join", "sid-2", "/other")
    await a.publish("join", "sid-3", "/last")
    await until(lambda: len(got_b) == 2 and len(got_a) == 1)
    assert got_b == [("sid-1", "/room"), ("sid-3", "/last")]  # b's own message skipped
    assert got_a == [("sid-2", "/other")]

    await b.unsubscribe("join")
    await b.publish("join", "sid-4", "/after")
    await a.publish("join", "sid-5", "/after")  # b no longer listens
    await until(lambda: len(got_a) == 2)
    assert got_a[-1] == ("sid-4", "/after") and len(got_b) == 2


async def test_wire_body_is_nodeid_and_args(
    stores: tuple[RedisStore, RedisStore], redis_client: aioredis.Redis
) -> None:
    a, _ = stores
    async with redis_client.pubsub() as pubsub:
        await pubsub.subscribe("dispatch")
        await a.publish("dispatch", "room", '5:::{"name":"é"}', False, ["x"])
        message = None
        while message is None or message["type"] != "message":
            message = await pubsub.get_message(timeout=5)
            assert message is not None
    assert message["channel"] == b"dispatch"
    assert message["data"] == (
        '{"nodeId":111,"args":["room","5:::{\\"name\\":\\"é\\"}",false,["x"]]}'.encode()
    )


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_json_packing_is_byte_exact_with_node_json_stringify() -> None:
    value = {"nodeId": 1234567, "args": ["é/ü", 1, -2.5, None, True, {"a": [1, {"b": '\n\t"'}]}]}
    script = f"process.stdout.write(JSON.stringify({json.dumps(value)}))"
    node = subprocess.run(["node", "-e", script], capture_output=True, check=True)
    assert json_pack(value).encode() == node.stdout


async def test_client_hash_commands_and_expiration(
    stores: tuple[RedisStore, RedisStore], redis_client: aioredis.Redis
) -> None:
    a, b = stores
    client = a.client("client-42")
    await client.set("nickname", "guillermo")
    await client.set("count", 3)
    assert await redis_client.hgetall("client-42") == {b"nickname": b"guillermo", b"count": b"3"}
    assert await b.client("client-42").get("nickname") == b"guillermo"
    assert await client.has("nickname") is True
    assert await client.has("missing") is False
    await client.delete("nickname")
    assert await client.has("nickname") is False
    await client.destroy(expiration=60)
    assert 0 < await redis_client.ttl("client-42") <= 60
    await client.destroy()
    assert await redis_client.exists("client-42") == 0


def test_constructor_needs_clients_or_a_url() -> None:
    with pytest.raises(ValueError, match="redis_url"):
        RedisStore(redis_pub=aioredis.Redis())
