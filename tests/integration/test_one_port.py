"""One port per host: every client on ``--port P``, each connection handed to its worker.

Real masters and workers, real python-socketio clients of every transport from several
loopback source addresses, all on the one port: a long-polling session's requests, its
upgrade and a direct websocket each reach the worker holding the session.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
import socketio

from bench.measure import free_port_block, is_running
from tests.cluster import REPO, MasterProcess, until
from tests.fronts import start_front, stop_front

TRANSPORTS = {
    "websocket": ["websocket"],
    "polling": ["polling"],
    "upgrade": ["polling", "websocket"],
}
WAIT = 30.0  # generous: the machine is shared


class Client:
    """A python-socketio client from its own loopback source address, recording events."""

    def __init__(self, name: str, address: str, transport: str, reconnect: bool = False) -> None:
        self.name = name
        self.transport = transport
        self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(address, 0)))
        self.sio = socketio.AsyncClient(
            http_session=self.http,
            engineio_logger=logging.getLogger(f"client.{name}"),  # its warnings in a report
            reconnection=reconnect,
            reconnection_delay=0.2,
            reconnection_delay_max=1,
        )
        self.events: list[tuple[str, tuple[Any, ...]]] = []
        self.disconnects = 0
        self.sio.on("*", self._record)
        self.sio.on("disconnect", self._disconnected)

    async def _record(self, event: str, *args: Any) -> None:
        self.events.append((event, args))

    async def _disconnected(self, *_: Any) -> None:
        self.disconnects += 1

    async def connect(self, url: str) -> Client:
        await self.sio.connect(url, transports=TRANSPORTS[self.transport], wait_timeout=WAIT)
        return self

    def got(self, event: str) -> list[Any]:
        return [args[0] for name, args in self.events if name == event]

    async def call(self, event: str, data: Any = None) -> Any:
        return await self.sio.call(event, data, timeout=WAIT)

    async def close(self) -> None:
        if self.sio.connected:
            await self.sio.disconnect()
        await self.http.close()


async def connect_all(url: str, count: int, reconnect: bool = False) -> list[Client]:
    """``count`` clients, transports in turn, from 127.0.0.2, 127.0.0.3 ... (10 addresses)."""
    made = [
        Client(f"c{i}", f"127.0.0.{2 + i % 10}", list(TRANSPORTS)[i % 3], reconnect)
        for i in range(count)
    ]
    await asyncio.gather(*(c.connect(url) for c in made))
    return made


async def stream(
    publisher: aioredis.Redis, everyone: list[Client], count: int, master: MasterProcess
) -> None:
    """``count`` numbered ``ch:*`` messages to the room: each client gets each exactly once,
    in order (a fence proves nothing else is on its way)."""
    before = {c.name: len(c.got("num")) for c in everyone}
    fences = {c.name: len(c.got("fence")) for c in everyone}
    for i in range(count):
        await publisher.publish("ch:num", json.dumps({"to": "team", "data": i}))
    await publisher.publish("ch:fence", json.dumps({"to": "team", "data": 0}))
    try:
        await until(
            lambda: all(len(c.got("fence")) > fences[c.name] for c in everyone),
            WAIT,
            "the fence at every client",
        )
    except AssertionError:  # say who is stuck where
        late = [
            (c.name, c.transport, c.sio.connected, c.disconnects, c.got("num")[before[c.name] :])
            for c in everyone
            if len(c.got("fence")) <= fences[c.name]
        ]
        log = "\n".join(master.lines[-40:])
        raise AssertionError(f"no fence at {late}; master log:\n{log}") from None
    for c in everyone:
        assert c.got("num")[before[c.name] :] == list(range(count)), c.name


def one_port_master(redis_url: str, workers: int, *extra: str) -> MasterProcess:
    return MasterProcess(redis_url, workers=workers, extra=extra, one_port=True).start()


async def test_every_transport_on_one_port_reaches_its_worker(
    redis_server: Any, redis_client: aioredis.Redis
) -> None:
    with one_port_master(redis_server.url, 3) as master:
        await master.ready(WAIT)
        url = master.url(0)
        everyone = await connect_all(url, 30)
        try:
            for c in everyone:
                assert await c.call("join", "team") == ["team"]
            pids = collections.Counter([await c.call("pid") for c in everyone])
            assert set(pids) == set(master.worker_pids().values()), pids
            assert max(pids.values()) <= 15, pids  # spread: no worker holds half of them
            upgraded = [c for c in everyone if c.transport == "upgrade"]
            await until(
                lambda: all(c.sio.transport() == "websocket" for c in upgraded),
                WAIT,
                "every polling client that may upgrade has",
            )
            # each long-poll answer is a new connection through the port; a stream stays
            # under 16 packets: python-engineio's client aborts a polling answer carrying
            # more (its max_decode_packets), which a burst can fill between two polls
            for _ in range(5):
                await stream(redis_client, everyone, 10, master)
            assert [c.name for c in everyone if c.disconnects or not c.sio.connected] == []
            assert master.log_matches("Invalid session") == []
            handed = master.metric('sio_master_connections_total{outcome="handed"}')
            assert handed >= 30 + 50  # a connection per websocket, several per polling client
        finally:
            await asyncio.gather(*(c.close() for c in everyone))


async def test_a_killed_worker_s_clients_come_back_through_the_port(
    redis_server: Any, redis_client: aioredis.Redis
) -> None:
    with one_port_master(redis_server.url, 3) as master:
        await master.ready(WAIT)
        everyone = await connect_all(master.url(0), 12, reconnect=True)
        try:
            for c in everyone:
                await c.call("join", "team")
            await stream(redis_client, everyone, 5, master)
            on = {c.name: await c.call("pid") for c in everyone}
            victim = collections.Counter(on.values()).most_common(1)[0][0]
            hit = [c for c in everyone if on[c.name] == victim]
            os.kill(victim, signal.SIGKILL)
            await until(lambda: all(c.disconnects for c in hit), WAIT, "its clients cut off")
            await until(lambda: all(c.sio.connected for c in everyone), WAIT, "all back")
            for c in everyone:  # a new session after the cut: joined again
                assert await c.call("join", "team") == ["team"]
            assert {await c.call("pid") for c in hit}.isdisjoint({victim})
            await stream(redis_client, everyone, 10, master)
            assert master.log_matches("Invalid session") == []
        finally:
            await asyncio.gather(*(c.close() for c in everyone))


async def test_a_silent_connection_is_closed_without_holding_the_port(
    redis_server: Any,
) -> None:
    with one_port_master(redis_server.url, 1, "--header-timeout", "1") as master:
        await master.ready(WAIT)
        silent = socket.create_connection(("127.0.0.1", master.port))
        slow = socket.create_connection(("127.0.0.1", master.port))
        try:
            slow.sendall(b"GET /socket.io/?EIO=4&transport=pol")  # the line comes in parts
            client = await Client("c", "127.0.0.2", "websocket").connect(master.url(0))
            await client.close()  # served while the silent one waits
            slow.sendall(b"ling HTTP/1.1\r\nHost: x\r\n\r\n")
            slow.settimeout(WAIT)
            assert slow.recv(65536).startswith(b"HTTP/1.1 200 OK")
            silent.settimeout(WAIT)
            started = time.monotonic()
            assert silent.recv(1) == b""  # closed by the master
            assert time.monotonic() - started < 5
            timeouts = 'sio_master_connections_total{outcome="header_timeout"}'
            assert master.metric(timeouts) == 1
        finally:
            silent.close()
            slow.close()


async def test_a_kept_alive_connection_carries_one_request(redis_server: Any) -> None:
    """Every answer but an upgrade closes its connection, so the next request (perhaps of
    another session) comes back through the master."""
    with one_port_master(redis_server.url, 2) as master:
        await master.ready(WAIT)
        async with aiohttp.ClientSession() as http:
            url = f"{master.url(0)}/socket.io/?EIO=4&transport=polling"
            sids = []
            for _ in range(4):
                async with http.get(url) as response:
                    assert response.headers["Connection"] == "close"
                    body = await response.text()
                    sids.append(json.loads(body[1:])["sid"])
            assert len({sid.partition(".")[0] for sid in sids}) == 2  # both workers
            for sid in reversed(sids):  # each session's requests reach its own worker
                async with http.post(f"{url}&sid={sid}", data="40") as response:
                    assert (response.status, await response.text()) == (200, "OK")
            async with http.get(f"{master.url(0)}/healthz") as response:
                assert response.headers["Connection"] == "close"


async def test_max_connections_is_per_worker(redis_server: Any) -> None:
    with one_port_master(redis_server.url, 2, "--max-connections", "1") as master:
        await master.ready(WAIT)
        first = await Client("a", "127.0.0.2", "websocket").connect(master.url(0))
        second = await Client("b", "127.0.0.3", "websocket").connect(master.url(0))
        third = Client("c", "127.0.0.4", "websocket")
        try:
            assert await first.call("pid") != await second.call("pid")
            try:
                await third.connect(master.url(0))
            except socketio.exceptions.ConnectionError:
                pass
            else:
                raise AssertionError("a third connection was accepted")
        finally:
            for c in (first, second, third):
                await c.close()


async def test_a_rolling_restart_refuses_no_connection(redis_server: Any) -> None:
    with one_port_master(redis_server.url, 2) as master:
        await master.ready(WAIT)
        old = set(master.worker_pids().values())
        failures: list[str] = []
        answered = 0
        restarted = False

        async def handshakes() -> None:
            nonlocal answered
            async with aiohttp.ClientSession() as http:
                while not restarted:
                    url = f"{master.url(0)}/socket.io/?EIO=4&transport=polling"
                    try:
                        async with http.get(url) as response:
                            body = await response.text()
                            if response.status != 200:
                                failures.append(f"{response.status} {body}")
                    except aiohttp.ClientError as exc:
                        failures.append(repr(exc))
                    answered += 1

        prober = asyncio.create_task(handshakes())
        try:
            await until(lambda: answered > 5, WAIT, "probes answered")
            master.signal(signal.SIGHUP)
            await master.wait_log("rolling restart done", timeout=60)
        finally:
            restarted = True
            await prober
        assert failures == []
        new = set(master.worker_pids().values())
        assert new.isdisjoint(old)
        client = await Client("c", "127.0.0.2", "polling").connect(master.url(0))
        try:
            assert await client.call("pid") in new
        finally:
            await client.close()


async def test_connections_wait_for_a_respawning_worker(redis_server: Any) -> None:
    """The only worker SIGKILLed: connections made at once are held, not refused, and
    served by its respawn."""
    with one_port_master(redis_server.url, 1) as master:
        await master.ready(WAIT)
        old = master.worker_pids()[0]
        os.kill(old, signal.SIGKILL)
        await until(lambda: not is_running(old), WAIT, "the worker gone")
        raw = [socket.create_connection(("127.0.0.1", master.port)) for _ in range(20)]
        made = [Client(f"c{i}", f"127.0.0.{2 + i}", "websocket") for i in range(5)]
        try:
            for conn in raw:  # sent before the master can have seen the exit
                conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            for conn in raw:
                conn.settimeout(WAIT)
                assert conn.recv(65536).startswith(b"HTTP/1.1 200 OK")
            await asyncio.gather(*(c.connect(master.url(0)) for c in made))
            pids = {await c.call("pid") for c in made}
            assert pids == {master.worker_pids()[0]} and old not in pids
            assert master.metric('sio_master_connections_total{outcome="no_worker"}') == 0
        finally:
            await asyncio.gather(*(c.close() for c in made))
            for conn in raw:
                conn.close()


def haproxy(
    folder: Path, port: int, hosts: tuple[str, ...], *extra: str
) -> tuple[subprocess.Popen[bytes], int]:
    """The real HAProxy on what ``balancer-config haproxy`` prints for one-port hosts; the
    process and the port it listens on. What it logs is in ``folder``/haproxy.log."""
    if shutil.which("haproxy") is None:
        pytest.skip("haproxy is not installed (apt-get install haproxy; .ci/run does)")

    def command(listen: int) -> list[str]:
        config = subprocess.run(
            [sys.executable, "-m", "sio_cluster", "balancer-config", "haproxy", "--workers", "2"]
            + ["--port", str(port), "--hosts", ",".join(hosts), "--listen", f"127.0.0.1:{listen}"]
            + list(extra),
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        (folder / "haproxy.cfg").write_text(config)
        return ["haproxy", "-f", str(folder / "haproxy.cfg"), "-db"]

    return start_front(command, folder / "haproxy.log")


async def forwards(url: str) -> bool:
    try:
        async with aiohttp.ClientSession() as http, http.get(f"{url}/healthz") as response:
            return response.status == 200
    except aiohttp.ClientError:
        return False


async def test_haproxy_in_front_of_two_one_port_hosts(
    redis_server: Any, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    """``balancer-config haproxy --layout one-port``, run by the real HAProxy, in front of two
    hosts (two masters on 127.0.0.10 and 127.0.0.11, one port each): a source address sticks
    to one host, whose master hands each connection to the worker of its session."""
    port = free_port_block(1)
    hosts = ("127.0.0.10", "127.0.0.11")
    masters: list[MasterProcess] = []
    front = None
    everyone: list[Client] = []
    try:
        for host in hosts:
            masters.append(
                one_port_master(redis_server.url, 2, "--host", host, "--port", str(port))
            )
        for master in masters:
            await master.ready(WAIT)
        # HAProxy only once both hosts listen: a host its first check found down and a later
        # one up changes the source hash, and a client's next request goes to the other host,
        # which has no such session
        front, listen = haproxy(tmp_path, port, hosts)
        url = f"http://127.0.0.1:{listen}"
        await until(lambda: forwards(url), WAIT, "haproxy forwards")
        everyone = await connect_all(url, 12)
        for c in everyone:
            await c.call("join", "team")
        await stream(redis_client, everyone, 10, master)
        host_of = {pid: i for i, m in enumerate(masters) for pid in m.worker_pids().values()}
        on = {c.name: host_of[await c.call("pid")] for c in everyone}
        by_source = collections.defaultdict(set)
        for i, c in enumerate(everyone):
            by_source[i % 10].add(on[c.name])
        assert all(len(h) == 1 for h in by_source.values()), by_source  # sticky by host
        assert [c.name for c in everyone if c.disconnects] == []
        assert not any(m.log_matches("Invalid session") for m in masters)
    finally:
        await asyncio.gather(*(c.close() for c in everyone))
        if front is not None:
            stop_front(front)
            print("haproxy said:", (tmp_path / "haproxy.log").read_text())  # shown if it failed
        for master in masters:
            master.cleanup()


def exchange(port: int, data: bytes, source: str = "127.0.0.1") -> bytes:
    """Send ``data`` on a new connection from ``source``; everything answered until close."""
    with socket.create_connection(("127.0.0.1", port), WAIT, (source, 0)) as conn:
        conn.sendall(data)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return answer


def polling(method: str, sid: str | None, body: bytes = b"") -> bytes:
    query = "EIO=4&transport=polling" + (f"&sid={sid}" if sid else "")
    return (
        f"{method} /socket.io/?{query} HTTP/1.1\r\nHost: x\r\n"
        f"Content-Length: {len(body)}\r\nContent-Type: text/plain\r\n\r\n"
    ).encode() + body


V2_CLIENT = (  # PROXY v2, TCP over IPv4, from 203.0.113.7:51000 to 10.0.0.1:80
    b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c"
    + bytes([203, 0, 113, 7, 10, 0, 0, 1])
    + (51000).to_bytes(2, "big")
    + (80).to_bytes(2, "big")
)


@pytest.mark.parametrize(
    ("header", "client"),
    [(V2_CLIENT, "203.0.113.7"), (b"PROXY TCP6 2001:db8::5 ::1 4000 80\r\n", "2001:db8::5")],
)
async def test_the_proxy_protocol_names_the_client(
    redis_server: Any, header: bytes, client: str
) -> None:
    extra = ("--proxy-protocol", "--app", "tests.address_app:setup")
    with one_port_master(redis_server.url, 2, *extra) as master:
        await master.ready(WAIT)
        port = master.port
        opened = exchange(port, header + polling("GET", None))
        sid = json.loads(opened.partition(b"\r\n\r\n")[2][1:])["sid"]
        assert exchange(port, header + polling("POST", sid, b"40")).endswith(b"OK")
        assert b"40{" in exchange(port, header + polling("GET", sid))
        assert exchange(port, header + polling("POST", sid, b'421["remote"]')).endswith(b"OK")
        assert f'431["{client}"]'.encode() in exchange(port, header + polling("GET", sid))
        # a peer outside --forwarded-allow-ips sends no header, and is itself the client
        assert exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", "127.0.0.2").startswith(
            b"HTTP/1.1 200 OK"
        )
        # a trusted peer that sends none is closed and counted
        try:
            answer = exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        except ConnectionResetError:  # closed with the request unread: a reset
            answer = b""
        assert answer == b""
        assert master.metric('sio_master_connections_total{outcome="bad_proxy_header"}') == 1


async def test_x_forwarded_for_is_believed_from_a_trusted_peer_only(redis_server: Any) -> None:
    extra = ("--proxy-headers", "--app", "tests.address_app:setup")
    with one_port_master(redis_server.url, 1, *extra) as master:
        await master.ready(WAIT)
        answers = {}
        for source in ("127.0.0.1", "127.0.0.2"):
            c = Client(source, source, "polling")
            try:
                await c.sio.connect(
                    master.url(0),
                    transports=["polling"],
                    headers={"X-Forwarded-For": "198.51.100.9, 127.0.0.1"},
                    wait_timeout=WAIT,
                )
                answers[source] = await c.call("remote")
            finally:
                await c.close()
        assert answers == {"127.0.0.1": "198.51.100.9", "127.0.0.2": "127.0.0.2"}


async def test_haproxy_send_proxy_gives_the_app_the_client_address(
    redis_server: Any, tmp_path: Path
) -> None:
    """``balancer-config haproxy --send-proxy`` in front of a ``--proxy-protocol`` host: the
    app sees each client's own address, not HAProxy's, over polling and websocket."""
    extra = ("--proxy-protocol", "--app", "tests.address_app:setup")
    with one_port_master(redis_server.url, 2, *extra) as master:
        front, listen = haproxy(tmp_path, master.port, ("127.0.0.1",), "--send-proxy")
        made: list[Client] = []
        try:
            await master.ready(WAIT)
            url = f"http://127.0.0.1:{listen}"
            await until(lambda: forwards(url), WAIT, "haproxy forwards")
            for i, transport in enumerate(TRANSPORTS):
                made.append(await Client(f"c{i}", f"127.0.0.{5 + i}", transport).connect(url))
            assert [await c.call("remote") for c in made] == ["127.0.0.5", "127.0.0.6", "127.0.0.7"]
            assert master.metric('sio_master_connections_total{outcome="bad_proxy_header"}') == 0
        finally:
            await asyncio.gather(*(c.close() for c in made))
            stop_front(front)
            print("haproxy said:", (tmp_path / "haproxy.log").read_text())  # shown if it failed


def sigterm_pending(pid: int) -> bool:
    """True once ``pid`` has a SIGTERM waiting (it is stopped, so not yet handled)."""
    with open(f"/proc/{pid}/status") as status:
        masks = [line.split()[1] for line in status if line.startswith(("SigPnd", "ShdPnd"))]
    return any(int(mask, 16) & (1 << (signal.SIGTERM - 1)) for mask in masks)


async def test_connections_passed_to_a_frozen_worker_replaced_are_served(
    redis_server: Any,
) -> None:
    """Connections passed to a worker frozen (SIGSTOP) while they arrive, then told to stop by
    a rolling restart and thawed, are all answered: taken before its SIGTERM is handled, or
    given back unread and served by the new worker (which of the two is up to its event
    loop: tests/workers/test_handoff.py checks the giving back itself), never reset."""
    with one_port_master(redis_server.url, 1) as master:
        await master.ready(WAIT)
        old = master.worker_pids()[0]
        os.kill(old, signal.SIGSTOP)
        raw = [socket.create_connection(("127.0.0.1", master.port)) for _ in range(10)]
        try:
            for conn in raw:
                conn.sendall(polling("GET", None))
            await until(
                lambda: master.metric('sio_master_connections_total{outcome="handed"}') == 10,
                WAIT,
                "all ten handed to the frozen worker",
            )
            master.signal(signal.SIGHUP)
            await until(lambda: sigterm_pending(old), 60, "the frozen worker told to stop")
            os.kill(old, signal.SIGCONT)
            await master.wait_log("rolling restart done", timeout=60)
            for conn in raw:
                conn.settimeout(WAIT)
                assert conn.recv(65536).startswith(b"HTTP/1.1 200 OK")
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(old, signal.SIGCONT)
            for conn in raw:
                conn.close()
