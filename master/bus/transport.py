"""The bus's edge on the master's command connections: PUBLISH (or SPUBLISH) and server counts."""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError


class RedisTransport:
    """The bus's edge on the master's command connections.

    On a Redis Cluster (``cluster``) redis-py refuses PUBLISH in a pipeline, so a
    batch goes one PUBLISH after the other, in order, and all of them to ONE node
    (redis-py's default node, replaced when it fails): the cluster forwards each node's
    messages to the others in order, while messages published on different nodes can
    overtake each other. And a node counts only its own subscribers, so
    ``PUBSUB NUMSUB`` is asked of every node and summed.

    ``sharded``: SPUBLISH and ``PUBSUB SHARDNUMSUB`` instead. On a Cluster each
    SPUBLISH goes to the primary owning its channel (redis-py routes it by key), so
    messages of one channel keep their order, and those of different channels may not.
    """

    def __init__(self, redis: aioredis.Redis, cluster: bool = False, sharded: bool = False) -> None:
        self._redis = redis
        self._cluster = cluster
        self._publish = "SPUBLISH" if sharded else "PUBLISH"
        # one word, as redis-py's own pubsub_numsub sends it: redis-py 8.2's Cluster pairs a
        # node's reply only for that form (docs/upstream/redis-py-cluster-numsub.md)
        self._numsub = "PUBSUB SHARDNUMSUB" if sharded else "PUBSUB NUMSUB"
        # on a Cluster: SPUBLISH goes where redis-py routes it, PUBLISH through one node
        self._route: dict[str, Any] = {} if sharded else {"target_nodes": "default-node"}
        self._counting = asyncio.Lock()  # one count at a time: the per-node pools stay small

    async def publish(self, messages: list[tuple[str, bytes]]) -> None:
        """PUBLISH (or SPUBLISH) each message, in order."""
        if self._cluster:
            for channel, body in messages:  # one at a time: see the class docstring
                await self._redis.execute_command(self._publish, channel, body, **self._route)
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for channel, body in messages:
                pipe.execute_command(self._publish, channel, body)
            await pipe.execute()

    async def _cluster_subscribers(self, channels: list[str]) -> dict[str, int]:
        """``PUBSUB NUMSUB`` asked of every node, summed (each node knows only its own
        subscribers, and a Node server's may sit on a replica)."""
        total = dict.fromkeys(channels, 0)
        cluster: Any = self._redis
        replies = []
        async with self._counting:
            await cluster.initialize()  # the node list is empty until the first command
            for node in cluster.get_nodes():  # a subscriber is on exactly one node
                try:
                    replies.append(
                        await cluster.execute_command(self._numsub, *channels, target_nodes=node)
                    )
                except (RedisError, OSError):
                    continue  # a failed node has no subscribers left to count
        for reply in replies:
            total = _add_counts(total, reply)
        return total

    async def subscribers(self, channels: list[str]) -> dict[str, int]:
        """``PUBSUB NUMSUB`` (or ``SHARDNUMSUB``) of each channel."""
        if self._cluster:
            return await self._cluster_subscribers(channels)
        reply = await self._redis.execute_command(self._numsub, *channels)
        return _add_counts(dict.fromkeys(channels, 0), reply)


def _add_counts(total: dict[str, int], reply: Any) -> dict[str, int]:
    """Add a ``PUBSUB NUMSUB`` reply (flat, or pairs in some redis-py versions) to ``total``."""
    if reply and isinstance(reply[0], tuple | list):
        reply = [value for pair in reply for value in pair]
    for name, count in zip(reply[::2], reply[1::2], strict=True):
        key = name.decode() if isinstance(name, bytes) else str(name)
        total[key] = total.get(key, 0) + int(count)
    return total
