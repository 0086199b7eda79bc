"""A client that lost its session is not an error of this server.

python-engineio logs ``Invalid session <sid>`` at ERROR the first time a request names a
session the worker does not know (later ones at INFO). Every client does that after its
worker was restarted (a rolling restart, a respawn), after its session timed out, or when a
balancer without stickiness sends its next long-poll elsewhere: it gets a 400 and connects
again with a new session. So the line becomes an INFO that says so, at most one per 10 s.
"""

from __future__ import annotations

import logging

from sio_cluster.common.ratelimit import RateLimitedLogger

log = logging.getLogger(__name__)
ENGINEIO_LOGGER = "engineio.server"
PREFIX = "Invalid session"

_limited = RateLimitedLogger(log)


class LostSessions(logging.Filter):
    """Turns python-engineio's ``Invalid session`` records into our rate-limited INFO line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not (isinstance(record.msg, str) and record.msg.startswith(PREFIX)):
            return True
        sid = record.getMessage()[len(PREFIX) :].split()[:1]
        _limited.log(
            logging.INFO,
            "lost",
            "a client asked for session %s, which this worker does not have (a restart, a "
            "timeout, or another worker's): answered 400, it connects again",
            sid[0] if sid else "?",
        )
        return False


def install() -> None:
    """Filter python-engineio's logger (once per process)."""
    logger = logging.getLogger(ENGINEIO_LOGGER)
    if not any(isinstance(f, LostSessions) for f in logger.filters):
        logger.addFilter(LostSessions())
