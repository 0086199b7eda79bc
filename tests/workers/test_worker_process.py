"""One real worker process on a socketpair, with the test as its master."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from bench.measure import free_port_block
from sio_cluster.common.config import Config
from sio_cluster.wire import WORKER_CONFIG_ENV
from sio_cluster.wire.frames import Frame, Hello, Ready, Request, Response
from sio_cluster.wire.handoff import NO_HANDOFF
from sio_cluster.wire.link import FrameLink
from sio_cluster.wire.operations import ServerEmit
from tests.cluster import REPO, until


async def test_a_frame_waiting_before_the_worker_reads_its_pipe_is_handled() -> None:
    """A server-side emit that reaches a worker still starting must not kill it."""
    master_end, worker_end = socket.socketpair()
    master_health, worker_health = socket.socketpair()  # its pings go unanswered here
    request = Request(1, ServerEmit.OPERATION, ServerEmit("/", "reload", [1]).to_wire())
    master_end.sendall(request.encode())  # queued before the worker exists
    config = Config(
        workers=1, port=free_port_block(1), app="tests.probe_app:setup", worker_ports=True
    )
    worker = subprocess.Popen(
        [
            sys.executable,
            "-P",
            "-m",
            "sio_cluster.workers",
            str(worker_end.fileno()),
            "0",
            "worker-0",
            str(worker_health.fileno()),
            str(NO_HANDOFF),  # it listens on its own port
            "0",
        ],
        pass_fds=(worker_end.fileno(), worker_health.fileno()),
        env={**os.environ, WORKER_CONFIG_ENV: config.to_json()},
        cwd=REPO,
        stderr=subprocess.PIPE,
    )
    worker_end.close()
    worker_health.close()
    got: list[Frame] = []
    link = await FrameLink.open(
        master_end, lambda frame, body: got.append(frame), lambda exc: None, 1 << 20
    )
    try:
        await until(lambda: any(isinstance(f, Ready) for f in got), timeout=30, what="Ready")
        assert Response(1, None, 0) in got  # answered: no handler for "reload" there
        assert [type(f) for f in got if not isinstance(f, Response)] == [Hello, Ready]
        assert worker.poll() is None
    finally:
        link.close()  # the master is gone: the worker exits on its own
        master_health.close()
        await until(lambda: worker.poll() is not None, timeout=10, what="worker exit")
        assert worker.stderr is not None
        errors = worker.stderr.read().decode()
        assert "Traceback" not in errors, errors
        worker.stderr.close()
