"""Where and how to reach one Redis server, read from a plain URL as redis-py reads it.

Why here: the master's bare subscriber (:mod:`master.pubsub.resp`) speaks RESP itself and
needs the URL's address, credentials and TLS settings without a redis-py connection. They are
read through redis-py's public ``ConnectionPool.from_url``, so a URL means what it means to
redis-py's own clients (the command connections), and no redis-py internal is touched.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis


@dataclass(frozen=True)
class RedisTarget:
    """Where and how the master's subscriber connects (see :func:`parse_redis_url`)."""

    host: str
    port: int
    path: str | None  # a unix socket, instead of host and port
    username: str | None
    password: str | None
    tls: ssl.SSLContext | None


_CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}


def parse_redis_url(url: str) -> RedisTarget:
    """Read ``url`` as redis-py does (``redis://``, ``rediss://``, ``unix://``).

    ``rediss://`` honours the query options redis-py's own TLS connections take:
    ``ssl_cert_reqs`` (none/optional/required, default required), ``ssl_check_hostname``
    (default true; off when certificates are not required), ``ssl_ca_certs``,
    ``ssl_certfile`` and ``ssl_keyfile``. Raises ValueError for a bad option and
    OSError for an unreadable certificate file.
    """
    pool = aioredis.ConnectionPool.from_url(url)
    options = pool.connection_kwargs
    tls = None
    if issubclass(pool.connection_class, aioredis.SSLConnection):
        tls = _tls_context(options)
    return RedisTarget(
        host=str(options.get("host") or "localhost"),
        port=int(options.get("port") or 6379),
        path=options.get("path"),
        username=options.get("username"),
        password=options.get("password"),
        tls=tls,
    )


def _tls_context(options: Mapping[str, Any]) -> ssl.SSLContext:
    reqs = options.get("ssl_cert_reqs", "required")
    if isinstance(reqs, str):
        if reqs.lower() not in _CERT_REQS:
            raise ValueError(f"ssl_cert_reqs must be one of {sorted(_CERT_REQS)}, not {reqs!r}")
        reqs = _CERT_REQS[reqs.lower()]
    context = ssl.create_default_context()
    context.check_hostname = bool(options.get("ssl_check_hostname", True)) and (
        reqs != ssl.CERT_NONE
    )
    context.verify_mode = reqs
    certfile, keyfile = options.get("ssl_certfile"), options.get("ssl_keyfile")
    if keyfile and not certfile:
        raise ValueError("ssl_keyfile needs ssl_certfile")
    if certfile:
        context.load_cert_chain(certfile=certfile, keyfile=keyfile)
    if options.get("ssl_ca_certs"):
        context.load_verify_locations(cafile=options["ssl_ca_certs"])
    return context
