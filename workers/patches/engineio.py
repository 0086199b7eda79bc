"""python-engineio: every internal of it the worker reads, writes or replaces.

Why one module: engine.io promises none of these. Each has one accessor here, its use is
checked by :mod:`workers.patches.checks` at start, and python-engineio is bounded in
setup.cfg. Class-level patches (on ``AsyncSocket``) apply to the whole process and are
installed in workers only, once (:func:`workers.patches.install`).

Internals: ``AsyncServer._async`` (the driver table: websocket class, request translation),
``AsyncServer._ok`` (a long-poll answer), the aiohttp ``WebSocket._sock`` wrapper slot,
``AsyncSocket._websocket_handler``, ``AsyncSocket._send_ping`` (replaced by a timer, kept in
``AsyncSocket._ping_timer``), ``AsyncSocket.receive``/``close``/``schedule_ping``/
``handle_post_request`` (wrapped), ``AsyncServer._cors_headers`` (0.9 clients' answers),
asyncio ``Queue._getters`` of a socket's queue, and the
server attribute ``_sio_cluster_posts`` this module sets itself.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from aiohttp import web
from engineio import exceptions as eio_exceptions
from engineio import packet as eio_packet
from engineio.async_drivers import aiohttp as eio_aiohttp
from engineio.async_socket import AsyncSocket

EngineIoWebSocket = eio_aiohttp.WebSocket
"""engine.io's aiohttp websocket wrapper, extended by ``fast_ws.CoalescingWebSocket``."""


def install_websocket_class(eio: Any, factory: Callable[[Any, Any], Any]) -> None:
    """Make ``eio`` build its websockets with ``factory(handler, server)``.

    The driver table is copied first: engine.io shares one table between every server.
    """
    eio._async = {**eio._async, "websocket": factory}


def websocket_class(eio: Any) -> Any:
    """The class (or factory) ``eio`` builds its websockets with."""
    return eio._async.get("websocket")


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


def enqueue(eio_socket: Any, packets: Sequence[Any]) -> None:
    """Put engine.io ``packets`` on an open socket's queue (its writer task sends them)."""
    if not eio_socket.closed:
        put = eio_socket.queue.put_nowait
        for pkt in packets:
            put(pkt)


def register_socket(eio: Any, socket: Any) -> None:
    """Put a socket of the worker's own (a socket.io 0.9 client's, :mod:`workers.v09.session`)
    in engine.io's table: engine.io's ``send``/``disconnect``, python-socketio and the
    worker's deliveries then reach it by its ``sid`` as they reach engine.io's sockets."""
    eio.sockets[socket.sid] = socket


def unregister_socket(eio: Any, socket: Any) -> None:
    """Take a socket :func:`register_socket` registered out of engine.io's table."""
    if eio.sockets.get(socket.sid) is socket:
        del eio.sockets[socket.sid]


def cors_headers(eio: Any, environ: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The CORS headers engine.io would answer a request with this ``environ``
    (``REQUEST_METHOD``, ``HTTP_ORIGIN``, ``HTTP_HOST``...), per its ``cors_allowed_origins``
    (engine.io: ``AsyncServer._cors_headers``)."""
    headers: list[tuple[str, str]] = eio._cors_headers(environ)
    return headers


def stop_writer(eio_socket: Any) -> None:
    """Make ``eio_socket``'s writer task close its websocket (a close frame) and end.

    For shutdown, after engine.io closed the socket: otherwise the connection lingers
    until the client hangs up.
    """
    eio_socket.queue.put_nowait(None)


def forget_eio_sockets(sio: Any) -> None:
    """Drop every engine.io session of ``sio`` (they were closed): at shutdown."""
    sio.eio.sockets = {}


def eio_session(eio_socket: Any) -> dict[str, Any]:
    """The engine.io socket's session dict; python-socketio keeps a namespace's user session
    at ``[namespace]`` (engine.io: ``AsyncSocket.session``)."""
    session: dict[str, Any] = eio_socket.session
    return session


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


EventWrapper = Callable[..., Awaitable[Any]]


def wrap_eio_event(eio: Any, event: str, wrapper: EventWrapper) -> None:
    """Make ``wrapper(handler, *args)`` engine.io's handler of ``event``, where ``handler`` is
    the current one (python-socketio's, or a wrapper of it)."""
    original = eio.handlers[event]

    async def handler(*args: Any) -> Any:
        return await wrapper(original, *args)

    eio.on(event, handler)


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


def refuse_unknown_packet_types(counted: Callable[[str], None]) -> None:
    """An Engine.IO packet of no known type ends its session (400 to a long-polling POST), as
    Node's engine.io closes on a parse error; ``counted(why)`` counts and logs it.

    python-engineio decodes any digit as a packet type, and its socket's ``receive`` logs the
    type's name before looking at it: ``9hello`` raised IndexError there, which engine.io
    logged with a traceback for every POST and answered 200, the session going on. Patched on
    engine.io's socket class, in workers only (the websocket session loop checks the type
    itself before it calls ``receive``, :mod:`workers.transport.ws_session`).
    """
    if getattr(AsyncSocket.receive, "_known_types_only", False):
        return
    original = AsyncSocket.receive
    known = len(eio_packet.packet_names)

    async def receive(self: Any, pkt: Any) -> None:
        if not 0 <= pkt.packet_type < known:
            counted(f"an unknown Engine.IO packet type {pkt.packet_type}")
            raise eio_exceptions.UnknownPacketError()
        await original(self, pkt)

    receive._known_types_only = True  # type: ignore[attr-defined]
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
    if not inspect.iscoroutinefunction(getattr(AsyncSocket, "_send_ping", None)) or (
        timer_pings_installed()
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
            raise eio_exceptions.ContentTooLongError()
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


def timer_pings_installed() -> bool:
    """True once :func:`timer_pings` replaced engine.io's ping task in this process."""
    return bool(getattr(AsyncSocket.close, "_ends_ping", False))


def ping_timer(eio_socket: Any) -> asyncio.TimerHandle | None:
    """The timer of ``eio_socket``'s next PING (:func:`timer_pings`); None when none is armed."""
    timer: asyncio.TimerHandle | None = getattr(eio_socket, "_ping_timer", None)
    return timer
