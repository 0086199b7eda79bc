"""The worker's own connection layer for Engine.IO sessions under python-socketio.

What it takes (:meth:`Layer.takes`), on engine.io's path, with ``EIO=4`` (or ``EIO=3`` with
``--allow-eio3``: socket.io-client 1.x and 2.x), from an origin engine.io would accept:

- a new session straight on the websocket transport, with a valid RFC 6455 handshake;
- a new long-polling session (``transport=polling``, a ``GET`` without ``sid``), and the
  ``GET`` and ``POST`` requests of the long-polling sessions it serves;
- the upgrade of its long-polling sessions to a websocket.

Everything else goes to aiohttp and engine.io as before (:mod:`workers.conn.front`): JSONP
(and the sessions it opens, their upgrade included: plain python-engineio), a chunked POST,
an origin ``cors_allowed_origins`` refuses, and whatever is not engine.io's. An Engine.IO 3
session's environ is marked (``workers.eio3.translate.ENVIRON_KEY``), through which the
worker's Socket.IO translation (:mod:`workers.eio3.translate`) knows it.

What it does with a new session: what python-engineio's ``AsyncServer`` does for that request
(a session id from ``eio.generate_id``, the socket in ``eio.sockets``, the ``connect`` handler
with the environ, a refusal answered ``401`` with the handler's reason, the OPEN packet with
engine.io's own settings), with the session served by
:class:`~workers.conn.eio_conn.EioConnection` (a websocket) or
:class:`~workers.conn.polling.PollingSession` instead of engine.io's socket, websocket
wrapper, queue, writer task and ping task. python-socketio's ``AsyncServer`` stays the
application API: its handlers are engine.io's ``connect``/``message``/``disconnect``
handlers, called as engine.io calls them (through every guard the worker installed on them).

Reads of engine.io: ``eio.sockets``, ``eio.handlers``, ``eio.generate_id``, and its public
settings (``ping_interval``, ``ping_timeout``, ``ping_interval_grace_period``,
``max_http_buffer_size``, ``transports``, ``allow_upgrades``, ``cors_allowed_origins``,
``cors_credentials``, ``cookie``, ``http_compression``, ``compression_threshold``,
``compression_methods``, ``async_handlers``).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import sys
from collections.abc import Callable, Coroutine
from typing import Any, NamedTuple

from aiohttp import web
from engineio import packet as eio_packet

from sio_cluster.common.forwarded import TrustedHosts, forwarded_client
from sio_cluster.workers.conn import deflate, http_head
from sio_cluster.workers.conn.eio_conn import EioConnection
from sio_cluster.workers.conn.environ import HandshakeEnviron, Shared
from sio_cluster.workers.conn.front import Front, KeepAlive, ProtocolFactory
from sio_cluster.workers.conn.poll_request import PollRequest
from sio_cluster.workers.conn.polling import PollingSession
from sio_cluster.workers.conn.session import EioSession
from sio_cluster.workers.conn.wheel import Wheel
from sio_cluster.workers.conn.ws_frames import TEXT, frame
from sio_cluster.workers.eio3 import translate as eio3_translate
from sio_cluster.workers.transport import fast_ws
from sio_cluster.workers.transport.fast_ws import Counters

log = logging.getLogger(__name__)


def _eager_task(
    coro: Coroutine[Any, Any, Any], loop: asyncio.AbstractEventLoop
) -> asyncio.Task[Any]:
    if sys.version_info >= (3, 12):
        return asyncio.Task(coro, loop=loop, eager_start=True)
    return loop.create_task(coro)


class Route(NamedTuple):
    """What a request the layer takes is: its transport, its session (None: a new one),
    whether the client speaks Engine.IO 3, and whether it takes binary long-polling payloads
    (an Engine.IO 3 client that asked for base64, ``b64=1``, does not)."""

    transport: str  # "websocket" or "polling"
    sid: str | None
    eio3: bool
    binary: bool


class Layer:
    """The layer of one worker (see the module docstring)."""

    def __init__(
        self,
        eio: Any,
        path: str,
        header_timeout: float,
        late_headers: Callable[[], None],
        header_proxies: TrustedHosts | None = None,
        asgi_state: dict[str, Any] | None = None,
        app: web.Application | None = None,
        keep_alive: float = 75.0,
        close_after_answer: bool = False,
        allow_eio3: bool = False,
    ) -> None:
        self.eio = eio
        self.path = path if path.endswith("/") else path + "/"
        self.loop = asyncio.get_running_loop()
        self.wheel = Wheel(self.loop)
        self.header_timeout = header_timeout
        self.late_headers = late_headers
        self.keep_alive = keep_alive  # seconds a kept-alive connection may idle
        self.close_after_answer = close_after_answer  # one request per connection (hand-off)
        self.ping_interval = float(eio.ping_interval)
        self.ping_timeout = float(eio.ping_timeout)
        self.max_payload = int(eio.max_http_buffer_size)
        self._header_proxies = header_proxies
        self._shared = Shared(app, asgi_state)  # what every connection's environ refers to
        self.allow_eio3 = allow_eio3  # Engine.IO 3 clients are served too (--allow-eio3)
        # an Engine.IO 3 client's silence allowed between its PINGs, as Node allows: the
        # interval told at the handshake (engine.io adds its grace period) plus the timeout
        self.client_ping_deadline = float(
            eio.ping_interval + eio.ping_interval_grace_period + eio.ping_timeout
        )
        self._tasks: set[asyncio.Task[Any]] = set()
        self.connections = 0  # open connections the layer serves (websockets, requests)
        self.probing: set[EioConnection] = set()  # upgrades waiting for the client's probe
        self.stopping = False  # the worker is stopping: no new session
        self._open_rest: bytes | None = None  # the OPEN packet after its sid (websockets)
        self._drained: asyncio.Event | None = None  # set when the last one ends (stopping)

    # ---- which connections ---------------------------------------------------------

    def fronting(self, fallback: ProtocolFactory, client: str | None) -> ProtocolFactory:
        """A protocol factory putting :class:`Front` before ``fallback`` (aiohttp's)."""
        return lambda: Front(self, fallback, client)

    def takes(self, head: http_head.Head) -> Route | None:
        """What the request ``head`` is, if this layer serves it (see the module docstring)."""
        if head.path != self.path:
            return None
        fields = head.query_fields()
        transport = fields.get("transport")
        version = fields.get("EIO")
        eio3 = version == ["3"] and self.allow_eio3
        if (version != ["4"] and not eio3) or transport is None or len(transport) != 1:
            return None
        if "j" in fields:  # JSONP: engine.io's (it refuses it for Engine.IO 3)
            return None
        sids = fields.get("sid")
        if sids is not None and len(sids) != 1:
            return None
        sid = None if sids is None else sids[0]
        if sid is not None:
            known = self.eio.sockets.get(sid)
            if known is None or getattr(known, "eio3", False) != eio3:
                return None  # engine.io answers: no such session, or not of this version
        kind = transport[0]
        if kind not in self.eio.transports:
            return None
        if kind == "websocket":
            if not self._websocket(head, sid):
                return None
        elif kind != "polling" or not self._polling(head, sid):
            return None
        if not self._origin_allowed(head):
            return None
        return Route(kind, sid, eio3, not eio3 or "b64" not in fields)

    def _websocket(self, head: http_head.Head, sid: str | None) -> bool:
        if head.method != "GET" or (sid is not None and self.upgradable(sid) is None):
            return False
        headers = head.headers
        return (
            "websocket" in http_head.header_tokens(head, "upgrade")
            and "upgrade" in http_head.header_tokens(head, "connection")
            and headers.get("sec-websocket-version") == "13"
            and http_head.valid_key(headers.get("sec-websocket-key", ""))
        )

    def _polling(self, head: http_head.Head, sid: str | None) -> bool:
        length = http_head.body_length(head)
        if length is None:  # chunked: engine.io reads it
            return False
        if head.method == "GET" and (length or "upgrade" in head.headers):
            return False
        expect = head.headers.get("expect")
        if expect is not None and expect.lower() != "100-continue":
            return False  # aiohttp answers what it cannot meet
        if sid is None:  # a new session
            return head.method == "GET"
        session = self.eio.sockets.get(sid)
        if type(session) is not PollingSession or session.closed or session.closing:
            return False
        return head.method in ("GET", "POST")

    def _origin_allowed(self, head: http_head.Head) -> bool:
        """engine.io's origin check (``cors_allowed_origins``); a refusal is left to engine.io
        to answer (False). A callable is given the environ of the request's head (without
        the peer's address: ``REMOTE_ADDR`` is empty)."""
        origin = head.headers.get("origin")
        allowed = self.eio.cors_allowed_origins
        if not origin or allowed == []:  # no origin, or engine.io's CORS handling is off
            return True
        if allowed is None:
            headers = head.headers
            host = headers.get("host", "")
            scheme = headers.get("x-forwarded-proto", "http")
            same = {f"{scheme}://{host}"}
            if "x-forwarded-proto" in headers or "x-forwarded-host" in headers:
                forwarded_host = headers.get("x-forwarded-host", host).split(",")[0].strip()
                same.add(f"{scheme.split(',')[0].strip()}://{forwarded_host}")
            return origin in same
        if allowed == "*":
            return True
        if isinstance(allowed, str):
            return origin == allowed
        if callable(allowed):  # asked as engine.io asks it, with the request's environ
            environ = HandshakeEnviron(head.raw, "", 0, None, self._shared).build()
            try:
                try:
                    return bool(allowed(origin, environ))
                except TypeError:
                    return bool(allowed(origin))
            except Exception:  # engine.io's own call will fail the same way, and say so
                return False
        return "*" in allowed or origin in allowed

    def still_upgradable(self, sid: str, old: Any) -> bool:
        """True if the session being upgraded is still engine.io's, open (it may have been
        closed by the server, a ping timeout or the client's CLOSE over long-polling)."""
        return (
            not self.stopping
            and not old.closed
            and not old.closing
            and self.eio.sockets.get(sid) is old
        )

    def not_probing(self, conn: EioConnection) -> None:
        self.probing.discard(conn)

    def upgradable(self, sid: str) -> PollingSession | None:
        """Long-polling session ``sid`` if this layer may take its upgrade: a session of the
        layer's, connected, not upgrading nor closing. A session of engine.io's own (a JSONP
        handshake's) upgrades through engine.io."""
        sock = self.eio.sockets.get(sid)
        if (
            type(sock) is not PollingSession
            or not self.eio.allow_upgrades
            or not sock.connected
            or sock.upgraded
            or sock.upgrading
            or sock.closing
            or sock.closed
        ):
            return None
        return sock

    # ---- a new session -----------------------------------------------------------------

    def accept(
        self,
        transport: asyncio.Transport,
        head: http_head.Head,
        route: Route,
        rest: bytes,
        client: str | None,
        fallback: ProtocolFactory,
        kept: KeepAlive | None = None,
    ) -> None:
        """Serve the request ``head`` (``rest``: bytes read after it) of ``route``
        (``kept``: the connection is a kept-alive one, with this idle timer)."""
        if route.transport == "polling":
            self._poll_request(transport, head, route, rest, client, fallback, kept)
            return
        # an Engine.IO 3 client's binary frames start with a type byte the compressed
        # broadcasts do not have: it gets no compression
        offer = None if route.eio3 else head.headers.get("sec-websocket-extensions")
        agreement = deflate.negotiate(offer)
        answer = http_head.switching(
            head.headers["sec-websocket-key"], None if agreement is None else agreement.header
        )
        if route.sid is not None:
            self._upgrade(transport, route.sid, agreement, answer, rest)
            return
        conn = EioConnection(self, self.eio.generate_id(), transport, agreement, route.eio3)
        transport.set_protocol(conn)
        self.connections += 1
        conn.hold()
        if rest:
            conn.data_received(rest)
        environ = self._environ(transport, head, client, route)
        self.spawn(self._open(conn, environ, answer))

    def _environ(
        self, transport: asyncio.Transport, head: http_head.Head, client: str | None, route: Route
    ) -> HandshakeEnviron:
        """The environ of a new session's request (``client``: what the master's PROXY
        header named; a trusted balancer's ``X-Forwarded-For`` is believed); an Engine.IO 3
        client's is marked (``workers.eio3.translate.ENVIRON_KEY``), which the translation's
        ``connect`` hook reads."""
        peer = transport.get_extra_info("peername")
        sockname = transport.get_extra_info("sockname")
        remote = client or (str(peer[0]) if isinstance(peer, tuple) else "")
        forwarded = head.headers.get("x-forwarded-for")
        if forwarded and self._header_proxies is not None and remote in self._header_proxies:
            remote = forwarded_client(forwarded, self._header_proxies) or remote
        environ = HandshakeEnviron(
            head.raw,
            remote,
            # the peer's port, when the address is the peer's (not a balancer's word for it)
            int(peer[1]) if isinstance(peer, tuple) and str(peer[0]) == remote else 0,
            (str(sockname[0]), int(sockname[1])) if isinstance(sockname, tuple) else None,
            self._shared,
        )
        if route.eio3:
            environ[eio3_translate.ENVIRON_KEY] = True
        return environ

    async def _connect(self, session: EioSession, environ: HandshakeEnviron) -> bytes | None:
        """engine.io's handshake of a new ``session``: in ``eio.sockets``, then the
        ``connect`` handler. A refusal takes it out again and returns the 401's body (the
        handler's reason, as JSON); None if the handler accepted it."""
        eio = self.eio
        eio.sockets[session.sid] = session
        refused = await self.trigger("connect", session.sid, environ)
        if refused is None or refused is True:
            return None
        self.forget(session)
        session.closed = True
        eio.logger.warning("Application rejected connection")
        return json.dumps(refused or "Unauthorized").encode()

    async def _open(self, conn: EioConnection, environ: HandshakeEnviron, answer: bytes) -> None:
        """The handshake: engine.io's ``connect`` handler, then the 101 and the OPEN packet,
        or the 401 of a refusal. What the client sends meanwhile, its leaving included, waits
        for it (``conn.hold()``, at ``accept``)."""
        try:
            await self._handshake(conn, environ, answer)
        finally:
            conn.release()

    async def _handshake(
        self, conn: EioConnection, environ: HandshakeEnviron, answer: bytes
    ) -> None:
        eio = self.eio
        sid = conn.sid
        refusal = await self._connect(conn, environ)
        if refusal is not None:
            conn.transport.write(http_head.refusal("401 UNAUTHORIZED", refusal))
            conn.transport.close()
            return
        if conn.transport.is_closing():  # the client left during the connect handler
            return
        if self.stopping:  # the worker began stopping meanwhile: the session ends at once
            await conn.close(wait=False, abort=True, reason=eio.reason.SERVER_DISCONNECT)
            return
        fast_ws.direct_writers[sid] = conn  # deliveries write their frames straight here
        conn.open(answer, self._open_frame(sid))

    # ---- long-polling ------------------------------------------------------------------

    def _poll_request(
        self,
        transport: asyncio.Transport,
        head: http_head.Head,
        route: Route,
        rest: bytes,
        client: str | None,
        fallback: ProtocolFactory,
        kept: KeepAlive | None,
    ) -> None:
        request = PollRequest(self, transport, head, fallback, client)
        request.kept = kept
        transport.set_protocol(request)
        self.connections += 1
        sid = route.sid
        if sid is None:
            request.read_body(0, rest, lambda _: self._poll_open(request, head, client, route))
            return
        session = self.eio.sockets[sid]
        assert isinstance(session, PollingSession)
        request.session = session
        if head.method == "GET":
            request.read_body(0, rest, lambda _: session.poll(request))
            return
        length = http_head.body_length(head) or 0
        if length > self.max_payload:  # engine.io's answer: the session ends
            Counters.bad_clients += 1
            fast_ws.client_refusals.log(
                logging.WARNING,
                "too big",
                "closed a long-poll that posted %d bytes (over %d)",
                length,
                self.max_payload,
            )
            request.refuse_unread()
            session.end_session(self.eio.reason.TRANSPORT_ERROR)
            return
        request.read_body(length, rest, lambda body: session.posted(request, body))

    def _poll_open(
        self, request: PollRequest, head: http_head.Head, client: str | None, route: Route
    ) -> None:
        environ = self._environ(request.transport, head, client, route)
        session = PollingSession(self, self.eio.generate_id(), route.eio3, route.binary)
        request.session = session
        session.hold()
        self.spawn(self._open_polling(session, request, environ))

    async def _open_polling(
        self, session: PollingSession, request: PollRequest, environ: HandshakeEnviron
    ) -> None:
        """engine.io's long-polling handshake: the ``connect`` handler, then the OPEN packet
        (and what the handler sent) as the GET's answer, or the 401 of a refusal."""
        eio = self.eio
        sid = session.sid
        try:
            refusal = await self._connect(session, environ)
            if refusal is not None:
                request.answer("401 UNAUTHORIZED", refusal, [("Content-Type", "application/json")])
                return
            upgrades = ["websocket"] if eio.allow_upgrades and "websocket" in eio.transports else []
            opening = eio_packet.Packet(eio_packet.OPEN, self._open_fields(sid, upgrades))
            if self.stopping:  # the worker began stopping meanwhile: the session ends at once
                await session.close(wait=False, abort=True, reason=eio.reason.SERVER_DISCONNECT)
                request.answer_packets([opening, eio_packet.Packet(eio_packet.CLOSE)])
                return
            session.start_heartbeat()
            if eio.cookie:  # engine.io's option: balancers that stick by cookie read it
                request.cookie = http_head.sid_cookie(eio.cookie, sid)
            session.put_first(opening)  # before what the handler sent
            session.poll(request)
        finally:
            session.release()

    def cors_headers(self, head: http_head.Head) -> list[tuple[str, str]]:
        """The CORS headers engine.io answers a request with (its ``cors_allowed_origins``,
        ``cors_credentials``); the layer takes no request from an origin it refuses."""
        eio = self.eio
        if eio.cors_allowed_origins == []:
            return []
        headers = []
        origin = head.headers.get("origin")
        if origin:
            headers.append(("Access-Control-Allow-Origin", origin))
        asked = head.headers.get("access-control-request-headers")
        if asked:
            headers.append(("Access-Control-Allow-Headers", asked))
        if eio.cors_credentials:
            headers.append(("Access-Control-Allow-Credentials", "true"))
        return headers

    # ---- upgrades ------------------------------------------------------------------------

    def _upgrade(
        self,
        transport: asyncio.Transport,
        sid: str,
        agreement: deflate.Agreement | None,
        answer: bytes,
        rest: bytes,
    ) -> None:
        """The upgrade of long-polling session ``sid`` to this websocket: its
        :class:`PollingSession` serves it until the client has probed the websocket and confirmed
        (``2probe``, ``3probe``, the NOOP that ends the pending poll, ``5``); then this
        connection takes its place (:meth:`upgraded`)."""
        old = self.upgradable(sid)
        if old is None or self.stopping:  # it went, or began another upgrade, meanwhile
            transport.write(http_head.refusal("400 BAD REQUEST", b'"Invalid session"'))
            transport.close()
            return
        conn = EioConnection(self, sid, transport, agreement, getattr(old, "eio3", False))
        transport.set_protocol(conn)
        self.connections += 1
        old.upgrading = True  # a poll meanwhile is answered with a NOOP
        self.probing.add(conn)
        conn.probe(old, answer)
        if rest:
            conn.data_received(rest)

    def upgraded(self, conn: EioConnection, old: PollingSession) -> None:
        """The client confirmed the upgrade: ``conn`` is the session's socket from now on,
        with its session dict and whatever had been queued and not yet sent."""
        self.probing.discard(conn)
        conn.session = old.session
        self.eio.sockets[conn.sid] = conn
        fast_ws.direct_writers[conn.sid] = conn
        old.pass_on(conn)  # the handlers get what came over long-polling first
        for pkt in old.hand_over():
            # a NOOP there was for a poll (the probe's, when no poll was waiting)
            if pkt is not None and pkt.packet_type != eio_packet.NOOP:
                conn.send_packet(pkt)

    def _open_fields(self, sid: str, upgrades: list[str]) -> dict[str, Any]:
        """The OPEN packet's data, engine.io's."""
        eio = self.eio
        return {
            "sid": sid,
            "upgrades": upgrades,
            "pingTimeout": int(eio.ping_timeout * 1000),
            "pingInterval": int(eio.ping_interval + eio.ping_interval_grace_period) * 1000,
            "maxPayload": eio.max_http_buffer_size,
        }

    def _open_frame(self, sid: str) -> bytes:
        """The OPEN packet of a websocket session, framed. Only the sid differs from one
        session to the next (an engine.io sid is base64url: nothing to escape): the rest is
        encoded once (a JSON encoding per connection was 3% of a connect storm's CPU)."""
        if self._open_rest is None:
            fields = json.dumps(self._open_fields("", []), separators=(",", ":"))
            self._open_rest = fields.removeprefix('{"sid":""').encode()
        return frame(b'0{"sid":"' + sid.encode() + b'"' + self._open_rest, TEXT)

    def lost(self, conn: object) -> None:
        """``conn`` (a websocket, or a long-poll request) is done with its transport (called
        once per connection or request)."""
        self.connections -= 1
        if self.connections == 0 and self._drained is not None:
            self._drained.set()

    def forget(self, conn: EioSession) -> None:
        """``conn``'s session is over: out of engine.io's table and the delivery path."""
        sockets = self.eio.sockets
        if sockets.get(conn.sid) is conn:
            del sockets[conn.sid]
        if fast_ws.direct_writers.get(conn.sid) is conn:
            del fast_ws.direct_writers[conn.sid]

    # ---- engine.io's handlers --------------------------------------------------------

    def on_message(self, conn: EioSession, data: str | bytes) -> None:
        """A MESSAGE from ``conn``, for engine.io's ``message`` handler: in a task of its own
        with engine.io's ``async_handlers``; otherwise (python-socketio's setting: it makes
        its own task per event) one after the other, as engine.io's reader awaits each, so
        an event never overtakes the CONNECT before it (:meth:`EioConnection.in_order`)."""
        if self.eio.async_handlers:
            self.spawn(self.trigger("message", conn.sid, data))
        else:
            conn.in_order(data)

    async def trigger_disconnect(self, sid: str, reason: str) -> None:
        await self.trigger("disconnect", sid, reason)

    async def trigger(self, event: str, *args: Any) -> Any:
        """Call engine.io's handler of ``event`` as engine.io does: a handler error is logged
        (and refuses a ``connect``); a ``disconnect`` handler without a reason parameter is
        called without one."""
        handler = self.eio.handlers.get(event)
        if handler is None:
            return None
        try:
            try:
                result = handler(*args)
            except TypeError:
                if event != "disconnect" or len(args) != 2:
                    raise
                result = handler(args[0])
            if inspect.isawaitable(result):
                result = await result
            return result
        except Exception:
            self.eio.logger.exception("%s handler error", event)
            return False if event == "connect" else None

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` in a task held until it ends; on Python 3.12 and later the task runs
        at once, up to its first wait, and one that never waits is never scheduled."""
        task = _eager_task(coro, self.loop)
        if not task.done():
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def stop(self) -> None:
        """The worker is stopping: connections whose head is still coming are closed when it
        comes, a handshake under way ends with its connect handler, no upgrade completes."""
        self.stopping = True

    async def drain(self) -> None:
        """The worker is stopping and has closed every session: wait until their connections
        have written what they hold and ended (upgrades still waiting for their probe are
        given up). Heartbeats end."""
        self.stopping = True
        self.wheel.close()
        for conn in list(self.probing):
            conn.give_up_upgrade()
        if self.connections > 0:
            self._drained = asyncio.Event()
            await self._drained.wait()


def engineio_path(app: web.Application, eio: Any) -> str | None:
    """The path ``app`` routes to ``eio`` (python-socketio's ``attach``), from the router's
    public route list; None if it routes none."""
    for route in app.router.routes():
        if route.method == "GET" and route.handler == eio.handle_request:
            path = route.resource.canonical if route.resource is not None else None
            if path:
                return path
    return None
