"""The balancer configurations ``sio-master balancer-config`` prints, run by the real HAProxy
and nginx (Debian's packages; ``.ci/run`` installs them) in front of a real master.

Clients come from several loopback source addresses with every transport: websocket only,
long-polling then upgrade (python-socketio's default), long-polling only. Source-IP stickiness
is what keeps a polling session's requests on one worker; a killed worker's clients come back
through the balancer.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
import socketio

from tests.cluster import REPO, MasterProcess, until
from tests.fronts import start_front, stop_front

TRANSPORTS = {"ws": ["websocket"], "upgrade": ["polling", "websocket"], "poll": ["polling"]}
SOURCES = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"]
NGINX_STREAM = Path("/usr/lib/nginx/modules/ngx_stream_module.so")


def missing(kind: str) -> str | None:
    if shutil.which(kind) is None:
        return f"{kind} is not installed (apt-get install {kind}; .ci/run does)"
    if kind == "nginx" and not NGINX_STREAM.exists():
        return "nginx's stream module is not installed (apt-get install libnginx-mod-stream)"
    return None


class Balancer:
    """The real balancer, on the configuration the generator printed."""

    def __init__(self, kind: str, master: MasterProcess, folder: Path) -> None:
        self.kind = kind

        def command(listen: int) -> list[str]:
            config = subprocess.run(
                [sys.executable, "-m", "sio_cluster", "balancer-config", kind, "--workers", "2"]
                + ["--port", str(master.port), "--listen", f"127.0.0.1:{listen}"]
                + ["--layout", "worker-ports"],
                cwd=REPO,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            path = folder / f"{kind}.conf"
            path.write_text(config)
            if kind == "haproxy":
                return ["haproxy", "-f", str(path), "-db"]
            runtime = f"daemon off; pid {folder}/nginx.pid; error_log stderr;"
            return ["nginx", "-c", str(path), "-p", str(folder), "-g", runtime]

        self.log = folder / f"{kind}.log"
        self.proc, self.port = start_front(command, self.log)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        stop_front(self.proc)


class Client:
    """A python-socketio client bound to one source address, reconnecting by itself and
    rejoining the room ``lb`` on every connect."""

    def __init__(self, name: str, source: str, transports: list[str]) -> None:
        self.name = name
        self.transports = transports
        connector = aiohttp.TCPConnector(local_addr=(source, 0))
        self.http = aiohttp.ClientSession(connector=connector)
        self.sio = socketio.AsyncClient(
            http_session=self.http, reconnection_delay=0.2, reconnection_delay_max=0.5
        )
        self.got: list[Any] = []
        self.joined = 0
        self.sio.on("news", self.got.append)
        self.sio.on("connect", self._rejoin)

    async def _rejoin(self) -> None:
        await self.sio.call("join", "lb", timeout=10)
        self.joined += 1

    async def connect(self, url: str) -> Client:
        await self.sio.connect(url, transports=self.transports, wait_timeout=10)
        await until(lambda: self.joined == 1, what=f"{self.name} in the room")
        return self

    async def close(self) -> None:
        self.sio.reconnection = False
        await self.sio.disconnect()
        await self.http.close()


@pytest.fixture(params=["haproxy", "nginx"])
def balancer(
    request: pytest.FixtureRequest, start_master: Any, tmp_path: Path
) -> Iterator[tuple[Balancer, MasterProcess]]:
    reason = missing(request.param)
    if reason:
        pytest.skip(reason)
    master: MasterProcess = start_master(workers=2)
    master.ready_sync()
    front = Balancer(request.param, master, tmp_path)
    try:
        yield front, master
    finally:
        front.close()


async def reachable(url: str) -> bool:
    try:
        async with aiohttp.ClientSession() as http, http.get(f"{url}/healthz") as response:
            return response.status == 200
    except aiohttp.ClientError:
        return False


async def fence(clients: list[Client], redis_client: aioredis.Redis, n: int) -> None:
    """Publish ``news`` n to the room; every client gets it (exactness is checked after)."""
    await redis_client.publish("ch:news", json.dumps({"to": "lb", "data": n}))
    await until(lambda: all(n in c.got for c in clients), what=f"news {n} everywhere")


async def test_every_transport_through_the_balancer_and_a_killed_worker_s_clients_return(
    balancer: tuple[Balancer, MasterProcess], redis_client: aioredis.Redis
) -> None:
    front, master = balancer
    await until(lambda: reachable(front.url), what="the balancer forwards")
    clients = [
        await Client(f"{kind}@{source}", source, transports).connect(front.url)
        for source in SOURCES
        for kind, transports in TRANSPORTS.items()
    ]
    try:
        await fence(clients, redis_client, 1)
        # source-IP stickiness: every client of one address is on one worker
        pids = {c.name: await c.sio.call("pid", timeout=10) for c in clients}
        for source in SOURCES:
            assert len({pids[f"{k}@{source}"] for k in TRANSPORTS}) == 1, pids
        assert {c.sio.transport() for c in clients} == {"websocket", "polling"}

        victim = pids[clients[0].name]
        on_victim = [c for c in clients if pids[c.name] == victim]
        (slot,) = [w for w, pid in master.worker_pids().items() if pid == victim]
        os.kill(victim, signal.SIGKILL)
        try:
            await until(lambda: all(c.joined == 2 for c in on_victim), timeout=20, what="back")
        except AssertionError:  # say where each one is stuck (a rare flake under heavy load)
            state = [(c.name, c.joined, c.sio.connected, c.sio.transport()) for c in on_victim]
            raise AssertionError(
                f"not back after 20 s: {state}; master log:\n" + "\n".join(master.lines[-20:])
            ) from None
        if front.kind == "nginx":  # no failover: an address waits for its own worker's respawn
            respawned = master.worker_pids()[slot]
            assert {await c.sio.call("pid", timeout=10) for c in on_victim} == {respawned}
        await fence(clients, redis_client, 2)
        await fence(clients, redis_client, 3)
        for c in clients:
            assert sorted(c.got) == [1, 2, 3], (c.name, c.got)  # exactly once each
        print(f"\n{len(on_victim)} of {len(clients)} clients were on the killed worker")
    finally:
        await asyncio.gather(*(c.close() for c in clients))
