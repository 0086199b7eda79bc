"""How the master reaches Redis: one server, the primary Sentinel names, or a Cluster.

Why: the subscriber and the command connections must both talk to the current
primary. With one Redis that is the URL itself. With Sentinel the primary is
asked of the sentinels on every (re)connect of the subscriber, and the command
connections come from redis-py's Sentinel pool, which asks again on every new
connection and drops connections to a primary that was demoted; so once Sentinel
promotes a replica, the next reconnect lands on it and the outbound buffer
(:mod:`common.outbox`) is flushed there.

On a Redis Cluster, classic pub/sub messages reach every node, so the subscriber
may use any live node: it asks the known nodes for the current node list
(``CLUSTER NODES``) on every (re)connect and takes the next live one in turn, so
a dead node is passed over. Sharded pub/sub (``--adapter sharded``) is served by
the primary owning each channel's hash slot, so :meth:`Topology.shard_map` reads
the slot ranges from the same node list. Commands go through redis-py's
``RedisCluster``, which follows MOVED/ASK and failovers itself.
"""

from __future__ import annotations

import bisect
import logging
import re
from collections.abc import Callable
from typing import Any, Protocol, cast

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import RedisError

from sio_cluster.common.redis.commands import command_client
from sio_cluster.common.redis.sentinel_pool import BlockingSentinelPool
from sio_cluster.common.redis.url import (
    ClusterUrl,
    SentinelUrl,
    is_cluster_url,
    is_sentinel_url,
    parse_cluster_url,
    parse_sentinel_url,
)

log = logging.getLogger(__name__)

SENTINEL_TIMEOUT = 0.5  # per sentinel asked; a dead one must not hold the reconnect up
NODE_TIMEOUT = 0.5  # per cluster node asked for the node list


ShardMap = Callable[[str], str]  # a shard channel -> the URL of the node serving it


class PrimaryNotFound(ConnectionError):
    """No sentinel could name a healthy primary right now (retried with backoff)."""


class Topology(Protocol):
    """Where the master's Redis connections go."""

    describe: str
    reconnect_cap: float  # the subscriber's longest wait between reconnect attempts
    is_cluster: bool  # a Redis Cluster: no PUBLISH in pipelines, subscriber counts per node

    async def primary_url(self) -> str:
        """A plain URL of the server the subscriber must use now."""
        ...

    async def shard_map(self) -> ShardMap:
        """Where each shard channel is served now (asked again after a failure)."""
        ...

    def commands(self, max_connections: int, client_name: str) -> aioredis.Redis:
        """A client on at most ``max_connections`` connections to the primary (on a
        Cluster: to each node, and a user beyond them is refused, not kept waiting)."""
        ...

    async def close(self) -> None:
        """Close what the topology itself holds open (connections asking sentinels)."""
        ...


class OneRedis:
    """A single Redis server (``redis://``, ``rediss://``, ``unix://``)."""

    reconnect_cap = 5.0
    is_cluster = False

    def __init__(self, url: str) -> None:
        self.url = url
        self.describe = re.sub(r"//([^:@/]*):[^@/]*@", r"//\1:***@", url)  # no password in logs

    async def primary_url(self) -> str:
        return self.url

    async def shard_map(self) -> ShardMap:
        return lambda channel: self.url

    def commands(self, max_connections: int, client_name: str) -> aioredis.Redis:
        return command_client(self.url, max_connections, client_name=client_name)

    async def close(self) -> None:
        pass


class SentinelPrimary:
    """The primary of a Sentinel service, followed through failovers."""

    reconnect_cap = 1.0  # a promotion must be followed within seconds
    is_cluster = False

    def __init__(self, url: SentinelUrl) -> None:
        self.url = url
        hosts = ",".join(f"{h}:{p}" for h, p in url.sentinels)
        self.describe = f"Sentinel service {url.service!r} at {hosts}"
        self._options = _node_options(url.primary_url("localhost", 6379), url.scheme)
        self._sentinel = Sentinel(
            list(url.sentinels),
            sentinel_kwargs={
                "socket_timeout": SENTINEL_TIMEOUT,
                "socket_connect_timeout": SENTINEL_TIMEOUT,
                "retry": Retry(NoBackoff(), 0),  # a dead sentinel: on to the next one at once
            },
            **self._options,
        )
        self._last: tuple[str, int] | None = None

    async def primary_url(self) -> str:
        try:
            host, port = await self._sentinel.discover_master(self.url.service)
        except (RedisError, OSError) as exc:
            problem = f"no sentinel names a primary for {self.url.service!r}: {exc}"
            raise PrimaryNotFound(problem) from None
        if self._last != (host, port):
            if self._last is not None:
                log.warning("Sentinel names a new primary: %s:%d", host, port)
            self._last = (host, port)
        return self.url.primary_url(host, port)

    async def shard_map(self) -> ShardMap:
        url = await self.primary_url()
        return lambda channel: url

    def commands(self, max_connections: int, client_name: str) -> aioredis.Redis:
        return self._sentinel.master_for(
            self.url.service,
            connection_pool_class=BlockingSentinelPool,
            max_connections=max_connections,
            timeout=None,
            client_name=client_name,
        )

    async def close(self) -> None:
        for sentinel in self._sentinel.sentinels:
            await sentinel.aclose()


class ClusterNodes:
    """The nodes of a Redis Cluster, found from its seeds and followed as it changes."""

    reconnect_cap = 1.0
    is_cluster = True

    def __init__(self, url: ClusterUrl) -> None:
        self.url = url
        self.describe = "Redis Cluster seeded by " + ",".join(f"{h}:{p}" for h, p in url.seeds)
        self._options = {  # what RedisCluster takes: credentials, TLS options, keepalive
            k: v
            for k, v in _node_options(url.node_url("localhost", 6379), url.scheme).items()
            if k in ("username", "password", "ssl", "socket_keepalive") or k.startswith("ssl_")
        }
        self._known: list[tuple[str, int]] = list(url.seeds)
        self._turn = 0

    async def primary_url(self) -> str:
        """A live primary, in turn (see :func:`live_primaries`)."""
        nodes = await self._refresh()
        if not nodes:
            raise PrimaryNotFound("no node of the cluster answers")
        self._turn = (self._turn + 1) % len(nodes)
        host, port = nodes[self._turn]
        return self.url.node_url(host, port)

    async def shard_map(self) -> ShardMap:
        """The primary owning each channel's slot, from the live primaries' slot ranges."""
        text = await self._cluster_nodes()
        ranges = sorted(slot_ranges(text)) if text is not None else []
        if len(ranges) == 0:
            raise PrimaryNotFound("no node of the cluster answers with its slots")
        starts = [start for start, _, _ in ranges]

        def owner(channel: str) -> str:
            slot = key_slot(channel.encode())
            index = bisect.bisect_right(starts, slot) - 1
            start, end, (host, port) = ranges[max(index, 0)]
            if not start <= slot <= end:
                raise PrimaryNotFound(f"no live primary serves slot {slot} now")
            return self.url.node_url(host, port)

        return owner

    async def _refresh(self) -> list[tuple[str, int]]:
        """Ask the known nodes, in order, for the cluster's live nodes."""
        text = await self._cluster_nodes()
        nodes = live_primaries(text) if text is not None else []
        if nodes:
            self._known = nodes + [n for n in self._known if n not in nodes]
        return nodes

    async def _cluster_nodes(self) -> str | None:
        """``CLUSTER NODES`` of the first known node that answers with live primaries."""
        for host, port in list(self._known):
            client = aioredis.Redis(
                host=host,
                port=port,
                socket_timeout=NODE_TIMEOUT,
                socket_connect_timeout=NODE_TIMEOUT,
                retry=Retry(NoBackoff(), 0),
                **{k: v for k, v in self._options.items() if not k.startswith("socket_")},
            )
            try:
                text = await client.execute_command("CLUSTER", "NODES")
            except (RedisError, OSError):
                continue
            finally:
                await client.aclose()
            text = text.decode() if isinstance(text, bytes) else str(text)
            if live_primaries(text):
                return text
        return None

    def commands(self, max_connections: int, client_name: str) -> aioredis.Redis:
        return cast(
            aioredis.Redis,
            RedisCluster(
                startup_nodes=[ClusterNode(h, p) for h, p in self.url.seeds],
                client_name=client_name,
                max_connections=max_connections,
                **self._options,
            ),
        )

    async def close(self) -> None:
        pass  # the node list is asked on short-lived connections


def _live_primary_lines(cluster_nodes: str) -> list[tuple[tuple[str, int], list[str]]]:
    """``((host, port), fields)`` of each connected, not failing primary."""
    found = []
    for line in cluster_nodes.splitlines():
        fields = line.split()
        flags = fields[2].split(",") if len(fields) > 2 else []
        if len(fields) < 8 or "master" not in flags or "fail" in flags or fields[7] != "connected":
            continue
        address = fields[1].split("@", 1)[0]
        host, _, port = address.rpartition(":")
        if host and port.isdigit():
            found.append(((host, int(port)), fields))
    return found


def live_primaries(cluster_nodes: str) -> list[tuple[str, int]]:
    """``(host, port)`` of the primaries ``CLUSTER NODES`` shows as connected, not failing.

    Primaries only: every node delivers classic pub/sub, but Node's redis-adapter on
    node-redis counts servers over the primaries alone, so a subscriber of ours on a
    replica would be missed by Node servers.
    """
    return [address for address, _ in _live_primary_lines(cluster_nodes)]


def slot_ranges(cluster_nodes: str) -> list[tuple[int, int, tuple[str, int]]]:
    """``(first slot, last slot, (host, port))`` of each live primary's slot ranges
    (``[...]`` entries, slots being migrated, are left to MOVED and a retry)."""
    ranges = []
    for address, fields in _live_primary_lines(cluster_nodes):
        for entry in fields[8:]:
            if entry.startswith("["):
                continue
            first, _, last = entry.partition("-")
            if first.isdigit() and (not last or last.isdigit()):
                ranges.append((int(first), int(last or first), address))
    return ranges


def _node_options(url: str, scheme: str) -> dict[str, Any]:
    """redis-py connection options from a URL (credentials, db, TLS query options)."""
    probe = aioredis.ConnectionPool.from_url(url)
    options = dict(probe.connection_kwargs)
    for name in ("host", "port", "path"):
        options.pop(name, None)
    if scheme == "rediss":
        options["ssl"] = True
    options.setdefault("socket_keepalive", True)
    return options


def topology_for(url: str) -> Topology:
    """The topology a ``--redis-url`` names (already checked by the configuration)."""
    if is_sentinel_url(url):
        return SentinelPrimary(parse_sentinel_url(url))
    if is_cluster_url(url):
        return ClusterNodes(parse_cluster_url(url))
    return OneRedis(url)
