"""Every dependency internal sio-cluster relies on, named once and checked when a worker starts.

Why: the worker's fast paths and its routing read internals that python-engineio,
python-socketio, aiohttp and asyncio do not promise to keep. An upgrade that moved one
would otherwise disable a fast path silently, or misroute. Here each internal has one
accessor, and :func:`check` inspects real objects of the installed versions once, at
start: where a public path exists the worker degrades to it with one warning naming the
dependency and its version; where none exists it raises :class:`CompatError`, so the
worker fails at start instead of misbehaving. Accessors do no probing of their own: the
choice is made once (:func:`check`, then :func:`workers.transport.fast_ws.install`).

======================================================  ==================  ======================
internal                                                needed by           without it
======================================================  ==================  ======================
python-socketio ``manager.rooms[ns][room][sid]``        routing             :class:`CompatError`
= ``eio_sid``, ``manager.get_participants``
engine.io ``AsyncServer.sockets``, socket ``queue``     every delivery,     :class:`CompatError`
(``put_nowait``, ``qsize``) and ``closed``              worker shutdown
engine.io ``AsyncServer._async['websocket']``,          coalesced writes,   engine.io's websocket:
its aiohttp ``WebSocket._sock``; aiohttp                slow-client abort   aiohttp ``send_str``
``WebSocketResponse._writer.transport``                 (and direct writes)
asyncio ``Queue._getters``; engine.io socket            direct writes       engine.io's queue and
``upgraded``, ``sid``, ``_websocket_handler``                               writer task
python-socketio ``AsyncServer._handle_connect``,        connection state    :class:`CompatError`
``_send_packet``, ``manager.pending_connect``;          recovery            (checked only with
engine.io socket ``session``                                                the option on)
engine.io ``AsyncServer._ok``,                          Engine.IO 3         :class:`CompatError`
``_async['translate_request']``, ``AsyncSocket.``       clients             (checked only with
``handle_post_request``, ``schedule_ping``, the ping    (``--allow-eio3``)  the option on)
settings; python-socketio ``_send_packet``,
``manager.pending_connect``
engine.io socket ``connected``, ``upgrading``,          session loop        engine.io's handler:
``upgraded``, ``closed``, ``receive``, ``close``;       (workers/           a task more per
queue ``get``, ``put``, ``task_done``; server           ws_session.py)      connection, one per
ping settings, ``max_http_buffer_size``, ``reason``                         received message
engine.io ``AsyncSocket._send_ping`` (a coroutine),     timer pings         engine.io's ping task
``schedule_ping``, ``close``, ``last_ping``
======================================================  ==================  ======================

Redis URLs are read through redis-py's public ``ConnectionPool.from_url``
(:func:`parse_redis_url`), so the master's bare subscriber needs no redis-py internals.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import platform
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import redis.asyncio as aioredis
import socketio
from aiohttp import http_websocket, web
from engineio import exceptions as eio_exceptions
from engineio.async_drivers import aiohttp as eio_aiohttp
from engineio.async_socket import AsyncSocket
from redis.asyncio.sentinel import SentinelConnectionPool

from sio_cluster.workers.packet_shape import shape_problem
from sio_cluster.workers.partial_packets import PartialPackets

log = logging.getLogger(__name__)

EngineIoWebSocket = eio_aiohttp.WebSocket
"""engine.io's aiohttp websocket wrapper, extended by ``fast_ws.CoalescingWebSocket``."""

_NO_MEMBERS: Mapping[str, str] = {}
_STAND_IN = object()  # the transport handed to a probe aiohttp writer


class CompatError(RuntimeError):
    """An installed dependency lacks an internal that routing or delivery cannot do without."""


@dataclass(frozen=True)
class FastPaths:
    """Which fast paths this worker runs (the result of :func:`check`).

    ``coalesced_writes``: each connection's frames of one loop tick leave in one write,
    and a client that stops reading is aborted past ``SLOW_CLIENT_BYTES`` (the abort is
    measured on those same writes, so the two stand or fall together).
    ``direct_writes``: a delivery to a websocket whose engine.io writer is idle skips
    engine.io's queue and writer task (needs ``coalesced_writes``).
    ``session_loop``: websockets are served by :mod:`workers.transport.ws_session` (two tasks fewer
    per connection, none per received message) instead of engine.io's handler (needs
    ``coalesced_writes``).
    """

    coalesced_writes: bool
    direct_writes: bool
    session_loop: bool


def version(dist: str) -> str:
    """``"<dist> <installed version>"`` for messages (``dist`` as pip names it)."""
    try:
        return f"{dist} {metadata.version(dist)}"
    except metadata.PackageNotFoundError:
        return f"{dist} (version unknown)"


# -- engine.io and aiohttp: websockets -----------------------------------------------------


def install_websocket_class(eio: Any, factory: Callable[[Any, Any], Any]) -> None:
    """Make ``eio`` build its websockets with ``factory(handler, server)``.

    The driver table is copied first: engine.io shares one table between every server.
    """
    eio._async = {**eio._async, "websocket": factory}


def served_socket(handler: Any) -> tuple[str, Any] | None:
    """The ``(eio_sid, engine.io socket)`` whose websocket is built with ``handler``.

    engine.io hands its websocket class the socket's bound ``_websocket_handler``.
    """
    owner = getattr(handler, "__self__", None)
    return (owner.sid, owner) if isinstance(owner, AsyncSocket) else None


def aiohttp_response(eio_websocket: Any) -> web.WebSocketResponse:
    """The aiohttp ``WebSocketResponse`` engine.io's websocket wrapper serves (once open)."""
    response: web.WebSocketResponse = eio_websocket._sock
    return response


def ws_transport(response: web.WebSocketResponse) -> asyncio.Transport | None:
    """The transport aiohttp writes ``response``'s frames to; None before it is prepared."""
    writer = response._writer
    return None if writer is None else writer.transport


def writer_is_parked(eio_socket: Any) -> bool:
    """True if ``eio_socket``'s writer task waits on its empty queue, holding nothing.

    Then a frame written straight to the websocket cannot overtake a packet engine.io
    has queued or dequeued but not yet written. False while the socket is not (yet)
    on its websocket.
    """
    queue = eio_socket.queue
    if queue.qsize() or not eio_socket.upgraded or eio_socket.closed:
        return False
    for getter in queue._getters:
        if not getter.done():
            return True
    return False


def eio_sockets(sio: Any) -> Mapping[str, Any]:
    """engine.io's live sockets of ``sio`` by engine.io sid."""
    sockets: Mapping[str, Any] = sio.eio.sockets
    return sockets


def disconnect_without_waiting(eio: Any) -> None:
    """Make ``eio.disconnect(sid)`` close the session without waiting for the client to
    fetch its CLOSE packet.

    python-engineio's waits (``close(wait=True)``). A long-polling client that never polls
    again never fetches it: for example one whose POST was over ``maxPayload``, which
    engine.io disconnects from inside that POST. The POST then never got its answer, and
    its connection and body stayed held.
    """
    original = eio.disconnect

    async def disconnect(sid: str | None = None) -> None:
        if sid is None:
            await original()
            return
        eio_socket = eio.sockets.get(sid)
        if eio_socket is not None:
            await eio_socket.close(wait=False, reason=eio.reason.SERVER_DISCONNECT)
            eio.sockets.pop(sid, None)

    eio.disconnect = disconnect


MAX_ATTACHMENTS = 64  # binary frames one Socket.IO packet may announce


def attachment_count(data: str) -> int:
    """How many binary frames a BINARY_EVENT/ACK header (``51-[...]``) announces; 0 if none."""
    if data[:1] not in ("5", "6"):
        return 0
    digits = data[1 : data.find("-")] if "-" in data else ""
    return int(digits) if digits.isdigit() else 0


def guard_messages(
    sio: Any, refused: Callable[[str, str], Awaitable[None]], partial: PartialPackets
) -> None:
    """Refuse what a client sends that python-socketio cannot use, before it costs more:

    - a binary packet announcing more than MAX_ATTACHMENTS frames (python-socketio buffers
      every frame that follows until the count is reached, with no bound: a header
      announcing 99,999,999 made a worker keep all 45 MB sent after it), and attachments
      past ``partial``'s bounds in bytes (its timeout closes the client through its owner);
    - an event or ack of a shape python-socketio would raise on
      (:func:`workers.packet_shape.shape_problem`);
    - a packet it cannot decode (it raises, and engine.io logged a 34-line traceback per
      packet: 2,000 bad packets wrote 68,000 lines).

    ``refused`` gets the engine.io sid and why, and must close that client (Node's
    socket.io closes the connection on a parse error too).
    """
    original = sio._handle_eio_message
    open_sockets = sio.eio.sockets

    async def handle(eio_sid: str, data: Any) -> None:
        if eio_sid not in open_sockets:  # refused already: what it sent after is not counted
            return
        if isinstance(data, str):
            count = attachment_count(data)
            if count > MAX_ATTACHMENTS:
                await refused(eio_sid, f"a packet announcing {count} binary frames")
                return
            problem = shape_problem(data)
            if problem is not None:
                await refused(eio_sid, problem)
                return
            if count:
                partial.header(eio_sid, count)
        else:
            problem = partial.attachment(eio_sid, len(data))
            if problem is not None:
                await refused(eio_sid, problem)
                return
        try:
            await original(eio_sid, data)
        except ValueError as exc:
            await refused(eio_sid, f"an undecodable packet ({exc})")

    sio.eio.on("message", handle)


def refuse_connections_over(eio: Any, limit: int, refused: Callable[[], None]) -> None:
    """Refuse a new engine.io connection while ``limit`` are open (engine.io answers 401 with
    the reason): past its file descriptors and memory a worker fails everyone, not just the
    newcomer. ``refused()`` counts each refusal."""
    original = eio.handlers["connect"]

    async def connect(sid: str, environ: Any, *args: Any) -> Any:
        if len(eio.sockets) > limit:  # engine.io registered the new socket already
            refused()
            return "this worker is full"
        return await original(sid, environ, *args)

    eio.on("connect", connect)


def observe_eio_event(eio: Any, event: str, observer: Callable[..., None]) -> None:
    """Call ``observer(*args)`` before engine.io's current handler of ``event`` (connect,
    disconnect, message), keeping that handler: python-socketio registered its own."""

    async def observed(handler: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        observer(*args)
        return await handler(*args)

    wrap_eio_event(eio, event, observed)


def end_polling_sessions_on_client_close() -> None:
    """When a long-polling client sends CLOSE, answer its pending GET at once (empty) and
    forget its session.

    Node's engine.io does both. python-engineio left the GET waiting until its ping timeout,
    so a python-socketio client's ``disconnect()`` over long-polling took about 25 s (it
    waits for that GET to end); and it kept the closed session in ``AsyncServer.sockets``
    until its service task came by, 20-40 s later: under churn thousands of them, counted
    against ``--max-connections`` and holding their memory. Patched on engine.io's socket
    class, in workers only.
    """
    from engineio import packet as eio_packet
    from engineio.async_socket import AsyncSocket

    if getattr(AsyncSocket.receive, "_answers_polls", False):
        return
    original = AsyncSocket.receive

    async def receive(self: Any, pkt: Any) -> None:
        await original(self, pkt)
        if pkt.packet_type == eio_packet.CLOSE and not self.upgraded:
            self.queue.put_nowait(None)  # the pending GET returns, empty
            if self.closed and self.server.sockets.get(self.sid) is self:
                del self.server.sockets[self.sid]

    receive._answers_polls = True  # type: ignore[attr-defined]
    AsyncSocket.receive = receive  # type: ignore[method-assign]


def timer_pings() -> None:
    """Send each engine.io socket's PINGs from a timer instead of a task, and stop the timer
    when the socket closes.

    python-engineio starts a task per socket that sleeps ``ping_interval`` (25 s) and then
    sends the PING: a task, its coroutine and its sleep held per connection for its whole
    life (about 1 KiB each: ``bench/ten_thousand.py`` counts RSS per connection), and,
    after the socket closed, the closed socket held until the sleep ends (under churn, 25 s
    of closed connections: at 205 connect/disconnect cycles a second that was a worker at
    110 MiB instead of 56 MiB, bench/churn_memory.py). Here ``schedule_ping`` arms a
    ``call_later`` timer that does what engine.io's ``_send_ping`` does: a socket still
    open notes the ping time and queues the PING (engine.io's ``send`` with its ping-timeout
    check passing, as the ping time is now, on an unbounded queue). Patched on engine.io's
    socket class (``schedule_ping``, ``close``), in workers only; left alone when
    ``_send_ping`` is not the coroutine this replaces.
    """
    from engineio import packet as eio_packet
    from engineio.async_socket import AsyncSocket

    if not inspect.iscoroutinefunction(getattr(AsyncSocket, "_send_ping", None)) or getattr(
        AsyncSocket.close, "_ends_ping", False
    ):
        return
    original_close = AsyncSocket.close

    def ping_due(self: Any) -> None:
        self._ping_timer = None
        if not self.closing and not self.closed:
            self.last_ping = time.time()
            self.queue.put_nowait(eio_packet.Packet(eio_packet.PING))
            self.server.logger.info("%s: Sending packet PING data None", self.sid)

    def schedule_ping(self: Any) -> None:
        if self.last_ping:  # as engine.io: only once the previous ping cycle completed
            self.last_ping = None
            loop = asyncio.get_running_loop()
            self._ping_timer = loop.call_later(self.server.ping_interval, ping_due, self)

    async def close(self: Any, *args: Any, **kwargs: Any) -> None:
        await original_close(self, *args, **kwargs)
        timer = getattr(self, "_ping_timer", None)
        if timer is not None:
            timer.cancel()
            self._ping_timer = None

    close._ends_ping = True  # type: ignore[attr-defined]
    AsyncSocket.schedule_ping = schedule_ping  # type: ignore[method-assign]
    AsyncSocket.close = close  # type: ignore[method-assign]


def forget_eio_sockets(sio: Any) -> None:
    """Drop every engine.io session of ``sio`` (they were closed): at shutdown."""
    sio.eio.sockets = {}


def enqueue(eio_socket: Any, packets: Sequence[Any]) -> None:
    """Put engine.io ``packets`` on an open socket's queue (its writer task sends them)."""
    if not eio_socket.closed:
        put = eio_socket.queue.put_nowait
        for pkt in packets:
            put(pkt)


def stop_writer(eio_socket: Any) -> None:
    """Make ``eio_socket``'s writer task close its websocket (a close frame) and end.

    For shutdown, after engine.io closed the socket: otherwise the connection lingers
    until the client hangs up.
    """
    eio_socket.queue.put_nowait(None)


# -- python-socketio: connection state recovery ------------------------------------------

ConnectAuth = Callable[[str, str, Any], Awaitable[Any]]


def intercept_connect(sio: Any, before: ConnectAuth) -> None:
    """Run ``before(eio_sid, namespace, auth)`` on every namespace CONNECT; what it returns is
    the auth python-socketio then sees (python-socketio: ``AsyncServer._handle_connect``,
    called through the instance). Recovery reads and removes ``pid`` and ``offset`` there."""
    original = sio._handle_connect

    async def handle_connect(eio_sid: str, namespace: str | None, data: Any) -> Any:
        auth = await before(eio_sid, namespace or "/", data)
        return await original(eio_sid, namespace, auth)

    sio._handle_connect = handle_connect


def intercept_connect_reply(sio: Any, amend: Callable[[str, dict[str, Any]], None]) -> None:
    """Call ``amend(namespace, data)`` on every CONNECT reply's ``{"sid": ...}`` before it is
    sent (through :func:`translate_sent_packets`; python-socketio's ``Packet.packet_type``/
    ``data``/``namespace``); recovery adds the socket's ``pid``."""
    from socketio import packet as sio_packet

    def amended(eio_sid: str, pkt: Any) -> Any:
        if pkt.packet_type == sio_packet.CONNECT and isinstance(pkt.data, dict):
            amend(pkt.namespace or "/", pkt.data)
        return pkt

    translate_sent_packets(sio, amended)


def check_recovery(sio: Any) -> None:
    """Raise :class:`CompatError` unless the internals recovery hooks into are there (call at
    start with ``--connection-state-recovery``): without them it would silently not work."""
    missing = [
        name
        for name, present in (
            ("AsyncServer._handle_connect", inspect.iscoroutinefunction(sio._handle_connect)),
            ("AsyncServer._send_packet", inspect.iscoroutinefunction(sio._send_packet)),
            (
                "manager.pending_connect",
                isinstance(getattr(sio.manager, "pending_connect", None), dict),
            ),
            ("engine.io socket.session", isinstance(AsyncSocket(sio.eio, "probe").session, dict)),
        )
        if not present
    ]
    if missing:
        raise CompatError(
            f"--connection-state-recovery cannot work on {version('python-socketio')} and "
            f"{version('python-engineio')}: missing {', '.join(missing)}. Install the versions "
            "in setup.cfg or update wire/compat.py."
        )


def eio_session(eio_socket: Any) -> dict[str, Any]:
    """The engine.io socket's session dict; python-socketio keeps a namespace's user session
    at ``[namespace]`` (engine.io: ``AsyncSocket.session``)."""
    session: dict[str, Any] = eio_socket.session
    return session


# -- engine.io 3 clients (--allow-eio3) -------------------------------------------------

Answer = tuple[bytes, str]  # a long-poll answer's body and content type


def translate_requests(eio: Any, translate: Callable[[dict[str, Any]], None]) -> None:
    """Run ``translate(environ)`` on each request's environ before engine.io reads it
    (engine.io: ``_async['translate_request']``; the driver table is copied first)."""
    original = eio._async["translate_request"]

    async def translate_request(*args: Any, **kwargs: Any) -> Any:
        environ = original(*args, **kwargs)
        if inspect.isawaitable(environ):
            environ = await environ
        translate(environ)
        return environ

    eio._async = {**eio._async, "translate_request": translate_request}


def encode_polls(eio: Any, encode: Callable[[list[Any]], Answer | None]) -> None:
    """Let ``encode(packets)`` answer a long-poll GET in another encoding; None keeps engine.io's
    (engine.io: ``AsyncServer._ok``, called through the instance, and its answer's dict).
    engine.io compresses the answer afterwards as it would its own."""
    original = eio._ok

    def ok(packets: Any = None, headers: Any = None, jsonp_index: Any = None) -> Any:
        if packets is not None and jsonp_index is None:
            answer = encode(packets)
            if answer is not None:
                body, content_type = answer
                headers = [*(headers or []), ("Content-Type", content_type)]
                return {"status": "200 OK", "headers": headers, "response": body}
        return original(packets, headers, jsonp_index)

    eio._ok = ok


def take_posts(
    eio: Any,
    wants: Callable[[Mapping[str, Any]], bool],
    take: Callable[[Any, Mapping[str, Any], bytes], Awaitable[None]],
) -> None:
    """Let ``await take(eio_socket, environ, body)`` handle the long-poll POSTs for which
    ``wants(environ)`` (engine.io: ``AsyncSocket.handle_post_request``, patched once on the
    class, in workers only; it runs after engine.io's own checks of the request). The length
    limit stays engine.io's (``ContentTooLongError``); ``take`` may raise engine.io's
    ``EngineIOError`` as engine.io does, to close the session and answer 400."""
    from engineio import exceptions

    eio._sio_cluster_posts = (wants, take)
    if getattr(AsyncSocket.handle_post_request, "_hookable", False):
        return
    original = AsyncSocket.handle_post_request

    async def handle_post_request(self: Any, environ: Any) -> None:
        hooks = getattr(self.server, "_sio_cluster_posts", None)
        if hooks is None or not hooks[0](environ):
            await original(self, environ)
            return
        length = int(environ.get("CONTENT_LENGTH") or 0)
        if length > self.server.max_http_buffer_size:
            raise exceptions.ContentTooLongError()
        await hooks[1](self, environ, await environ["wsgi.input"].read(length))

    handle_post_request._hookable = True  # type: ignore[attr-defined]
    AsyncSocket.handle_post_request = handle_post_request  # type: ignore[method-assign]


def pong_received(eio_socket: Any) -> None:
    """Do what engine.io does when a client answers its PING (engine.io:
    ``AsyncSocket.schedule_ping``): the next PING is due a ping interval from now."""
    eio_socket.schedule_ping()


def client_ping_deadline(eio: Any) -> float:
    """Seconds an Engine.IO 3 client may stay silent between its PINGs: the interval told
    at the handshake (engine.io adds its grace period) plus the timeout, as Node allows."""
    return float(eio.ping_interval + eio.ping_interval_grace_period + eio.ping_timeout)


EventWrapper = Callable[..., Awaitable[Any]]


def wrap_eio_event(eio: Any, event: str, wrapper: EventWrapper) -> None:
    """Make ``wrapper(handler, *args)`` engine.io's handler of ``event``, where ``handler`` is
    the current one (python-socketio's, or a wrapper of it)."""
    original = eio.handlers[event]

    async def handler(*args: Any) -> Any:
        return await wrapper(original, *args)

    eio.on(event, handler)


def translate_sent_packets(sio: Any, translate: Callable[[str, Any], Any]) -> None:
    """Send ``translate(eio_sid, packet)`` instead of each Socket.IO packet python-socketio
    sends one client itself (CONNECT, CONNECT_ERROR, DISCONNECT, acks: python-socketio's
    ``AsyncServer._send_packet``, called through the instance)."""
    original = sio._send_packet

    async def send_packet(eio_sid: str, pkt: Any) -> Any:
        return await original(eio_sid, translate(eio_sid, pkt))

    sio._send_packet = send_packet


def pre_connect_as(manager: Any, sid: str, eio_sid: str, namespace: str) -> bool:
    """python-socketio's ``pre_connect`` with a given ``sid`` instead of a random one (the
    same steps: the namespace's member, its own room, ``pending_connect``); False if
    ``eio_sid`` is in ``namespace`` already."""
    from bidict import ValueDuplicationError

    try:
        manager.basic_enter_room(sid, namespace, None, eio_sid=eio_sid)
    except ValueDuplicationError:
        return False
    manager.basic_enter_room(sid, namespace, sid, eio_sid=eio_sid)
    manager.pending_connect.setdefault(namespace, []).append(sid)
    return True


def check_eio3(sio: Any, paths: FastPaths) -> None:
    """Raise :class:`CompatError` unless the internals ``--allow-eio3`` hooks into are there
    (call at start with the option on): without them old clients would be misread."""
    eio = sio.eio
    missing = [
        name
        for name, present in (
            ("engine.io's websocket class (coalesced writes)", paths.coalesced_writes),
            ("AsyncServer._ok", callable(getattr(eio, "_ok", None))),
            ("AsyncServer._async['translate_request']", "translate_request" in eio._async),
            (
                "AsyncSocket.handle_post_request",
                inspect.iscoroutinefunction(AsyncSocket.handle_post_request),
            ),
            ("AsyncSocket.schedule_ping", callable(getattr(AsyncSocket, "schedule_ping", None))),
            ("AsyncServer._send_packet", inspect.iscoroutinefunction(sio._send_packet)),
            (
                "manager.pending_connect",
                isinstance(getattr(sio.manager, "pending_connect", None), dict),
            ),
            (
                "the ping settings",
                all(
                    isinstance(getattr(eio, name, None), int | float)
                    for name in ("ping_interval", "ping_interval_grace_period", "ping_timeout")
                ),
            ),
        )
        if not present
    ]
    if missing:
        raise CompatError(
            f"--allow-eio3 cannot work on {version('python-socketio')} and "
            f"{version('python-engineio')}: missing {', '.join(missing)}. Install the versions "
            "in setup.cfg or update wire/compat.py."
        )


# -- python-socketio: rooms -----------------------------------------------------


def room_members(manager: Any, namespace: str, room: Hashable) -> Mapping[str, str]:
    """``{sid: eio_sid}`` of this process's sockets in ``room`` (None: all of ``namespace``)."""
    members: Mapping[str, str] = manager.rooms.get(namespace, _NO_MEMBERS).get(room, _NO_MEMBERS)
    return members


def participants(
    manager: Any, namespace: str, rooms: Sequence[Hashable] | None
) -> Iterable[tuple[str, str]]:
    """``(sid, eio_sid)`` of each socket in any of ``rooms`` (None: all), each once."""
    if rooms is None:
        found: Iterator[tuple[str, str]] = manager.get_participants(namespace, None)
        return found
    if not rooms:
        return ()
    found = manager.get_participants(namespace, list(rooms))
    return found


# -- redis-py: URLs for the bare subscriber --------------------------------------------------


@dataclass(frozen=True)
class RedisTarget:
    """Where and how the master's subscriber connects (see :func:`parse_redis_url`)."""

    host: str
    port: int
    path: str | None  # a unix socket, instead of host and port
    username: str | None
    password: str | None
    tls: ssl.SSLContext | None


_CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}


def parse_redis_url(url: str) -> RedisTarget:
    """Read ``url`` as redis-py does (``redis://``, ``rediss://``, ``unix://``).

    ``rediss://`` honours the query options redis-py's own TLS connections take:
    ``ssl_cert_reqs`` (none/optional/required, default required), ``ssl_check_hostname``
    (default true; off when certificates are not required), ``ssl_ca_certs``,
    ``ssl_certfile`` and ``ssl_keyfile``. Raises ValueError for a bad option and
    OSError for an unreadable certificate file.
    """
    pool = aioredis.ConnectionPool.from_url(url)
    options = pool.connection_kwargs
    tls = None
    if issubclass(pool.connection_class, aioredis.SSLConnection):
        tls = _tls_context(options)
    return RedisTarget(
        host=str(options.get("host") or "localhost"),
        port=int(options.get("port") or 6379),
        path=options.get("path"),
        username=options.get("username"),
        password=options.get("password"),
        tls=tls,
    )


def _tls_context(options: Mapping[str, Any]) -> ssl.SSLContext:
    reqs = options.get("ssl_cert_reqs", "required")
    if isinstance(reqs, str):
        if reqs.lower() not in _CERT_REQS:
            raise ValueError(f"ssl_cert_reqs must be one of {sorted(_CERT_REQS)}, not {reqs!r}")
        reqs = _CERT_REQS[reqs.lower()]
    context = ssl.create_default_context()
    context.check_hostname = bool(options.get("ssl_check_hostname", True)) and (
        reqs != ssl.CERT_NONE
    )
    context.verify_mode = reqs
    certfile, keyfile = options.get("ssl_certfile"), options.get("ssl_keyfile")
    if keyfile and not certfile:
        raise ValueError("ssl_keyfile needs ssl_certfile")
    if certfile:
        context.load_cert_chain(certfile=certfile, keyfile=keyfile)
    if options.get("ssl_ca_certs"):
        context.load_verify_locations(cafile=options["ssl_ca_certs"])
    return context


def blocking_sentinel_pool_class() -> type[SentinelConnectionPool]:
    """redis-py's Sentinel pool that WAITS for a free connection past its maximum.

    Why: the master's connection count per host must stay fixed, so callers beyond
    the pool's size wait (as with ``BlockingConnectionPool``) instead of failing with
    "Too many connections". redis-py ships no such class; this one relies on both
    pools' ``__init__`` cooperating through ``super()`` (true from redis 5.0 on),
    and on ``SentinelConnectionPool`` taking its primary address on each connect.
    """
    return _BlockingSentinelPool


class _BlockingSentinelPool(SentinelConnectionPool, aioredis.BlockingConnectionPool):
    pass


# -- the check ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Probes:
    """The objects :func:`check` inspects; :func:`probes` builds them from a real server.

    Apart from ``manager`` and ``eio`` they are built for the check and never served.
    A test replaces one to see how the check reacts to a missing internal.
    """

    manager: Any  # the python-socketio server's client manager
    eio: Any  # its engine.io server
    room_table: Any  # a fresh python-socketio AsyncManager, for a room-table round trip
    eio_socket: Any  # an engine.io socket
    queue: Any  # that socket's queue
    eio_websocket: Any  # engine.io's aiohttp websocket wrapper
    aiohttp_ws: Any  # an aiohttp WebSocketResponse, not prepared
    ws_writer: Any  # an aiohttp WebSocketWriter around a stand-in transport


def probes(sio: Any) -> Probes:
    """Build the objects :func:`check` inspects, from ``sio`` and the installed libraries."""
    eio_socket = AsyncSocket(sio.eio, "compat-probe")
    writer_class = getattr(http_websocket, "WebSocketWriter", None)
    return Probes(
        manager=sio.manager,
        eio=sio.eio,
        room_table=socketio.AsyncManager(),
        eio_socket=eio_socket,
        queue=eio_socket.queue,
        eio_websocket=EngineIoWebSocket(None, sio.eio),
        aiohttp_ws=web.WebSocketResponse(),
        ws_writer=None if writer_class is None else writer_class(None, _STAND_IN),
    )


def check(sio: Any) -> FastPaths:
    """Check every internal on the installed versions, for python-socketio server ``sio``.

    Call once when a worker starts, before serving. Raises :class:`CompatError` when
    routing or delivery cannot work; logs one warning per fast path that degrades to the
    public path, and one info line naming the fast paths that run.
    """
    return evaluate(probes(sio))


def evaluate(p: Probes) -> FastPaths:
    """:func:`check` on given probe objects."""
    missing = [m for m in (_room_table_problem(p), _delivery_problem(p)) if m]
    if missing:
        raise CompatError(
            "sio-cluster cannot route or deliver on the installed versions: "
            + "; ".join(missing)
            + ". Install the versions in setup.cfg or update wire/compat.py."
        )
    websocket = _websocket_problem(p)
    direct = _direct_problem(p)
    if websocket:
        log.warning(
            "%s: websocket frames go through engine.io's own writer and aiohttp's send_str:"
            " no coalesced writes, no direct writes, no slow-client abort (a client that stops"
            " reading is not cut off). Update wire/compat.py for this version.",
            websocket,
        )
    elif direct:
        log.warning(
            "%s: deliveries always go through engine.io's queue and writer task (no direct"
            " writes to idle websockets; coalesced writes and the slow-client abort stay on)."
            " Update wire/compat.py for this version.",
            direct,
        )
    session = _session_problem(p)
    if session and not websocket:
        log.warning(
            "%s: websockets are served by engine.io's own handler (a task more per connection"
            " and one per received message). Update wire/compat.py for this version.",
            session,
        )
    paths = FastPaths(
        coalesced_writes=not websocket,
        direct_writes=not websocket and not direct,
        session_loop=not websocket and not session,
    )
    log.info(
        "fast paths: coalesced writes and slow-client abort %s, direct writes %s,"
        " session loop %s (%s)",
        "on" if paths.coalesced_writes else "OFF",
        "on" if paths.direct_writes else "OFF",
        "on" if paths.session_loop else "OFF",
        ", ".join(version(d) for d in ("aiohttp", "python-engineio", "python-socketio")),
    )
    return paths


def _room_table_problem(p: Probes) -> str | None:
    where = f"{version('python-socketio')}: the room table"
    if not isinstance(getattr(p.manager, "rooms", None), dict):
        return f"{where} (manager.rooms) is missing"
    try:
        p.room_table.basic_enter_room("sid", "/", None, eio_sid="eio-sid")
        p.room_table.basic_enter_room("sid", "/", "room")
        members = dict(room_members(p.room_table, "/", "room"))
        everyone = list(participants(p.room_table, "/", None))
        found = list(participants(p.room_table, "/", ["room", "other"]))
    except Exception as exc:
        return f"{where} is not laid out as rooms[namespace][room][sid] = eio_sid ({exc!r})"
    expected = [("sid", "eio-sid")]
    if members != dict(expected) or everyone != expected or found != expected:
        return (
            f"{where} is not laid out as rooms[namespace][room][sid] = eio_sid"
            f" (read {members}, {everyone}, {found})"
        )
    return None


def _delivery_problem(p: Probes) -> str | None:
    where = version("python-engineio")
    if not isinstance(getattr(p.eio, "sockets", None), dict):
        return f"{where}: AsyncServer.sockets (engine.io sid -> socket) is missing"
    if not (
        callable(getattr(p.queue, "put_nowait", None)) and callable(getattr(p.queue, "qsize", None))
    ):
        return f"{where}: sockets have no queue (socket.queue) to put packets on"
    if not isinstance(getattr(p.eio_socket, "closed", None), bool):
        return f"{where}: sockets have no closed flag"
    return None


def _websocket_problem(p: Probes) -> str | None:
    drivers = getattr(p.eio, "_async", None)
    if not isinstance(drivers, Mapping) or drivers.get("websocket") is not EngineIoWebSocket:
        return (
            f"{version('python-engineio')}: AsyncServer._async['websocket'] is not"
            " engineio.async_drivers.aiohttp.WebSocket"
        )
    if not hasattr(p.eio_websocket, "_sock"):
        return (
            f"{version('python-engineio')}: its aiohttp WebSocket keeps no _sock"
            " (the aiohttp WebSocketResponse)"
        )
    if not hasattr(p.aiohttp_ws, "_writer"):
        return f"{version('aiohttp')}: WebSocketResponse has no _writer"
    if getattr(p.ws_writer, "transport", None) is not _STAND_IN:
        return f"{version('aiohttp')}: WebSocketWriter does not keep its transport"
    return None


def _direct_problem(p: Probes) -> str | None:
    if not isinstance(getattr(p.queue, "_getters", None), deque):
        return (
            f"Python {platform.python_version()} asyncio: Queue has no _getters deque"
            " (its waiting get() calls)"
        )
    if not isinstance(getattr(p.eio_socket, "upgraded", None), bool):
        return f"{version('python-engineio')}: sockets have no upgraded flag"
    if served_socket(getattr(p.eio_socket, "_websocket_handler", None)) != (
        "compat-probe",
        p.eio_socket,
    ):
        return (
            f"{version('python-engineio')}: sockets have no _websocket_handler method"
            " (how a websocket finds its socket)"
        )
    return None


def _session_problem(p: Probes) -> str | None:
    """What :mod:`workers.transport.ws_session` reads and calls on an engine.io socket, checked."""
    where = version("python-engineio")
    sock = p.eio_socket
    for flag in ("connected", "upgrading", "upgraded", "closed"):
        if not isinstance(getattr(sock, flag, None), bool):
            return f"{where}: sockets have no {flag} flag"
    for method in ("receive", "close", "_websocket_handler"):
        if not inspect.iscoroutinefunction(getattr(sock, method, None)):
            return f"{where}: sockets have no coroutine {method}()"
    if not all(callable(getattr(sock.queue, m, None)) for m in ("get", "put", "task_done")):
        return f"{where}: a socket's queue is not an asyncio queue"
    if not all(
        isinstance(getattr(p.eio, name, None), int | float)
        for name in ("ping_interval", "ping_timeout", "max_http_buffer_size")
    ):
        return f"{where}: the server has no ping_interval, ping_timeout, max_http_buffer_size"
    if not isinstance(getattr(getattr(p.eio, "reason", None), "TRANSPORT_CLOSE", None), str):
        return f"{where}: the server has no reason.TRANSPORT_CLOSE"
    if not all(
        isinstance(getattr(eio_exceptions, e, None), type)
        for e in ("UnknownPacketError", "SocketIsClosedError")
    ):
        return f"{where}: engineio.exceptions lacks UnknownPacketError or SocketIsClosedError"
    return None
