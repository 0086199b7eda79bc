"""workers.apps: telling the ``--app`` forms apart, adopting the user's server, and the ASGI
bridge, on real objects (the bridge on a real aiohttp server with a real Starlette app and
real HTTP and websocket clients)."""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
import socketio
from aiohttp import web
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from sio_cluster.wire.link import FrameLink
from sio_cluster.workers.app_loader import AppLoadError
from sio_cluster.workers.apps.adopt import EIO_OPTIONS, adopt, on_aiohttp
from sio_cluster.workers.apps.asgi_bridge import AsgiBridge, Lifespan
from sio_cluster.workers.apps.forms import (
    AiohttpApp,
    AsgiApp,
    ServerApp,
    SetupApp,
    identify,
)
from sio_cluster.workers.manager import ClusterManager
from tests.cluster import until


def cluster_manager() -> ClusterManager:
    return ClusterManager(FrameLink(lambda frame, body: None, lambda exc: None, 1 << 20))


def test_each_form_is_recognised() -> None:
    sio = socketio.AsyncServer(async_mode="asgi")
    asgi = socketio.ASGIApp(sio, socketio_path="/rt/socket.io/")
    assert identify(asgi, "m:app") == AsgiApp(sio, asgi, "rt/socket.io")
    assert identify(sio, "m:sio") == ServerApp(sio)
    attached = socketio.AsyncServer(async_mode="aiohttp")
    web_app = web.Application()
    attached.attach(web_app)
    assert identify(web_app, "m:app") == AiohttpApp(attached, web_app)

    def setup(sio: socketio.AsyncServer) -> None: ...

    assert identify(setup, "m:setup") == SetupApp(setup)


def mounted() -> Starlette:
    app = Starlette()
    app.mount("/ws", socketio.ASGIApp(socketio.AsyncServer(async_mode="asgi")))
    return app


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        (
            Starlette(),
            "--app 'm:x' is an ASGI application (a starlette.applications.Starlette) without"
            " Socket.IO: give socketio.ASGIApp(sio, other_asgi_app=app) instead",
        ),
        (
            mounted(),
            "--app 'm:x' is an ASGI application (a starlette.applications.Starlette) with a"
            " socketio.ASGIApp mounted at '/ws': give socketio.ASGIApp(sio, other_asgi_app=app)"
            " instead (Socket.IO then is at /socket.io/)",
        ),
        (
            socketio.Server(),
            "--app 'm:x' is a socketio.Server (WSGI, threads); the cluster serves asyncio:"
            " build a socketio.AsyncServer instead",
        ),
        (
            web.Application(),
            "--app 'm:x' is an aiohttp web.Application with no socketio.AsyncServer attached"
            " (sio.attach(app))",
        ),
        (
            socketio.ASGIApp(socketio.AsyncServer(async_mode="asgi"), socketio_path=None),
            "--app 'm:x': socketio_path=None (every path to Socket.IO) is not supported; give"
            " the ASGIApp a path (the default is 'socket.io')",
        ),
        (
            42,
            "--app 'm:x' is a builtins.int, not a socketio.ASGIApp, a socketio.AsyncServer, an"
            " aiohttp web.Application with a socketio.AsyncServer attached, or a"
            " setup(sio[, web_app]) callable",
        ),
    ],
)
def test_what_is_none_of_them_is_said_in_one_line(target: Any, reason: str) -> None:
    with pytest.raises(AppLoadError) as refused:
        identify(target, "m:x")
    assert str(refused.value) == reason


async def test_an_asgi_server_is_served_on_aiohttp_with_every_engineio_option() -> None:
    sio = socketio.AsyncServer(
        async_mode="asgi",
        ping_interval=(10, 3),
        ping_timeout=4,
        max_http_buffer_size=1234,
        allow_upgrades=False,
        http_compression=False,
        compression_threshold=99,
        cookie="io",
        cors_allowed_origins=["https://a.example"],
        cors_credentials=False,
        monitor_clients=False,
        transports=["websocket"],
        always_connect=True,
        async_handlers=False,
    )
    before = sio.eio
    manager = cluster_manager()
    adopt(sio, manager, None, "m:app")
    assert sio.eio is not before and sio.eio.async_mode == sio.async_mode == "aiohttp"
    assert {name: getattr(sio.eio, name) for name in EIO_OPTIONS} == {
        "ping_interval": 10,
        "ping_interval_grace_period": 3,
        "ping_timeout": 4,
        "max_http_buffer_size": 1234,
        "allow_upgrades": False,
        "http_compression": False,
        "compression_threshold": 99,
        "cookie": "io",
        "cors_allowed_origins": ["https://a.example"],
        "cors_credentials": False,
        "start_service_task": False,
        "transports": ["websocket"],
    }
    assert sio.eio.handlers == before.handlers  # python-socketio's own
    assert (sio.always_connect, sio.async_handlers) == (True, False)
    assert sio.manager is manager and manager.server is sio and not sio.manager_initialized


def test_an_aiohttp_server_keeps_its_engineio_server() -> None:
    sio = socketio.AsyncServer(async_mode="aiohttp", ping_interval=11)
    eio = sio.eio
    adopt(sio, cluster_manager(), ["https://b.example"], "m:app")
    assert sio.eio is eio and eio.cors_allowed_origins == ["https://b.example"]
    assert on_aiohttp(eio).ping_interval == 11


def test_a_redis_manager_is_replaced_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    sio = socketio.AsyncServer(client_manager=socketio.AsyncRedisManager("redis://127.0.0.1:1"))
    with caplog.at_level(logging.WARNING):
        adopt(sio, cluster_manager(), None, "m:app")
    assert [r.getMessage() for r in caplog.records] == [
        "the app's AsyncRedisManager is replaced by the cluster's manager: the master carries"
        " every emit to the other workers and hosts over its own Redis connection"
    ]
    assert isinstance(sio.manager, ClusterManager)


class OwnManager(socketio.AsyncManager):
    pass


@pytest.mark.parametrize(
    ("sio", "origins", "reason"),
    [
        (
            socketio.AsyncServer(serializer="msgpack"),
            None,
            "--app 'm:app': serializer MsgPackPacket is not supported: the cluster's workers"
            " and the master's ch:* messages speak the default (JSON) Socket.IO packets",
        ),
        (
            socketio.AsyncServer(client_manager=OwnManager()),
            None,
            "--app 'm:app': its client_manager OwnManager cannot be honoured: the cluster's own"
            " manager keeps the rooms and carries the emits; pass none",
        ),
        (
            socketio.AsyncServer(cors_allowed_origins=["https://a.example"]),
            ["https://b.example"],
            "--app 'm:app': cors_allowed_origins=['https://a.example'] and"
            " --cors-allowed-origins ['https://b.example'] differ; give one of them",
        ),
    ],
)
def test_what_cannot_be_honoured_is_refused(sio: Any, origins: Any, reason: str) -> None:
    manager = sio.manager
    with pytest.raises(AppLoadError) as refused:
        adopt(sio, cluster_manager(), origins, "m:app")
    assert str(refused.value) == reason
    assert sio.manager is manager


def test_an_instrumented_server_is_refused() -> None:
    sio = socketio.AsyncServer(async_mode="asgi")
    admin = sio.instrument(auth=False)  # patches engine.io's socket class, process-wide
    try:
        with pytest.raises(AppLoadError) as refused:
            adopt(sio, cluster_manager(), None, "m:app")
    finally:
        admin.uninstrument()
    assert str(refused.value) == (
        "--app 'm:app': sio.instrument() (python-socketio's Admin UI) follows the rooms of"
        " the manager the cluster replaces; use --admin-ui instead"
    )


async def stream(_: Request) -> StreamingResponse:
    async def parts() -> AsyncIterator[bytes]:
        for i in range(3):
            yield f"part{i};".encode()

    return StreamingResponse(parts(), media_type="text/plain")


async def echo(request: Request) -> JSONResponse:
    body = await request.body()
    return JSONResponse(
        {
            "size": len(body),
            "query": request.url.query,
            "client": request.client.host if request.client else None,
            "state": request.state.greeting,
        },
        headers={"x-echo": "1"},
    )


async def boom(_: Request) -> PlainTextResponse:
    raise RuntimeError("boom")


async def ws_echo(websocket: WebSocket) -> None:
    await websocket.accept()
    while True:
        text = await websocket.receive_text()
        if text == "bye":
            await websocket.close(code=4001)
            return
        await websocket.send_text(text.upper())


@asynccontextmanager
async def lifespan(_: Starlette) -> AsyncIterator[dict[str, Any]]:
    yield {"greeting": "hi"}


STARLETTE = Starlette(
    routes=[
        Route("/stream", stream),
        Route("/echo", echo, methods=["POST", "GET", "HEAD"]),
        Route("/boom", boom),
        WebSocketRoute("/ws", ws_echo),
    ],
    lifespan=lifespan,
)


@asynccontextmanager
async def bridged(app: Any) -> AsyncIterator[str]:
    """``app`` served through :class:`AsgiBridge` on a real aiohttp server; yields its URL."""
    bridge = AsgiBridge(app, "socket.io")
    assert await bridge.lifespan.start() is None
    web_app = web.Application()
    web_app.router.add_route("*", "/{tail:.*}", bridge.handle)
    runner = web.AppRunner(web_app, access_log=None)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    site = web.SockSite(runner, sock)
    await site.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        await runner.cleanup()
        await bridge.lifespan.stop()


async def test_http_routes_through_the_bridge() -> None:
    async with bridged(STARLETTE) as url, aiohttp.ClientSession() as http:
        async with http.get(f"{url}/stream") as response:
            assert (response.status, await response.text()) == (200, "part0;part1;part2;")
        body = b"x" * 200_000  # more than one chunk of the bridge's reads
        async with http.post(f"{url}/echo?a=1", data=body) as response:
            assert response.headers["x-echo"] == "1"
            assert await response.json() == {
                "size": 200_000,
                "query": "a=1",
                "client": "127.0.0.1",
                "state": "hi",
            }
        async with http.head(f"{url}/echo") as response:
            assert (response.status, await response.read()) == (200, b"")
        async with http.get(f"{url}/boom") as response:
            assert (response.status, await response.text()) == (500, "Internal Server Error")
        async with http.put(f"{url}/socket.io/") as response:
            assert response.status == 404  # not the app's: the Socket.IO path


async def test_websocket_routes_through_the_bridge(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="sio_cluster.workers.apps.asgi_bridge")
    async with bridged(STARLETTE) as url, aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{url}/ws") as ws:
            await ws.send_str("left")
            assert await ws.receive_str() == "LEFT"
        # the client left: the app's WebSocketDisconnect is its normal end, not an error
        await until(lambda: bool(caplog.records), what="the app's end")
        assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
            (logging.DEBUG, "the ASGI app raised on the websocket /ws")
        ]
        async with http.ws_connect(f"{url}/ws") as ws:
            await ws.send_str("hello")
            assert await ws.receive_str() == "HELLO"
            await ws.send_str("bye")
            closed = await ws.receive()
            assert (closed.type, ws.close_code) == (aiohttp.WSMsgType.CLOSE, 4001)
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(f"{url}/no-such-socket")
        assert refused.value.status == 403


async def test_a_failed_lifespan_startup_is_reported_in_one_line() -> None:
    @asynccontextmanager
    async def failing(_: Starlette) -> AsyncIterator[None]:
        raise RuntimeError("no database")
        yield

    assert await Lifespan(Starlette(lifespan=failing)).start() == "RuntimeError: no database"


async def test_an_app_without_a_lifespan_is_served() -> None:
    async def bare(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise ValueError(f"unsupported scope {scope['type']}")
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async with bridged(bare) as url, aiohttp.ClientSession() as http:
        async with http.get(f"{url}/anything") as response:
            assert response.status == 204
