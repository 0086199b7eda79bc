"""The master under a minimal Redis ACL user: only the commands, keys and channels it needs.

``ACL LOG`` must stay empty: nothing the master does is denied, so the documented ACL lines
(README, "A minimal Redis ACL user") are enough, and every connection authenticates as that
user."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from sio_cluster.master.embedded_redis import EmbeddedRedis
from tests.cluster import MasterProcess, op, running_redis, until

# what README.md documents, word for word
MASTER_ACL = (
    "on >s3cret resetchannels &ch:* &socket.io#* &socket.io-* resetkeys ~sio-master:rejected "
    "-@all +ping +client|setname +psubscribe +subscribe +publish "
    "+pubsub|numsub +lpush +ltrim"
)
SHARDED_ACL = MASTER_ACL + " +spublish +ssubscribe +pubsub|shardnumsub"  # --adapter sharded
STORE_ACL = (
    "~socket.io#* ~socket.io:* +multi +exec +sadd +srem +smembers +del +hset +hdel +hscan +set "
    "+eval +evalsha +script|load +script|exists +exists +scan"
)


@pytest.fixture
def own_redis() -> Iterator[EmbeddedRedis]:
    """A Redis 7 of the test's own, as Debian ships (.ci/run installs it). On 6.2, redis-py's
    CLIENT SETINFO (a 7.2 command; redis-py ignores its failure) shows as a denial."""
    yield from running_redis(version7=True)


@pytest.fixture
async def own_redis_client(own_redis: EmbeddedRedis) -> AsyncIterator[aioredis.Redis]:
    async with aioredis.Redis.from_url(own_redis.url, decode_responses=True) as client:
        yield client


async def acl_user(client: aioredis.Redis, rules: str) -> None:
    await client.execute_command("ACL", "SETUSER", "sio", *rules.split())
    await client.execute_command("ACL", "LOG", "RESET")


async def test_the_master_works_as_a_minimal_acl_user(
    start_master: Any, own_redis: EmbeddedRedis, own_redis_client: aioredis.Redis, clients: Any
) -> None:
    await acl_user(own_redis_client, MASTER_ACL)
    url = f"redis://sio:s3cret@127.0.0.1:{own_redis.port}/0"
    host_a: MasterProcess = await start_master(redis_url=url, workers=2).ready()
    host_b: MasterProcess = await start_master(redis_url=url, workers=1).ready()
    a = await clients(host_a.url(0), "a")
    b = await clients(host_b.url(0), "b")
    for client in (a, b):
        await client.call("join", "team")
    await own_redis_client.publish("ch:news", json.dumps({"to": "team", "data": 1}))
    await own_redis_client.publish("ch:bad", "not json")  # kept in the rejected list
    await a.call("emit", {"event": "across", "args": [2], "to": "team"})  # host A -> host B
    await b.wait_count("across", 1)
    await a.wait_count("news", 1)
    await b.wait_count("news", 1)
    await until(lambda: _kept(own_redis_client), what="the rejected message kept")
    log = await own_redis_client.execute_command("ACL", "LOG")
    assert log == [], [(e["object"], e["reason"], e["client-info"].split(" cmd=")[-1]) for e in log]
    users = {c["user"] for c in await own_redis_client.client_list() if "sio-master" in c["name"]}
    assert users == {"sio"}


async def test_the_sharded_adapter_adds_only_the_sharded_commands(
    start_master: Any, own_redis: EmbeddedRedis, own_redis_client: aioredis.Redis, clients: Any
) -> None:
    """One host: its broadcast is SPUBLISHed all the same, a fetch counts the servers with
    SHARDNUMSUB, and the start tried the shard subscriber's first channels."""
    await acl_user(own_redis_client, SHARDED_ACL)
    url = f"redis://sio:s3cret@127.0.0.1:{own_redis.port}/0"
    host: MasterProcess = await start_master(
        redis_url=url, workers=1, extra=["--adapter", "sharded"]
    ).ready()
    a = await clients(host.url(0), "a")
    await a.call("join", "team")
    await a.call("emit", {"event": "out", "args": [1], "to": "team"})
    assert [s["id"] for s in await op(a, "fetch_sockets", to="team")] == [a.sid()]
    await own_redis_client.publish("ch:news", json.dumps({"to": "team", "data": 1}))
    await a.wait_count("news", 1)
    log = await own_redis_client.execute_command("ACL", "LOG")
    assert log == [], [(e["object"], e["reason"], e["client-info"].split(" cmd=")[-1]) for e in log]
    names = {
        c["name"].rsplit(":", 1)[1]
        for c in await own_redis_client.client_list()
        if "sio-master" in c["name"] and c["user"] == "sio"
    }
    assert names == {"sub", "ssub", "cmd"}


async def test_with_store_the_acl_adds_only_the_store_keys_and_commands(
    start_master: Any, own_redis: EmbeddedRedis, own_redis_client: aioredis.Redis, clients: Any
) -> None:
    await acl_user(own_redis_client, f"{MASTER_ACL} {STORE_ACL}")
    url = f"redis://sio:s3cret@127.0.0.1:{own_redis.port}/0"
    host: MasterProcess = await start_master(redis_url=url, workers=1, extra=["--store"]).ready()
    a = await clients(host.url(0), "a")
    await a.call("join", "team")
    await until(lambda: _exists(own_redis_client, "socket.io#team"), what="store written")
    await a.close()
    await until(lambda: _gone(own_redis_client, "socket.io#team"), what="store cleaned")
    log = await own_redis_client.execute_command("ACL", "LOG")
    assert log == [], [(e["object"], e["reason"], e["client-info"].split(" cmd=")[-1]) for e in log]


async def _gone(client: aioredis.Redis, key: str) -> bool:
    return not await client.exists(key)


async def _exists(client: aioredis.Redis, key: str) -> bool:
    return bool(await client.exists(key))


async def _kept(client: aioredis.Redis) -> bool:
    return bool(await client.llen("sio-master:rejected"))
