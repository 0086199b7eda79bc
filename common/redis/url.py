"""The ``--redis-url`` forms: one Redis, a primary followed through Sentinel, or a Cluster.

Why a module: the URL decides the topology, and the topology decides how the
subscriber and the command connections find the server they talk to. A plain
``redis://``, ``rediss://`` or ``unix://`` URL names that server; a Sentinel URL
names the sentinels and the service, and the primary is asked of them on every
(re)connect, so a failover is followed:

    redis+sentinel://[user:password@]host:port[,host:port...]/<service>[/<db>][?options]
    rediss+sentinel://...   (TLS to the primary and replicas; the options are redis-py's
                             ssl_* query options, as for rediss://)

The credentials and options are the primary's (as python-socketio's own Sentinel
URLs); the sentinels are asked without them. A Redis Cluster is named by seed nodes
(any of its nodes; the rest are discovered):

    redis+cluster://[user:password@]host:port[,host:port...][?options]
    rediss+cluster://...
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, unquote

from redis.asyncio.connection import parse_url

PLAIN_SCHEMES = ("redis://", "rediss://", "unix://")
SENTINEL_SCHEMES = {"redis+sentinel": "redis", "rediss+sentinel": "rediss"}
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


class RedisUrlError(ValueError):
    """A ``--redis-url`` that cannot work; the text is one line for the operator."""


@dataclass(frozen=True)
class SentinelUrl:
    """The sentinels to ask, the service they watch, and how to reach its primary."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int
    username: str | None
    password: str | None
    scheme: str  # "redis" or "rediss": how to reach the primary
    query: str  # redis-py's query options, for the primary

    def primary_url(self, host: str, port: int) -> str:
        """A plain URL for the primary that the sentinels named."""
        return _plain_url(
            self.scheme, self.username, self.password, host, port, self.db, self.query
        )


@dataclass(frozen=True)
class ClusterUrl:
    """Seed nodes of a Redis Cluster, and how to reach its nodes."""

    seeds: tuple[tuple[str, int], ...]
    username: str | None
    password: str | None
    scheme: str  # "redis" or "rediss"
    query: str  # redis-py's query options, for every node

    def node_url(self, host: str, port: int) -> str:
        """A plain URL for one node of the cluster."""
        return _plain_url(self.scheme, self.username, self.password, host, port, 0, self.query)


def _plain_url(
    scheme: str,
    username: str | None,
    password: str | None,
    host: str,
    port: int,
    db: int,
    query: str,
) -> str:
    auth = ""
    if password is not None:
        auth = f"{quote(username or '', safe='')}:{quote(password, safe='')}@"
    elif username:
        auth = f"{quote(username, safe='')}@"
    address = f"[{host}]" if ":" in host else host
    return f"{scheme}://{auth}{address}:{port}/{db}" + (f"?{query}" if query else "")


def _host_port(text: str, what: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise RedisUrlError(f"{what} address {text!r} must be host:port")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        number = int(port)
    except ValueError:
        raise RedisUrlError(f"{what} port {port!r} is not a number") from None
    if not 1 <= number <= 65535:
        raise RedisUrlError(f"{what} port {number} is outside 1..65535")
    return host, number


@dataclass(frozen=True)
class _MultiHostUrl:
    scheme: str
    username: str | None
    password: str | None
    hosts: tuple[tuple[str, int], ...]
    path: str
    query: str


def _parse_multi_host(url: str, schemes: dict[str, str], what: str) -> _MultiHostUrl:
    """``scheme://[user:password@]host:port[,host:port...][/path][?query]``."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in schemes:
        names = " or ".join(f"{s}://" for s in schemes)
        raise RedisUrlError(f"a {what} URL starts with {names}")
    rest, _, query = rest.partition("?")
    location, _, path = rest.partition("/")
    userinfo, at, hosts = location.rpartition("@")
    if not at:
        userinfo, hosts = "", location
    username = password = None
    if userinfo:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    if not hosts:
        raise RedisUrlError(f"a {what} URL needs at least one {what.lower()} host:port")
    addresses = tuple(_host_port(h, what.lower()) for h in hosts.split(","))
    return _MultiHostUrl(schemes[scheme], username, password, addresses, path, query)


def parse_cluster_url(url: str) -> ClusterUrl:
    """Read a ``redis+cluster://`` or ``rediss+cluster://`` URL."""
    parsed = _parse_multi_host(url, CLUSTER_SCHEMES, "Cluster")
    if parsed.path:
        raise RedisUrlError("a Cluster URL names no database (a Cluster has only db 0)")
    return ClusterUrl(parsed.hosts, parsed.username, parsed.password, parsed.scheme, parsed.query)


def parse_sentinel_url(url: str) -> SentinelUrl:
    """Read a ``redis+sentinel://`` or ``rediss+sentinel://`` URL."""
    parsed = _parse_multi_host(url, SENTINEL_SCHEMES, "Sentinel")
    username, password, sentinels, path = (
        parsed.username,
        parsed.password,
        parsed.hosts,
        parsed.path,
    )
    service, _, db_text = path.partition("/")
    if not service:
        raise RedisUrlError("a Sentinel URL needs the service name: .../<service>[/<db>]")
    try:
        db = int(db_text) if db_text else 0
    except ValueError:
        raise RedisUrlError(f"database {db_text!r} is not a number") from None
    return SentinelUrl(
        sentinels, unquote(service), db, username, password, parsed.scheme, parsed.query
    )


def is_sentinel_url(url: str) -> bool:
    return url.startswith(tuple(f"{s}://" for s in SENTINEL_SCHEMES))


def is_cluster_url(url: str) -> bool:
    return url.startswith(tuple(f"{s}://" for s in CLUSTER_SCHEMES))


def check_redis_url(url: str) -> None:
    """Raise :class:`RedisUrlError` unless ``url`` is a form the master can use."""
    if url.startswith(PLAIN_SCHEMES):
        _check_plain(url)
        return
    if is_sentinel_url(url):
        parse_sentinel_url(url)
        return
    if is_cluster_url(url):
        parse_cluster_url(url)
        return
    raise RedisUrlError(
        "--redis-url must start with redis://, rediss://, unix://, redis+sentinel://, "
        "rediss+sentinel://, redis+cluster:// or rediss+cluster://"
    )


def without_password(url: str) -> str:
    """``url`` as it may be logged: its password replaced by ``***``."""
    return re.sub(r"//([^:@/]*):[^@/]*@", r"//\1:***@", url)


def _check_plain(url: str) -> None:
    """Parse a plain URL as redis-py will, now: a port that is not a number must be a line
    at start, not a traceback on the first connection."""
    try:
        parse_url(url)
    except ValueError as exc:
        raise RedisUrlError(f"--redis-url {without_password(url)}: {exc}") from None
