"""One log line format for the master and its workers, so their lines interleave readably."""

from __future__ import annotations

import logging
import sys


def configure_logging(role: str, level: str) -> None:
    """Send ``role``-tagged lines at ``level`` to stderr (the supervisor's or the terminal's)."""
    handler = logging.StreamHandler(sys.stderr)
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
