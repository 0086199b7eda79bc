"""A client that hangs up while its request is being answered is not an error of this server.

aiohttp logs ``Error handling request`` at ERROR, with a 30-line traceback ending in
``Cannot write to closing transport`` (a ``ConnectionResetError``), whenever a client closes
its connection before the answer is written: most often a websocket upgrade abandoned by its
client or by a balancer (an HAProxy health check, a storm of reconnecting clients). In the
10,000-client storm behind HAProxy that was 1,920 tracebacks, and 300 upgrades reset by one
client wrote about 900 lines: a way to flood the logs for free. Here each one is counted
(``sio_master_clients_gone_mid_answer``) and logged as one INFO line at most every 10 s.

aiohttp 3.11 says the same of an upgrade whose client is gone with an ``AssertionError``
(``assert transport is not None`` in ``WebSocketResponse._pre_start``): that one is known by
where it was raised, so no other failed assertion is ever hidden.
"""

from __future__ import annotations

import logging
from types import TracebackType

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
        if not (isinstance(error, ConnectionResetError) or _upgrade_without_transport(error)):
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


def _upgrade_without_transport(error: BaseException | None) -> bool:
    """aiohttp 3.11's way of saying an upgrade's client went: see the module docstring."""
    if not isinstance(error, AssertionError):
        return False
    last: TracebackType | None = error.__traceback__
    while last is not None and last.tb_next is not None:
        last = last.tb_next
    if last is None:
        return False
    code = last.tb_frame.f_code
    return code.co_name == "_pre_start" and code.co_filename.endswith("web_ws.py")


def install() -> None:
    """Filter aiohttp's server logger (once per process)."""
    logger = logging.getLogger(AIOHTTP_LOGGER)
    if not any(isinstance(f, GoneClients) for f in logger.filters):
        logger.addFilter(GoneClients())
