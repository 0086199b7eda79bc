"""The master's first contact with Redis: a refusal ends the start, silence delays it.

Why: a wrong password, an ACL that denies a command or a channel the master needs, or a TLS
certificate that is not trusted does not go away by retrying. A master that went on anyway
logged ``cluster ready``, then ``Redis subscriber lost (... WRONGPASS ...); reconnecting``
forever, while every worker answered ``/healthz`` 200 to clients who would never get a
``ch:*`` message. So a refusal is one line and exit 1. A Redis that does not answer (not up
yet, restarting) may come: the master waits for it before starting any worker, so nothing
listens on the worker ports and ``/readyz`` answers 503 until Redis has answered once.

What is tried is what the master does first: a PING on the command pool (its connection
authenticates and names itself) and, on a connection of the subscriber's kind, the
subscriber's CLIENT SETNAME and PSUBSCRIBE of every pattern; with ``--adapter sharded``,
also the SSUBSCRIBE of the shard channels the bus subscribes first (namespace ``/``). On a
Cluster a shard channel served by another node answers ``-MOVED``: Redis checks the ACL
before it redirects (Redis 7.0.15: a denied channel answers ``-NOPERM`` on any node), so
``-MOVED`` means the ACL allows it. A Redis older than 7 answers ``unknown command``: a
refusal too, as no retry will teach it SSUBSCRIBE.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Sequence

import redis.asyncio as aioredis
from redis.exceptions import AuthenticationError, NoPermissionError, RedisError

from sio_cluster.common.redis.topology import Topology
from sio_cluster.master.pubsub.resp import SubscriberError, connect
from sio_cluster.master.pubsub.source import backoff_delays

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 10.0
# the error replies of a refusal, as the subscriber's own connection reports them
AUTH_REPLIES = ("WRONGPASS", "NOAUTH", "invalid password", "but no password is set")
ACL_REPLIES = ("NOPERM",)
UNKNOWN_COMMAND = "unknown command"
MOVED = ": MOVED "  # how a -MOVED reply reads in a SubscriberError


class RedisRefused(Exception):
    """Redis refuses this master (credentials, ACL, TLS, a command it lacks): a configuration
    error, one line."""


def refusal(exc: BaseException) -> str | None:
    """What Redis refused, in words, if ``exc`` is a refusal; None if it is an outage."""
    text = str(exc)
    if "CERTIFICATE_VERIFY_FAILED" in text or _caused_by(exc, ssl.SSLCertVerificationError):
        return (
            f"its TLS certificate is not trusted ({text}); give the CA with "
            "?ssl_ca_certs=/path/to/ca.pem in the URL"
        )
    if isinstance(exc, AuthenticationError) or any(reply in text for reply in AUTH_REPLIES):
        return f"authentication refused ({text}); check the user and password in --redis-url"
    if isinstance(exc, NoPermissionError) or any(reply in text for reply in ACL_REPLIES):
        return (
            f"the ACL refuses a command or channel the master needs ({text}); see README, "
            "A minimal Redis ACL user"
        )
    if UNKNOWN_COMMAND in text:
        return (
            f"it does not know a command the master needs ({text}); "
            "--adapter sharded needs Redis >= 7"
        )
    return None


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


async def first_contact(
    commands: aioredis.Redis,
    topology: Topology,
    patterns: Sequence[str],
    client_name: str,
    stop: asyncio.Event,
    shard_channels: Sequence[str] = (),
) -> bool:
    """Return True once Redis has answered both tries, False if ``stop`` is set first;
    raise :class:`RedisRefused` on a refusal. An outage is logged once, then waited out
    with the subscriber's backoff."""
    next_delay = backoff_delays(cap=topology.reconnect_cap)
    waited = False
    while not stop.is_set():
        try:
            await asyncio.wait_for(commands.ping(), PROBE_TIMEOUT)
            url = await topology.primary_url()
            await _try_subscriber(url, patterns, shard_channels, client_name)
        except (RedisError, OSError, TimeoutError) as exc:
            reason = refusal(exc)
            if reason is not None:
                raise RedisRefused(f"Redis at {topology.describe}: {reason}") from None
            if not waited:
                log.warning(
                    "Redis at %s does not answer (%s); the workers start once it does",
                    topology.describe,
                    str(exc) or type(exc).__name__,
                )
                waited = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), next_delay())
            continue
        if waited:
            log.warning("Redis at %s answers: starting the workers", topology.describe)
        return True
    return False


async def _try_subscriber(
    url: str, patterns: Sequence[str], shard_channels: Sequence[str], client_name: str
) -> None:
    """What the subscribers do on connecting (see master.pubsub.source and
    master.pubsub.sharded_source), on one connection, then hang up."""
    protocol = await connect(url, lambda *item: None, PROBE_TIMEOUT)
    try:
        await asyncio.wait_for(protocol.call("CLIENT", "SETNAME", client_name), PROBE_TIMEOUT)
        for pattern in patterns:  # one by one: a refusal is one error reply for the command
            await asyncio.wait_for(protocol.call("PSUBSCRIBE", pattern), PROBE_TIMEOUT)
        for channel in shard_channels:
            try:
                await asyncio.wait_for(protocol.call("SSUBSCRIBE", channel), PROBE_TIMEOUT)
            except SubscriberError as exc:
                if MOVED not in str(exc):  # -MOVED: allowed, and served by another node
                    raise
    finally:
        if protocol.transport is not None:
            protocol.transport.abort()
