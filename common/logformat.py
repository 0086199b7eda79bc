"""One log line format for the master and its workers, so their lines interleave readably:
text for people, or one JSON object per line (``--log-format json``) for log shippers."""

from __future__ import annotations

import datetime
import json
import logging
import sys


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "role", "logger", "message"}`` (and ``"exc"`` with a traceback)."""

    def __init__(self, role: str) -> None:
        super().__init__()
        self.role = role

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "role": self.role,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def configure_logging(role: str, level: str, fmt: str = "text") -> None:
    """Send ``role``-tagged lines at ``level`` to stderr (the supervisor's or the terminal's),
    as text or (``fmt`` "json") as one JSON object per line."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(role))
    else:
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s %(levelname)-7s {role} %(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # python-socketio and engine.io log every packet at INFO; keep them for debugging only.
    quiet = logging.DEBUG if level == "debug" else logging.WARNING
    for name in ("socketio", "engineio", "aiohttp.access"):
        logging.getLogger(name).setLevel(quiet)


def adopt_library_loggers() -> None:
    """Drop the handlers python-socketio and python-engineio add to their own loggers when a
    server is built: their records reach ours anyway, so each line came out twice, once
    without our format (and not as JSON)."""
    for name in ("engineio.server", "socketio.server"):
        logging.getLogger(name).handlers.clear()
