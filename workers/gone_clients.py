"""A client that hangs up while its request is being answered is not an error of this server.

aiohttp logs ``Error handling request`` at ERROR, with a 30-line traceback ending in
``Cannot write to closing transport`` (a ``ConnectionResetError``), whenever a client closes
its connection before the answer is written: most often a websocket upgrade abandoned by its
client or by a balancer (an HAProxy health check, a storm of reconnecting clients). In the
10,000-client storm behind HAProxy that was 1,920 tracebacks, and 300 upgrades reset by one
client wrote about 900 lines: a way to flood the logs for free. Here each one is counted
(``sio_master_clients_gone_mid_answer``) and logged as one INFO line at most every 10 s.
"""

from __future__ import annotations

import logging

from sio_cluster.common.ratelimit import RateLimitedLogger

log = logging.getLogger(__name__)
AIOHTTP_LOGGER = "aiohttp.server"

_limited = RateLimitedLogger(log)


class GoneClients(logging.Filter):
    """Turns aiohttp's records of a reset connection into a count and a rate-limited line;
    every other record passes unchanged. ``count`` is reported to the master with the
    worker's other counters."""

    count = 0

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if not isinstance(error, ConnectionResetError):
            return True
        GoneClients.count += 1
        _limited.log(
            logging.INFO,
            "gone",
            "a client closed its connection before its answer was written (%s); counted in "
            "sio_master_clients_gone_mid_answer",
            error,
        )
        return False


def install() -> None:
    """Filter aiohttp's server logger (once per process)."""
    logger = logging.getLogger(AIOHTTP_LOGGER)
    if not any(isinstance(f, GoneClients) for f in logger.filters):
        logger.addFilter(GoneClients())
