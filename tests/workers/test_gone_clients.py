"""The filter that turns aiohttp's tracebacks for a client gone mid-answer into a count."""

from __future__ import annotations

import logging
import sys

from sio_cluster.workers.gone_clients import GoneClients


def record(error: BaseException | None) -> logging.LogRecord:
    exc_info = None
    if error is not None:
        try:
            raise error
        except BaseException:
            exc_info = sys.exc_info()
    return logging.LogRecord(
        "aiohttp.server", logging.ERROR, __file__, 1, "Error handling request", (), exc_info
    )


def test_a_reset_connection_is_counted_and_not_logged() -> None:
    before = GoneClients.count
    keep = GoneClients().filter(record(ConnectionResetError("Cannot write to closing transport")))
    assert keep is False and GoneClients.count == before + 1


def test_other_errors_and_plain_records_pass_uncounted() -> None:
    before = GoneClients.count
    assert GoneClients().filter(record(ValueError("a bug of ours")))
    assert GoneClients().filter(record(None))
    assert GoneClients.count == before


def test_aiohttp_3_11_s_assertion_for_an_upgrade_whose_client_went_is_counted() -> None:
    """``assert transport is not None`` in ``WebSocketResponse._pre_start``: known by where it
    was raised; any other failed assertion passes."""
    namespace: dict[str, object] = {}
    exec(
        compile("def _pre_start():\n    assert None is not None\n", "aiohttp/web_ws.py", "exec"),
        namespace,
    )
    before = GoneClients.count
    try:
        namespace["_pre_start"]()  # type: ignore[operator]
    except AssertionError:
        keep = GoneClients().filter(
            logging.LogRecord("aiohttp.server", logging.ERROR, __file__, 1, "x", (), sys.exc_info())
        )
    assert keep is False and GoneClients.count == before + 1
    assert GoneClients().filter(record(AssertionError("a bug of ours")))
    assert GoneClients.count == before + 1
