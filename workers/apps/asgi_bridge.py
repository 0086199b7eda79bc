"""Serving an ASGI application (FastAPI, Starlette, anything ASGI 3) from the worker's aiohttp
server: HTTP, websocket routes and the lifespan.

Why a bridge rather than an ASGI server in the worker: Socket.IO stays on the worker's
connection layer in front of aiohttp (one write per connection per tick, direct delivery), so
mounting an ASGI app costs Socket.IO nothing; only the app's own routes pay the
translation, a few dict operations per request. (PyPI's ``aiohttp-asgi`` does this too, but
it is small and little used, and the scope must carry the client's real address and the
lifespan's state exactly as uvicorn gives them, so the ~200 lines are ours.)

The scope is uvicorn's: ``client`` is the peer's address, ``state`` a shallow copy of what
the lifespan put in its own (Starlette's ``request.state``), ``root_path`` empty.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from aiohttp import WSMsgType, hdrs, web

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ASGI_VERSION = {"version": "3.0", "spec_version": "2.3"}
BODY_CHUNK = 65536


def address(request: web.BaseRequest, kind: str) -> tuple[str, int] | None:
    """The ``(host, port)`` of the connection's ``peername`` or ``sockname``."""
    transport = request.transport
    found = transport.get_extra_info(kind) if transport is not None else None
    if isinstance(found, tuple) and len(found) >= 2:
        return str(found[0]), int(found[1])
    return None


def is_websocket(request: web.BaseRequest) -> bool:
    return request.headers.get(hdrs.UPGRADE, "").lower() == "websocket"


def scope_of(request: web.BaseRequest, state: dict[str, Any]) -> Scope:
    """The ASGI scope uvicorn would give ``request`` (``http`` or ``websocket``)."""
    websocket = is_websocket(request)
    scheme = request.scheme
    scope: Scope = {
        "type": "websocket" if websocket else "http",
        "asgi": dict(ASGI_VERSION),
        "http_version": f"{request.version.major}.{request.version.minor}",
        "scheme": ("wss" if scheme == "https" else "ws") if websocket else scheme,
        "path": request.path,
        "raw_path": request.rel_url.raw_path.encode(),
        "query_string": request.rel_url.raw_query_string.encode(),
        "root_path": "",
        "headers": [(name.lower(), value) for name, value in request.raw_headers],
        "client": address(request, "peername"),
        "server": address(request, "sockname"),
        "state": dict(state),
    }
    if websocket:
        offered = request.headers.get(hdrs.SEC_WEBSOCKET_PROTOCOL, "")
        scope["subprotocols"] = [p.strip() for p in offered.split(",") if p.strip()]
    else:
        scope["method"] = request.method
    return scope


class AsgiBridge:
    """An aiohttp handler that serves every request it gets with the ASGI ``app``, and the
    app's :class:`Lifespan`, whose state each request's scope gets a copy of.

    ``reserved`` is the Socket.IO path: a request under it that reaches the bridge (a method
    engine.io does not route) is answered 404 rather than handed to the app, whose own
    Socket.IO handling (``socketio.ASGIApp``) would expect an ASGI engine.io server.
    """

    def __init__(self, app: AsgiApp, reserved: str) -> None:
        self.app = app
        self.lifespan = Lifespan(app)
        self.state = self.lifespan.state
        self.reserved = f"/{reserved}/"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if f"{request.path.rstrip('/')}/".startswith(self.reserved):
            return web.Response(status=404, text="Not Found")
        scope = scope_of(request, self.state)
        if scope["type"] == "websocket":
            return await WebSocketExchange(request).run(self.app, scope)
        return await HttpExchange(request).run(self.app, scope)


class HttpExchange:
    """One HTTP request through the app: body chunks in, the response streamed out."""

    def __init__(self, request: web.Request) -> None:
        self.request = request
        self.response: web.StreamResponse | None = None
        self.body_read = False
        self.finished = asyncio.Event()

    async def run(self, app: AsgiApp, scope: Scope) -> web.StreamResponse:
        try:
            await app(scope, self.receive, self.send)
        except Exception:
            log.exception("the ASGI app raised on %s %s", self.request.method, self.request.path)
            if self.response is None or not self.response.prepared:
                return web.Response(status=500, text="Internal Server Error")
            return self.response
        if self.response is None:
            log.error("the ASGI app sent no response to %s %s", self.request.method, scope["path"])
            return web.Response(status=500, text="Internal Server Error")
        if not self.finished.is_set():
            await self.send({"type": "http.response.body", "body": b"", "more_body": False})
        return self.response

    async def receive(self) -> Message:
        if not self.body_read:
            content = self.request.content
            chunk = await content.read(BODY_CHUNK)
            self.body_read = content.at_eof()
            return {"type": "http.request", "body": chunk, "more_body": not self.body_read}
        await self.finished.wait()  # nothing more comes until the response is done
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            response = web.StreamResponse(status=int(message["status"]))
            for name, value in message.get("headers", ()):
                response.headers.add(name.decode("latin-1"), value.decode("latin-1"))
            self.response = response
        elif kind == "http.response.body" and self.response is not None:
            await self._body(
                self.response, message.get("body", b""), bool(message.get("more_body"))
            )

    async def _body(self, response: web.StreamResponse, body: bytes, more: bool) -> None:
        if self.finished.is_set():
            return
        if not response.prepared:
            framed = hdrs.CONTENT_LENGTH in response.headers
            if not more and not framed and hdrs.TRANSFER_ENCODING not in response.headers:
                response.content_length = len(body)  # one piece: no chunked encoding
            await response.prepare(self.request)
        if body and self.request.method != hdrs.METH_HEAD:
            await response.write(body)
        if not more:
            await response.write_eof()
            self.finished.set()


class WebSocketExchange:
    """One websocket through the app: ``websocket.accept`` opens aiohttp's, its messages go
    both ways, a close before the accept is answered 403 (as uvicorn does)."""

    def __init__(self, request: web.Request) -> None:
        self.request = request
        self.ws: web.WebSocketResponse | None = None
        self.connected = False
        self.disconnected = False  # the app was told the client left

    async def run(self, app: AsgiApp, scope: Scope) -> web.StreamResponse:
        try:
            await app(scope, self.receive, self.send)
        except Exception:
            # raised once the client left (Starlette's WebSocketDisconnect): its normal end
            level = logging.DEBUG if self.disconnected else logging.ERROR
            log.log(level, "the ASGI app raised on the websocket %s", scope["path"], exc_info=True)
        if self.ws is None:
            return web.Response(status=403)
        if not self.ws.closed:
            await self.ws.close()
        return self.ws

    async def receive(self) -> Message:
        if not self.connected:
            self.connected = True
            return {"type": "websocket.connect"}
        if self.ws is None:
            raise RuntimeError("the ASGI app read a websocket it did not accept")
        msg = await self.ws.receive()
        if msg.type == WSMsgType.TEXT:
            return {"type": "websocket.receive", "text": msg.data}
        if msg.type == WSMsgType.BINARY:
            return {"type": "websocket.receive", "bytes": msg.data}
        self.disconnected = True
        return {"type": "websocket.disconnect", "code": self.ws.close_code or 1005}

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "websocket.accept" and self.ws is None:
            protocol = message.get("subprotocol")
            ws = web.WebSocketResponse(protocols=(protocol,) if protocol else ())
            for name, value in message.get("headers", ()):
                ws.headers.add(name.decode("latin-1"), value.decode("latin-1"))
            await ws.prepare(self.request)
            self.ws = ws
        elif kind == "websocket.send" and self.ws is not None:
            if message.get("text") is not None:
                await self.ws.send_str(message["text"])
            else:
                await self.ws.send_bytes(message.get("bytes") or b"")
        elif kind == "websocket.close" and self.ws is not None:
            reason = str(message.get("reason") or "").encode()
            await self.ws.close(code=int(message.get("code", 1000)), message=reason)


class Lifespan:
    """The app's ASGI lifespan, run once per worker: started before the worker listens,
    stopped after its connections closed.

    As uvicorn's ``--lifespan auto``: an app that raises before answering the startup has
    no lifespan (logged, and the worker serves on); one that answers ``startup.failed``
    stops the worker's start, with its message.
    """

    def __init__(self, app: AsgiApp) -> None:
        self.app = app
        self.state: dict[str, Any] = {}
        self.events: asyncio.Queue[Message] = asyncio.Queue()
        self.answers: asyncio.Queue[Message | None] = asyncio.Queue()  # None: the app returned
        self.task: asyncio.Task[None] | None = None
        self.phase = "starting"  # then "running" or "failed", then "stopping"

    async def start(self) -> str | None:
        """Run the startup; the failure's message (one line) if the app reports one."""
        scope: Scope = {"type": "lifespan", "asgi": dict(ASGI_VERSION), "state": self.state}
        self.task = asyncio.create_task(self._run(scope))
        await self.events.put({"type": "lifespan.startup"})
        answer = await self.answers.get()
        if answer is None:
            return None
        if answer["type"] == "lifespan.startup.failed":
            self.phase = "failed"
            return last_line(str(answer.get("message") or "no message"))
        self.phase = "running"
        return None

    async def stop(self) -> None:
        """Run the shutdown (a failure is logged)."""
        if self.phase != "running":
            return
        self.phase = "stopping"
        await self.events.put({"type": "lifespan.shutdown"})
        answer = await self.answers.get()
        if answer is not None and answer["type"] == "lifespan.shutdown.failed":
            log.warning("the ASGI lifespan shutdown failed: %s", answer.get("message"))

    async def _run(self, scope: Scope) -> None:
        try:
            await self.app(scope, self.events.get, self._send)
        except Exception as exc:
            if self.phase == "starting":
                log.info("the ASGI app has no lifespan (%s: %s)", type(exc).__name__, exc)
            elif self.phase == "running":
                log.exception("the ASGI lifespan raised")
        await self.answers.put(None)

    async def _send(self, message: Message) -> None:
        await self.answers.put(message)


def last_line(text: str) -> str:
    """A traceback's last line (what Starlette sends as a failed startup's message)."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else text
