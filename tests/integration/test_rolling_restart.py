"""SIGHUP: the master replaces its workers one at a time, the port never refusing a connection."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from bench.measure import is_running
from tests.cluster import MasterProcess, until

APP = """
import os

def setup(sio):
    @sio.on("pid")
    async def pid(sid, data=None):
        return os.getpid()
"""


class PortProbe:
    """Opens a TCP connection to each port, again and again, counting the refusals."""

    def __init__(self, ports: list[int]) -> None:
        self.ports = ports
        self.attempts = 0
        self.refused: list[int] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> PortProbe:
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        while True:
            for port in self.ports:
                self.attempts += 1
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                except ConnectionRefusedError:
                    self.refused.append(port)
                    continue
                writer.close()
            await asyncio.sleep(0.002)  # a probe every few ms per port, not a sync point

    async def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


def app_dir(tmp_path: Path, source: str) -> str:
    (tmp_path / "rolling_app.py").write_text(source)
    return str(tmp_path)


async def test_sighup_replaces_every_worker_and_the_ports_never_refuse(
    start_master: Any, clients: Any, redis_client: aioredis.Redis
) -> None:
    cluster: MasterProcess = await start_master(workers=2).ready()
    before = cluster.worker_pids()
    old = [await clients(cluster.url(i), f"old{i}") for i in (0, 1)]
    probe = PortProbe([cluster.port_of(0), cluster.port_of(1)]).start()
    started = time.monotonic()
    cluster.signal(signal.SIGHUP)
    await cluster.wait_log(r"rolling restart done", timeout=60)
    took = time.monotonic() - started
    await probe.stop()
    print(f"\nrolling restart of 2 workers: {took:.2f} s, {probe.attempts} connects, 0 refused")
    assert probe.refused == [] and probe.attempts > 20, (probe.attempts, probe.refused)

    after = cluster.worker_pids()
    assert sorted(after) == [0, 1] and all(after[i] != before[i] for i in (0, 1))
    assert not [pid for pid in before.values() if is_running(pid)]
    for i in (0, 1):
        assert cluster.log_matches(rf"worker {i} replaced \(pid {before[i]} -> {after[i]}\)")
        # the old and the new process of one port log under different labels
        assert cluster.log_matches(
            rf"worker {i} started \(pid {after[i]}, .*logs as worker-{i}\.1\)"
        )
        assert cluster.log_matches(
            rf" worker-{i}\.1 \S+: listening on 127.0.0.1:{cluster.port_of(i)}"
        )
        await cluster.wait_log(rf" worker-{i} \S+: stopped")
    await until(lambda: not any(c.client.connected for c in old), what="old clients closed")

    new = [await clients(cluster.url(i), f"new{i}") for i in (0, 1)]
    assert [await c.call("pid") for c in new] == [after[0], after[1]]
    for c in new:
        await c.call("join", "after")
    await redis_client.publish("ch:hello", json.dumps({"to": "after", "data": 1}))
    await redis_client.publish("ch:mark", json.dumps({}))
    for c in new:
        await c.wait_count("mark", 1)
    assert [c.got("hello") for c in new] == [[(1,)], [(1,)]]
    assert cluster.metric("sio_master_workers_alive") == 2
    assert cluster.metric("sio_master_worker_restarts_total") == 0  # replaced is not died


async def test_a_replacement_that_cannot_start_leaves_the_old_worker_serving(
    start_master: Any, clients: Any, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    folder = app_dir(tmp_path, APP)
    cluster: MasterProcess = await start_master(
        workers=2, app="rolling_app:setup", extra=["--app-dir", folder]
    ).ready()
    before = cluster.worker_pids()
    client = await clients(cluster.url(0), "c")
    app_dir(tmp_path, 'raise RuntimeError("a broken deploy")\n')
    cluster.signal(signal.SIGHUP)
    await cluster.wait_log(
        r"the new worker 0 \(pid \d+, worker-0\.1\) exited with code 1: cannot import "
        r"'rolling_app' for --app 'rolling_app:setup': RuntimeError: a broken deploy "
        rf"\({re.escape(str(tmp_path / 'rolling_app.py'))} line 1\); the old one keeps serving",
        timeout=60,
    )
    assert await client.call("pid") == before[0]  # still served by the old process
    assert is_running(before[0]) and is_running(before[1])
    assert not cluster.log_matches(r"rolling restart done")

    app_dir(tmp_path, APP)  # fixed: the next SIGHUP goes through
    cluster.signal(signal.SIGHUP)
    await cluster.wait_log(r"rolling restart done", timeout=60)
    assert not is_running(before[0]) and not is_running(before[1])
