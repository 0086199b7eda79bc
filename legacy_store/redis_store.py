"""An asyncio port of socket.io 0.9's ``RedisStore``, wire-compatible with it.

Why: deployments migrating from Node 0.9 keep processes that talk through this
store (``publish``/``subscribe`` between nodes, per-client hashes). The body of a
publish is ``pack({"nodeId": node_id, "args": [...]})`` on the channel named
``name`` itself (plain SUBSCRIBE, no prefix), and a subscriber ignores its own
node's messages, exactly as 0.9 does. With the default JSON packing the bytes
equal Node's ``JSON.stringify`` output (compact, key order nodeId then args,
non-ASCII unescaped) for the JSON values both languages write the same way.

Per-client data maps to hash commands on the bare client id:
``get``/``set``/``has``/``delete`` are HGET/HSET/HEXISTS/HDEL and ``destroy`` is
DEL, or EXPIRE when given an expiration.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import random
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

Packer = Callable[[Any], str | bytes]
Unpacker = Callable[[str | bytes], Any]


def json_pack(value: Any) -> str:
    """``JSON.stringify``: compact separators, UTF-8 left unescaped."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def default_node_id() -> int:
    """0.9's default: ``Math.abs(Math.random() * Math.random() * Date.now() | 0)``."""
    value = int(random.random() * random.random() * time.time() * 1000) & 0xFFFFFFFF
    return abs(value - (1 << 32) if value >= 1 << 31 else value)


class StoreClient:
    """Per-client data of one client id, stored as a Redis hash under the id itself."""

    def __init__(self, store: RedisStore, client_id: str) -> None:
        self.store = store
        self.id = client_id

    async def get(self, key: str) -> bytes | str | None:
        """HGET: bytes, or str when the client decodes responses; None if absent."""
        value: bytes | str | None = await self.store.cmd.hget(self.id, key)
        return value

    async def set(self, key: str, value: str | bytes | int | float) -> None:
        await self.store.cmd.hset(self.id, key, value)

    async def has(self, key: str) -> bool:
        return bool(await self.store.cmd.hexists(self.id, key))

    async def delete(self, key: str) -> None:
        await self.store.cmd.hdel(self.id, key)

    async def destroy(self, expiration: int | None = None) -> None:
        """DEL the hash, or let it expire in ``expiration`` seconds (0.9's semantics)."""
        if expiration is None:
            await self.store.cmd.delete(self.id)
        else:
            await self.store.cmd.expire(self.id, expiration)


class RedisStore:
    """Pub/sub between nodes plus per-client hashes, as socket.io 0.9's RedisStore."""

    def __init__(
        self,
        *,
        redis_pub: aioredis.Redis | None = None,
        redis_sub: aioredis.Redis | None = None,
        redis_client: aioredis.Redis | None = None,
        redis_url: str | None = None,
        node_id: Any = None,
        pack: Packer = json_pack,
        unpack: Unpacker = json.loads,
    ) -> None:
        missing = redis_pub is None or redis_sub is None or redis_client is None
        if missing and redis_url is None:
            raise ValueError("give redis_pub, redis_sub and redis_client, or redis_url")
        self._owned: list[aioredis.Redis] = []
        self.pub = redis_pub or self._own(redis_url)
        self.sub = redis_sub or self._own(redis_url)
        self.cmd = redis_client or self._own(redis_url)
        self.node_id = default_node_id() if node_id is None else node_id
        self.pack = pack
        self.unpack = unpack
        self._pubsub = self.sub.pubsub()
        self._consumers: dict[str, Callable[..., Any]] = {}
        self._reader: asyncio.Task[None] | None = None

    def _own(self, url: str | None) -> aioredis.Redis:
        assert url is not None
        client = aioredis.Redis.from_url(url)
        self._owned.append(client)
        return client

    def client(self, client_id: str) -> StoreClient:
        return StoreClient(self, client_id)

    async def publish(self, name: str, *args: Any) -> None:
        """PUBLISH ``pack({"nodeId", "args"})`` on the channel ``name``."""
        await self.pub.publish(name, self.pack({"nodeId": self.node_id, "args": list(args)}))

    async def subscribe(self, name: str, consumer: Callable[..., Any]) -> None:
        """Call ``consumer(*args)`` for every message other nodes publish on ``name``."""
        self._consumers[name] = consumer
        await self._pubsub.subscribe(name)
        if self._reader is None:
            self._reader = asyncio.create_task(self._read())

    async def unsubscribe(self, name: str) -> None:
        self._consumers.pop(name, None)
        await self._pubsub.unsubscribe(name)

    async def _read(self) -> None:
        while True:
            try:
                message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
            except RedisError as exc:
                log.warning("RedisStore subscriber error: %s", exc)
                await asyncio.sleep(0.5)
                continue
            if message is None or message["type"] != "message":
                continue
            await self._dispatch(message["channel"], message["data"])

    async def _dispatch(self, channel: bytes | str, data: bytes) -> None:
        name = channel.decode() if isinstance(channel, bytes) else channel
        consumer = self._consumers.get(name)
        if consumer is None:
            return
        try:
            body = self.unpack(data)
        except (ValueError, TypeError) as exc:
            log.warning("RedisStore: unreadable message on %r: %s", name, exc)
            return
        if not isinstance(body, dict) or body.get("nodeId") == self.node_id:
            return
        try:
            result = consumer(*body.get("args", []))
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("RedisStore consumer for %r failed", name)

    async def destroy(self) -> None:
        """Stop reading and close what this store created (0.9's ``destroy``)."""
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self._pubsub.aclose()
        for client in self._owned:
            await client.aclose()
