"""``python -m workers FD WORKER_ID``: started by the master, never by hand.

The configuration arrives as JSON in the ``SIO_WORKER_CONFIG`` environment variable.
"""

from __future__ import annotations

import json
import os
import sys

from wire import WORKER_CONFIG_ENV
from wire.logformat import configure_logging
from workers.process import run


def main() -> None:
    """Parse the master's arguments and run the worker."""
    fd, worker_id = sys.argv[1:3]
    config = json.loads(os.environ.pop(WORKER_CONFIG_ENV))
    configure_logging(f"worker-{worker_id}", config["log_level"])
    run(int(worker_id), int(fd), config)


if __name__ == "__main__":
    main()
