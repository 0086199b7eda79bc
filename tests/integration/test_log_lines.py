"""Log lines say what happened: which process of a worker died, and a client's lost session
is not an error."""

from __future__ import annotations

import os
import signal
from typing import Any

import aiohttp

from tests.cluster import MasterProcess


async def test_the_sockets_forgotten_are_those_of_the_worker_that_died(
    start_master: Any, clients: Any
) -> None:
    master: MasterProcess = await start_master(workers=2).ready()
    first = master.worker_pids()[1]
    os.kill(first, signal.SIGKILL)  # its replacement is the second process of worker 1
    await master.wait_log(r"worker 1 ready again")
    second = master.worker_pids()[1]
    assert master.log_matches(rf"worker 1 started \(pid {second}, port \d+, logs as worker-1\.1\)")
    await clients(master.url(1), "c")
    os.kill(second, signal.SIGKILL)
    await master.wait_log(rf"forgot 1 sockets of worker 1 \(pid {second}, worker-1\.1\)$")
    await master.wait_log(
        rf"worker 1 \(pid {second}, worker-1\.1\) exited with signal 9; respawning$"
    )


async def test_a_request_for_a_session_the_worker_does_not_have_is_an_info_line(
    start_master: Any,
) -> None:
    master: MasterProcess = await start_master(workers=1).ready()
    url = f"{master.url(0)}/socket.io/?EIO=4&transport=polling&sid=gone123"
    async with aiohttp.ClientSession() as http:
        for _ in range(2):
            async with http.get(url) as response:
                assert response.status == 400
    line = await master.wait_log(r"(\w+) +worker-0 \S+: a client asked for session gone123")
    assert line.group(1) == "INFO"
    assert not master.log_matches("Invalid session|ERROR")
