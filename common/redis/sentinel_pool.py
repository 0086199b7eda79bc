"""redis-py's Sentinel pool that WAITS for a free connection past its maximum.

Why: the master's connection count per host must stay fixed, so callers beyond the pool's
size wait (as with ``BlockingConnectionPool``) instead of failing with "Too many
connections". redis-py ships no such class; this one relies on both pools' ``__init__``
cooperating through ``super()`` (true from redis 5.0 on), and on ``SentinelConnectionPool``
taking its primary address on each connect (tests/integration/test_sentinel.py follows a
failover through it). It touches no private attribute of redis-py.
"""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.asyncio.sentinel import SentinelConnectionPool


class BlockingSentinelPool(SentinelConnectionPool, aioredis.BlockingConnectionPool):
    """A ``SentinelConnectionPool`` with ``BlockingConnectionPool``'s waiting."""
