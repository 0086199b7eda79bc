"""What happens to a rejected ``ch:*`` message: counted, logged (rate-limited), kept.

The last ``KEEP`` rejected messages are kept, newest first, in the capped Redis
list named by ``--rejected-key`` (default ``sio-master:rejected``) so an operator can
see what a misbehaving publisher sent: ``LRANGE sio-master:rejected 0 9``.
Each entry is JSON: ``{"ts", "host", "pid", "channel", "reason", "detail", "size", "body"}``
(``host`` and ``pid`` name the master that rejected it) where
``body`` is the first ``BODY_PREVIEW_BYTES`` bytes, decoded as UTF-8 with
replacement. Writing happens off the hot path through a bounded
:class:`common.outbox.Outbox`: when Redis is slow or down, entries beyond it are
not kept (the counter still counts).
"""

from __future__ import annotations

import logging
import os
import socket
import time

import orjson
import redis.asyncio as aioredis

from sio_cluster.common.outbox import Outbox
from sio_cluster.common.ratelimit import RateLimitedLogger
from sio_cluster.master.metrics import Metrics
from sio_cluster.master.routing.messages import Rejected

log = logging.getLogger(__name__)

KEEP = 1000
BODY_PREVIEW_BYTES = 4096
QUEUE_SIZE = 1000


class RejectSink:
    """Counts, logs and stores rejected messages."""

    def __init__(self, redis: aioredis.Redis, key: str, metrics: Metrics) -> None:
        self._redis = redis
        self._key = key
        self._metrics = metrics
        self._limiter = RateLimitedLogger(log)
        self._entries: Outbox[bytes] = Outbox(
            "keeping rejected messages",
            self._write,
            limit=QUEUE_SIZE,
            overflow="newest",
            keep_on_failure=False,
            batch=100,
        )
        self._host = socket.gethostname()
        self._pid = os.getpid()

    def reject(self, channel: str, body: bytes, rejected: Rejected) -> None:
        """Handle one rejected message; never blocks, never raises."""
        self._metrics.rejected.labels(reason=rejected.reason).inc()
        self._limiter.log(
            logging.WARNING,
            rejected.reason,
            "rejected a message on %r: %s: %s",
            channel,
            rejected.reason,
            rejected.detail,
        )
        entry = orjson.dumps(
            {
                "ts": time.time(),
                "host": self._host,
                "pid": self._pid,
                "channel": channel,
                "reason": rejected.reason,
                "detail": rejected.detail,
                "size": len(body),
                "body": body[:BODY_PREVIEW_BYTES].decode("utf-8", "replace"),
            }
        )
        self._entries.put(entry)

    async def run(self) -> None:
        """Write queued entries to the capped list, in small batches, forever."""
        await self._entries.run()

    async def _write(self, entries: list[bytes]) -> None:
        # not a transaction (a Cluster's pipelines are not): a failed LTRIM leaves the list
        # longer until the next write trims it
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.lpush(self._key, *entries)
            pipe.ltrim(self._key, 0, KEEP - 1)
            await pipe.execute()
