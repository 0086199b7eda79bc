"""The user's own app, in the forms python-socketio users have it (``--app``): a FastAPI and
a Starlette app behind ``socketio.ASGIApp`` and an aiohttp app with the server attached,
each on 2 workers of a real cluster, driven by real HTTP and Socket.IO clients.

The user's server object is the one that serves: its options reach the handshake, its
handlers and class-based namespace answer, and ``sio.emit`` from one of its HTTP routes
reaches the room's members on every worker (and host) exactly once.
"""

from __future__ import annotations

import json
import os
import signal
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
import pytest
import redis.asyncio as aioredis
import socketio

from sio_cluster.master.embedded_redis import EmbeddedRedis
from tests.apps import aiohttp_app, fastapi_app, server_app, starlette_app
from tests.apps.handlers import EVENTS_FILE, TOKEN
from tests.cluster import MasterProcess, Recorder
from tests.integration.test_routing import publish
from tests.raw_ws import RawWebsocket

APPS = {
    "fastapi": ("tests.apps.fastapi_app:app", fastapi_app.PING_INTERVAL),
    "starlette": ("tests.apps.starlette_app:app", starlette_app.PING_INTERVAL),
    "aiohttp": ("tests.apps.aiohttp_app:app", aiohttp_app.PING_INTERVAL),
}
ASGI = {"fastapi", "starlette"}
PEER = "127.0.0.2"  # the clients' source address: not the 127.0.0.1 engine.io used to write


@pytest.fixture(scope="module", params=list(APPS))
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory, kind: str) -> Path:
    return tmp_path_factory.mktemp(kind) / "events"


@pytest.fixture(scope="module")
def app_cluster(redis_server: EmbeddedRedis, kind: str, events: Path) -> Iterator[MasterProcess]:
    with pytest.MonkeyPatch.context() as env:
        env.setenv(EVENTS_FILE, str(events))
        with MasterProcess(redis_server.url, workers=2, app=APPS[kind][0]).start() as master:
            yield master.ready_sync()


Connect = Callable[..., Any]


@pytest.fixture
async def user_clients() -> AsyncIterator[Connect]:
    """Connect :class:`Recorder` clients as the app's users do: a token, a header, and from
    127.0.0.2; all are closed after the test."""
    async with AsyncExitStack() as stack:

        async def connect(
            url: str,
            name: str,
            namespaces: tuple[str, ...] = ("/",),
            token: str = TOKEN,
        ) -> Recorder:
            connector = aiohttp.TCPConnector(local_addr=(PEER, 0))
            session = await stack.enter_async_context(aiohttp.ClientSession(connector=connector))
            recorder = Recorder(name)
            recorder.client = socketio.AsyncClient(reconnection=False, http_session=session)
            recorder.client.on("*", recorder._record, namespace="*")
            stack.push_async_callback(recorder.close)
            await recorder.client.connect(
                url,
                transports=["websocket"],
                namespaces=list(namespaces),
                auth={"token": token},
                headers={"X-Client-Tag": name},
                wait_timeout=10,
            )
            return recorder

        yield connect


def http(method: str, url: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def lines_of(events: Path, what: str) -> list[int]:
    """The pids of the ``what`` lines (``start``, ``stop``) the app recorded."""
    if not events.exists():
        return []
    return [
        int(line.split()[1]) for line in events.read_text().splitlines() if line.split()[0] == what
    ]


async def test_http_routes_answer_on_every_worker(app_cluster: MasterProcess, kind: str) -> None:
    pids = app_cluster.worker_pids()
    for worker in (0, 1):
        answer = http("GET", f"{app_cluster.url(worker)}/pid")
        assert answer == {"pid": pids[worker], "started_in": pids[worker]}
    with pytest.raises(urllib.error.HTTPError) as missing:
        http("GET", f"{app_cluster.url(0)}/no-such-route")
    assert missing.value.code == 404


async def test_the_apps_own_websocket_route_answers_on_every_worker(
    app_cluster: MasterProcess, kind: str
) -> None:
    if kind != "fastapi":
        pytest.skip("the FastAPI app has one")
    pids = app_cluster.worker_pids()
    async with aiohttp.ClientSession() as session:
        for worker in (0, 1):
            async with session.ws_connect(f"{app_cluster.url(worker)}/echo") as ws:
                await ws.send_str("hi")
                assert await ws.receive_str(timeout=10) == f"hi {pids[worker]}"


async def test_the_connection_layer_serves_the_users_server(
    app_cluster: MasterProcess, kind: str
) -> None:
    """Each worker's connection layer answers the adopted server's websocket handshake (its
    answer is not aiohttp's), and its OPEN packet carries the user's own ping interval."""
    for worker in (0, 1):
        ws = await RawWebsocket.open(app_cluster.port_of(worker))
        try:
            assert ws.response_head.startswith(b"HTTP/1.1 101")
            assert b"aiohttp" not in ws.response_head
            opened = json.loads((await ws.packet())[1:])
        finally:
            ws.close()
        assert opened["pingInterval"] == APPS[kind][1] * 1000


async def test_the_lifespan_ran_once_per_worker(app_cluster: MasterProcess, events: Path) -> None:
    assert sorted(lines_of(events, "start")) == sorted(app_cluster.worker_pids().values())
    assert lines_of(events, "stop") == []


async def test_a_routes_emit_reaches_the_room_on_every_worker_once(
    app_cluster: MasterProcess, user_clients: Connect, redis_client: aioredis.Redis
) -> None:
    a = await user_clients(app_cluster.url(0), "a")
    b = await user_clients(app_cluster.url(1), "b")
    outsider = await user_clients(app_cluster.url(1), "outsider")
    for member in (a, b):
        assert await member.call("join", "r1") == ["r1"]
    assert http("POST", f"{app_cluster.url(0)}/rooms/r1/news", {"n": 1}) == {"sent": "r1"}
    await publish(redis_client, "ch:news", {"to": "r1", "data": {"n": 2}})  # ch:* too
    for member in (a, b):
        await member.wait_count("news", 2)
    # the two come from different sources (a worker, Redis): their order is not defined
    await publish(redis_client, "ch:fence", {"to": "r1", "data": "end"})
    for member in (a, b):
        await member.wait_count("fence", 1)  # after it, no third news can be on its way
        assert sorted(args[0]["n"] for args in member.got("news")) == [1, 2]
    assert outsider.got("news") == []


async def test_the_handshake_has_the_apps_ping_interval(
    app_cluster: MasterProcess, user_clients: Connect, kind: str
) -> None:
    client = await user_clients(app_cluster.url(1), "c")
    assert client.client.eio.ping_interval == APPS[kind][1]


async def test_the_connect_handler_reads_a_header_and_the_clients_address(
    app_cluster: MasterProcess, user_clients: Connect, kind: str
) -> None:
    client = await user_clients(app_cluster.url(0), "tagged")
    seen = await client.call("whoami")
    assert seen["tag"] == "tagged"
    assert seen["addr"] == PEER
    query = dict(parse_qsl(seen["query"]))
    assert (query["EIO"], query["transport"]) == ("4", "websocket")
    assert seen["scope"] == (["websocket", PEER] if kind in ASGI else None)


async def test_a_bad_token_is_refused_and_the_client_sees_why(app_cluster: MasterProcess) -> None:
    client = socketio.AsyncClient(reconnection=False)
    refusals: list[Any] = []
    client.on("connect_error", refusals.append)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await client.connect(
            app_cluster.url(0), transports=["websocket"], auth={"token": "wrong"}, wait_timeout=10
        )
    assert refusals == [{"message": "bad token"}]


async def test_a_class_based_namespace_answers(
    app_cluster: MasterProcess, user_clients: Connect
) -> None:
    client = await user_clients(app_cluster.url(1), "n", namespaces=("/", "/chat"))
    pid = app_cluster.worker_pids()[1]
    assert await client.call("hello", "ann", namespace="/chat") == f"hello ann from {pid}"


async def test_sio_call_to_a_socket_on_another_worker_returns_its_ack(
    app_cluster: MasterProcess, user_clients: Connect
) -> None:
    asker = await user_clients(app_cluster.url(0), "asker")
    asked = await user_clients(app_cluster.url(1), "asked")
    asked.client.on("question", lambda question: f"yes, to {question!r}")
    assert await asker.call("ask", asked.sid()) == "yes, to 'are you there?'"


async def test_the_replaced_redis_manager_is_said_once(
    app_cluster: MasterProcess, kind: str
) -> None:
    replaced = app_cluster.log_matches(r"the app's (\w+) is replaced by the cluster's manager")
    assert [m.group(1) for m in replaced] == (["AsyncRedisManager"] if kind == "fastapi" else [])


async def test_the_lifespan_stops_once_per_worker(
    start_master: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = tmp_path / "events"
    monkeypatch.setenv(EVENTS_FILE, str(events))
    master: MasterProcess = await start_master(workers=2, app=APPS["fastapi"][0]).ready()
    pids = sorted(master.worker_pids().values())
    assert sorted(lines_of(events, "start")) == pids
    os.kill(master.pid, signal.SIGTERM)
    assert await master.wait_exit() == 0
    assert sorted(lines_of(events, "stop")) == pids


async def test_a_bare_async_server_is_served(start_master: Any, user_clients: Connect) -> None:
    master: MasterProcess = await start_master(workers=2, app="tests.apps.server_app:sio").ready()
    asker = await user_clients(master.url(0), "asker", namespaces=("/", "/chat"))
    asked = await user_clients(master.url(1), "asked")
    assert asker.client.eio.ping_interval == server_app.PING_INTERVAL
    assert (await asker.call("whoami"))["addr"] == PEER
    assert await asker.call("hello", "bo", namespace="/chat") == (
        f"hello bo from {master.worker_pids()[0]}"
    )
    asked.client.on("question", lambda question: "here")
    assert await asker.call("ask", asked.sid()) == "here"
    assert http("GET", f"{master.url(1)}/healthz")["worker"] == 1


async def test_a_fastapi_app_without_socketio_is_refused_in_one_line(start_master: Any) -> None:
    master: MasterProcess = start_master(workers=2, app="tests.apps.plain_fastapi:app")
    assert await master.start_failure() == (
        "--app 'tests.apps.plain_fastapi:app' is an ASGI application"
        " (a fastapi.applications.FastAPI) without Socket.IO:"
        " give socketio.ASGIApp(sio, other_asgi_app=app) instead"
    )


HEALTHZ_APP = """
import socketio
from aiohttp import web

async def healthz(request):
    return web.Response(text="mine")

sio = socketio.AsyncServer(async_mode="aiohttp")
app = web.Application()
sio.attach(app)
app.router.add_get("/healthz", healthz)
"""


async def test_an_aiohttp_app_with_its_own_healthz_is_refused_in_one_line(
    start_master: Any, tmp_path: Path
) -> None:
    (tmp_path / "healthz_app.py").write_text(HEALTHZ_APP)
    master: MasterProcess = start_master(
        workers=1, app="healthz_app:app", extra=["--app-dir", str(tmp_path)]
    )
    assert await master.start_failure() == (
        "--app 'healthz_app:app': the application routes GET /healthz, the worker's health"
        " endpoint; move that route"
    )


FAILING_LIFESPAN_APP = """
from contextlib import asynccontextmanager

import socketio
from fastapi import FastAPI

@asynccontextmanager
async def lifespan(app):
    raise RuntimeError("the database is not there")
    yield

sio = socketio.AsyncServer(async_mode="asgi")
app = socketio.ASGIApp(sio, other_asgi_app=FastAPI(lifespan=lifespan))
"""


async def test_a_failed_lifespan_startup_stops_the_start_in_one_line(
    start_master: Any, tmp_path: Path
) -> None:
    (tmp_path / "failing_app.py").write_text(FAILING_LIFESPAN_APP)
    master: MasterProcess = start_master(
        workers=1, app="failing_app:app", extra=["--app-dir", str(tmp_path)]
    )
    assert await master.start_failure() == (
        "--app 'failing_app:app': the ASGI lifespan startup failed:"
        " RuntimeError: the database is not there"
    )


@pytest.fixture(scope="module")
def fastapi_hosts(redis_server: EmbeddedRedis) -> Iterator[tuple[MasterProcess, MasterProcess]]:
    """Two masters serving the FastAPI app on one Redis: two hosts of one cluster."""
    app = APPS["fastapi"][0]
    with (
        MasterProcess(redis_server.url, workers=2, app=app).start() as a,
        MasterProcess(redis_server.url, workers=2, app=app).start() as b,
    ):
        yield a.ready_sync(), b.ready_sync()


async def test_a_routes_emit_and_a_call_cross_hosts(
    fastapi_hosts: tuple[MasterProcess, MasterProcess],
    user_clients: Connect,
    redis_client: aioredis.Redis,
) -> None:
    host_a, host_b = fastapi_hosts
    here = await user_clients(host_a.url(0), "here")
    there = await user_clients(host_b.url(1), "there")
    for member in (here, there):
        assert await member.call("join", "hosts") == ["hosts"]
    http("POST", f"{host_a.url(1)}/rooms/hosts/news", {"n": 1})
    http("POST", f"{host_b.url(0)}/rooms/hosts/news", {"n": 2})
    for member in (here, there):
        await member.wait_count("news", 2)
    await publish(redis_client, "ch:fence", {"to": "hosts", "data": "end"})
    for member in (here, there):
        await member.wait_count("fence", 1)  # after it, no third news can be on its way
        assert sorted(args[0]["n"] for args in member.got("news")) == [1, 2]
    there.client.on("question", lambda question: "from the other host")
    assert await here.call("ask", there.sid()) == "from the other host"
