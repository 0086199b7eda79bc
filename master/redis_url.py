"""The ``--redis-url`` forms: one Redis, or a primary followed through Sentinel.

Why a module: the URL decides the topology, and the topology decides how the
subscriber and the command connections find the server they talk to. A plain
``redis://``, ``rediss://`` or ``unix://`` URL names that server; a Sentinel URL
names the sentinels and the service, and the primary is asked of them on every
(re)connect, so a failover is followed:

    redis+sentinel://[user:password@]host:port[,host:port...]/<service>[/<db>][?options]
    rediss+sentinel://...   (TLS to the primary and replicas; the options are redis-py's
                             ssl_* query options, as for rediss://)

The credentials and options are the primary's (as python-socketio's own Sentinel
URLs); the sentinels are asked without them.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, unquote

PLAIN_SCHEMES = ("redis://", "rediss://", "unix://")
SENTINEL_SCHEMES = {"redis+sentinel": "redis", "rediss+sentinel": "rediss"}


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
        auth = ""
        if self.password is not None:
            user = quote(self.username or "", safe="")
            auth = f"{user}:{quote(self.password, safe='')}@"
        elif self.username:
            auth = f"{quote(self.username, safe='')}@"
        query = f"?{self.query}" if self.query else ""
        address = f"[{host}]" if ":" in host else host
        return f"{self.scheme}://{auth}{address}:{port}/{self.db}{query}"


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise RedisUrlError(f"sentinel address {text!r} must be host:port")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        number = int(port)
    except ValueError:
        raise RedisUrlError(f"sentinel port {port!r} is not a number") from None
    if not 1 <= number <= 65535:
        raise RedisUrlError(f"sentinel port {number} is outside 1..65535")
    return host, number


def parse_sentinel_url(url: str) -> SentinelUrl:
    """Read a ``redis+sentinel://`` or ``rediss+sentinel://`` URL."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in SENTINEL_SCHEMES:
        raise RedisUrlError("a Sentinel URL starts with redis+sentinel:// or rediss+sentinel://")
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
        raise RedisUrlError("a Sentinel URL needs at least one sentinel host:port")
    sentinels = tuple(_host_port(h) for h in hosts.split(","))
    service, _, db_text = path.partition("/")
    if not service:
        raise RedisUrlError("a Sentinel URL needs the service name: .../<service>[/<db>]")
    try:
        db = int(db_text) if db_text else 0
    except ValueError:
        raise RedisUrlError(f"database {db_text!r} is not a number") from None
    return SentinelUrl(
        sentinels, unquote(service), db, username, password, SENTINEL_SCHEMES[scheme], query
    )


def check_redis_url(url: str) -> None:
    """Raise :class:`RedisUrlError` unless ``url`` is a form the master can use."""
    if url.startswith(PLAIN_SCHEMES):
        return
    if url.startswith(tuple(f"{s}://" for s in SENTINEL_SCHEMES)):
        parse_sentinel_url(url)
        return
    if url.startswith(("redis+cluster://", "rediss+cluster://")):
        raise RedisUrlError("Redis Cluster URLs (redis+cluster://) are not supported yet")
    raise RedisUrlError(
        "--redis-url must start with redis://, rediss://, unix://, redis+sentinel:// "
        "or rediss+sentinel://"
    )
