"""The protocol 1 endpoints of a worker: the handshake and the 0.9 transports (``--allow-v09``).

Why: deployments built on socket.io 0.9 have clients (web pages, mobile apps on
socket.io-client 0.9) that cannot all be upgraded at once; with this option our workers
serve them beside current ones, in the same rooms (how they are bridged into python-socketio:
:mod:`workers.v09.session`).

========================================  =================================================
request                                   answer
========================================  =================================================
``GET /socket.io/1/?<query>``             ``<sid>:<heartbeat timeout>:<close timeout>:
                                          websocket,xhr-polling`` (text), once the connect
                                          handler of ``/`` accepted; 403 with its reason if
                                          it refused; 503 when the worker is full
``GET /socket.io/1/websocket/<sid>``      the session's websocket: one packet per message
``GET /socket.io/1/xhr-polling/<sid>``    the packets queued (a U+FFFD payload), waiting up
                                          to the polling duration; else ``8::``
``POST /socket.io/1/xhr-polling/<sid>``   the client's packets; ``1``
``GET /socket.io/1/<any>/<sid>/?disconnect``  the session closed (0.9's synchronous
                                          disconnect on page unload)
========================================  =================================================

A polling session the server closes while no GET of its client is pending owes that client
its ``0::``: the next GET gets it (:mod:`workers.v09.last_words`), and a POST until then is
answered ``1`` and dropped, not a 400 the client would answer by reconnecting.

Refused, with 400 and a line in the log the first time: ``flashsocket`` (Flash is gone from
every browser), ``htmlfile`` (an ActiveX streaming hack for Internet Explorer 6-9) and
``jsonp-polling`` (only for pages without CORS, and it runs the server's answer as script);
the handshake offers none of them, so a 0.9 client never asks.

The sid is engine.io's own (``eio.generate_id``), so in one-port mode it carries this worker's
prefix as a current client's does, and the master routes ``/socket.io/1/<transport>/<sid>``
by it (:mod:`master.acceptor.request_line`). A 0.9 socket's id is that sid in every
namespace, as 0.9's ``socket.id`` is.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

from aiohttp import WSMsgType, web
from engineio.async_drivers import aiohttp as eio_aiohttp

from sio_cluster.workers.patches import engineio as eio_patches
from sio_cluster.workers.v09.last_words import LastWords
from sio_cluster.workers.v09.session import GOODBYE, V09Socket

log = logging.getLogger(__name__)

PREFIX = "/socket.io/1/"
TRANSPORTS = ("websocket", "xhr-polling")
REFUSED_TRANSPORTS = ("flashsocket", "htmlfile", "jsonp-polling")
POLLING_DURATION = 20.0  # seconds a GET waits for packets at most (0.9's default)
OUTBOX_LIMIT = 4 * 1024 * 1024  # characters a client may leave unread before it is dropped
LAST_WORDS_SESSIONS = 1024  # closed polling sessions whose last frames wait for a GET, at most
LAST_WORDS_BUDGET = 1024 * 1024  # characters those frames take in all, at most
LAST_WORDS_PER_SESSION = 16 * 1024  # characters one session keeps; over it, only its 0::


class V09Clients:
    """The 0.9 sessions of one python-socketio server, and the routes that serve them."""

    def __init__(
        self,
        sio: Any,
        bad_client: Callable[[str], None],
        slow_client: Callable[[int], None],
        direct_writes: bool,
    ) -> None:
        self.sio = sio
        self.direct_writes = (
            direct_writes  # tick writes to the transport (checks.v09_direct_writes)
        )
        self.eio = sio.eio
        self.sessions: dict[str, V09Socket] = {}
        self.bad_frames = 0  # frames that could not be decoded: each closed its client
        self._bad_client = bad_client  # counts and logs a client closed for garbage
        self._slow_client = slow_client
        self._refused_transports: set[str] = set()
        self._last_words = LastWords(LAST_WORDS_SESSIONS, LAST_WORDS_BUDGET, LAST_WORDS_PER_SESSION)

    def add_routes(self, app: web.Application) -> None:
        """Serve ``/socket.io/1/`` on ``app`` (before any catch-all route)."""
        app.router.add_route("*", PREFIX + "{tail:.*}", self.handle)

    def sid_for(self, eio_sid: str, namespace: str) -> str | None:
        """A 0.9 socket's id in ``namespace``: its session id (None for other clients)."""
        return eio_sid if eio_sid in self.sessions else None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        tail = request.match_info["tail"]
        parts = tail.rstrip("/").split("/")
        if tail == "":
            if request.method == "OPTIONS":
                return self._answer(request, "")
            if request.method != "GET":
                return self._answer(request, "GET only", 405)
            return await self._handshake(request)
        if len(parts) != 2:
            return self._answer(request, "not a protocol 1 request", 400)
        transport, sid = parts
        session = self.sessions.get(sid)
        if "disconnect" in request.query:
            if session is not None:
                await session.close(abort=True, reason=self.eio.reason.CLIENT_DISCONNECT)
            return self._answer(request, "")
        if transport not in TRANSPORTS:
            self._refuse_transport(transport)
            return self._answer(request, f"transport {transport[:20]!r} not supported", 400)
        if session is None or session.closing:
            return self._after_close(request, transport, sid)
        if transport == "websocket":
            return await self._websocket(request, session)
        if request.method == "POST":
            return await self._post(request, session)
        if request.method == "OPTIONS":
            return self._answer(request, "")
        session.transport = transport
        body = await session.poll(min(POLLING_DURATION, float(self.eio.ping_interval)))
        return self._answer(request, body)

    def _after_close(self, request: web.Request, transport: str, sid: str) -> web.Response:
        """A request of a session that is over: an xhr-polling GET gets what the close owed
        it (its ``0::``), and a POST while that waits is taken and dropped (answered 400, the
        client would take it for a lost connection before it reads its ``0::``)."""
        if transport == "xhr-polling":
            now = request.app.loop.time()
            if request.method == "GET":
                last_words = self._last_words.take(sid, now)
                if last_words is not None:
                    return self._answer(request, last_words)
            elif request.method == "POST" and self._last_words.waiting(sid, now):
                return self._answer(request, "1")
        return self._answer(request, "client not handshaken", 400)

    async def _handshake(self, request: web.Request) -> web.StreamResponse:
        if "jsonp" in request.query:
            self._refuse_transport("jsonp-polling")
            return self._answer(request, "JSONP handshakes are not served", 400)
        environ = eio_aiohttp.translate_request(request)
        raw_query = request.rel_url.raw_query_string
        environ["QUERY_STRING"] = raw_query  # as sent, percent-escapes kept (aiohttp decodes)
        query = parse_qs(raw_query, keep_blank_values=True)
        auth = {key: values[0] if len(values) == 1 else values for key, values in query.items()}
        sid = self.eio.generate_id()
        session = V09Socket(
            self.eio, sid, auth, self._bad_frame, OUTBOX_LIMIT, self._slow_client, self._closed
        )
        eio_patches.register_socket(self.eio, session)
        self.sessions[sid] = session
        accepted = await self.eio.handlers["connect"](sid, environ)
        if isinstance(accepted, str):  # refused before python-socketio: the worker is full
            await self._drop(session)
            return self._answer(request, accepted, 503)
        if accepted is False:
            await self._drop(session)
            return self._answer(request, "handshake unauthorized", 403)
        await session.hand_over_now("0" + _json(auth))
        refusal = session.refusal()
        if refusal is not None:
            await self._drop(session)
            return self._answer(request, refusal, 403)
        timeout = self.eio.ping_interval + self.eio.ping_timeout
        transports = ",".join(TRANSPORTS)
        return self._answer(request, f"{sid}:{timeout:g}:{timeout:g}:{transports}")

    async def _drop(self, session: V09Socket) -> None:
        """A handshake refused: the session goes without a word to the client."""
        self.sessions.pop(session.sid, None)
        await session.close(abort=True)

    async def _websocket(self, request: web.Request, session: V09Socket) -> web.StreamResponse:
        if session.transport:
            return self._answer(request, "the session has a transport already", 400)
        ws = web.WebSocketResponse(max_msg_size=self.eio.max_http_buffer_size)
        if not ws.can_prepare(request).ok:
            return self._answer(request, "not a websocket request", 400)
        await ws.prepare(request)
        session.transport = "websocket"
        session.upgraded = True
        writer = request.app.loop.create_task(session.write_websocket(ws, self.direct_writes))
        try:
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    if not await session.receive(message.data):
                        break
                elif message.type in (WSMsgType.BINARY, WSMsgType.ERROR):
                    await self._bad_frame(session, "a binary websocket message")
                    break
        finally:
            if not session.closing:
                await session.close(abort=True, reason=self.eio.reason.TRANSPORT_CLOSE)
            try:
                await writer
            except (ConnectionError, RuntimeError):
                pass  # the client went first: nothing left to tell it
            await ws.close()
        return ws

    async def _post(self, request: web.Request, session: V09Socket) -> web.StreamResponse:
        limit = self.eio.max_http_buffer_size
        if (request.content_length or 0) > limit:
            await self._bad_frame(session, f"a POST over {limit} bytes")
            return self._answer(request, "payload too large", 413)
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.content.iter_any():  # the whole body, never over the limit
            size += len(chunk)
            if size > limit:
                await self._bad_frame(session, f"a POST over {limit} bytes")
                return self._answer(request, "payload too large", 413)
            chunks.append(chunk)
        body = b"".join(chunks)
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            await self._bad_frame(session, "a POST that is not UTF-8")
            return self._answer(request, "not UTF-8", 400)
        if not await session.receive(text):
            return self._answer(request, "bad packet", 400)
        return self._answer(request, "1")

    async def _bad_frame(self, session: V09Socket, why: str) -> None:
        """A 0.9 client sent what cannot be read: counted, its session closed with ``0::``."""
        self.bad_frames += 1
        self._bad_client(f"a bad socket.io 0.9 frame ({why})")
        await session.close(reason=self.eio.reason.TRANSPORT_ERROR)

    def _closed(self, session: V09Socket) -> None:
        """A session is over: what its next GET is owed, kept for it (see
        :mod:`workers.v09.last_words`)."""
        last_words = session.last_words()
        if last_words is not None:
            now = asyncio.get_running_loop().time()
            close_timeout = float(self.eio.ping_interval + self.eio.ping_timeout)
            self._last_words.keep(session.sid, last_words, GOODBYE, now, close_timeout)

    def forget(self, sid: str, *_: Any) -> None:
        """engine.io's ``disconnect`` event: the session is over."""
        self.sessions.pop(sid, None)

    def _refuse_transport(self, transport: str) -> None:
        if transport in REFUSED_TRANSPORTS and transport not in self._refused_transports:
            self._refused_transports.add(transport)
            log.warning("refused a socket.io 0.9 client asking for %s (not served)", transport)

    def _answer(self, request: web.Request, body: str, status: int = 200) -> web.Response:
        environ = {
            "REQUEST_METHOD": request.method,
            "wsgi.url_scheme": request.scheme,
            **{
                "HTTP_" + name.upper().replace("-", "_"): value
                for name, value in request.headers.items()
                if name.lower() in ("origin", "host", "access-control-request-headers")
            },
        }
        headers = dict(eio_patches.cors_headers(self.eio, environ))
        return web.Response(
            status=status, text=body, content_type="text/plain", charset="utf-8", headers=headers
        )


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
