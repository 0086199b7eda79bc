"""``python -m sio_cluster.workers FD WORKER_ID LABEL HEALTH_FD HANDOFF_FD KEY``: started by
the master, never by hand.

``FD`` is the ordered frame pipe, ``HEALTH_FD`` the health channel beside it (see
:mod:`sio_cluster.workers.process`). ``LABEL`` is the role its log lines carry (``worker-0``,
then ``worker-0.1`` for the process that replaces it: see ``master.supervisor.log_label``).
``HANDOFF_FD`` is where the master passes the connections of its one port (-1 with
``--worker-ports``: the worker listens itself); ``KEY`` is the process key its engine.io sids
start with (see ``wire.handoff``).

The master's typed :class:`common.config.Config` arrives as JSON in the
``SIO_WORKER_CONFIG`` environment variable and is validated again here.
"""

from __future__ import annotations

import os
import sys

from sio_cluster.common.config import Config
from sio_cluster.common.logformat import configure_logging
from sio_cluster.wire import WORKER_CONFIG_ENV
from sio_cluster.workers.process import run


def main() -> None:
    """Parse the master's arguments and run the worker."""
    fd, worker_id, label, health_fd, handoff_fd, key = sys.argv[1:7]
    config = Config.from_json(os.environ.pop(WORKER_CONFIG_ENV))
    configure_logging(label, config.log_level, config.log_format)
    run(int(worker_id), int(fd), int(health_fd), config, int(handoff_fd), int(key))


if __name__ == "__main__":
    main()
