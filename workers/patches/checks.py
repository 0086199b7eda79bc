"""The start-up checks: each internal the patches rely on, exercised on the installed versions.

Why: an upgrade that moved an internal would otherwise disable a fast path silently, or
misroute. :func:`check` inspects real objects once, at start: where a public path exists the
worker degrades to it with one warning naming the dependency and its version; where none
exists it raises :class:`CompatError`, so the worker fails at start instead of misbehaving.
:func:`exercise` then runs each installed patch on a throwaway engine.io or python-socketio
server and sees the patched path taken (a packet fed to a real engine.io socket, a message
to a real python-socketio handler), not only that the attributes are there.

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
``upgraded``, ``closed``, ``receive``, ``close``;       (transport/         a task more per
queue ``get``, ``put``, ``task_done``; server           ws_session.py)      connection, one per
ping settings, ``max_http_buffer_size``, ``reason``                         received message
engine.io ``AsyncSocket._send_ping`` (a coroutine),     timer pings         engine.io's ping task
``schedule_ping``, ``close``, ``last_ping``
======================================================  ==================  ======================

The patches :func:`workers.patches.install` applies (disconnect without waiting, CLOSE over
long-polling, the message guard, the connection limit, timer pings) have no public fallback:
:func:`exercise` raises :class:`CompatError` when one does not take hold.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import platform
from collections import deque
from dataclasses import dataclass
from typing import Any

import engineio
import socketio
from aiohttp import http_websocket, web
from engineio import exceptions as eio_exceptions
from engineio import packet as eio_packet
from engineio.async_socket import AsyncSocket

from sio_cluster.workers.partial_packets import PartialPackets
from sio_cluster.workers.patches.aiohttp import ws_transport
from sio_cluster.workers.patches.engineio import (
    EngineIoWebSocket,
    aiohttp_response,
    cors_headers,
    disconnect_without_waiting,
    encode_polls,
    ping_timer,
    refuse_connections_over,
    register_socket,
    served_socket,
    take_posts,
    timer_pings_installed,
    websocket_class,
    writer_is_parked,
)
from sio_cluster.workers.patches.socketio import (
    MAX_ATTACHMENTS,
    guard_messages,
    intercept_connect,
    intercept_connect_reply,
    participants,
    room_members,
)
from sio_cluster.workers.patches.versions import CompatError, version

log = logging.getLogger(__name__)


_STAND_IN = object()  # the transport handed to a probe aiohttp writer


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
    eio_socket = AsyncSocket(sio.eio, "patch-probe")
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
            + ". Install the versions in setup.cfg or update workers/patches/."
        )
    websocket = _websocket_problem(p)
    direct = _direct_problem(p)
    if websocket:
        log.warning(
            "%s: websocket frames go through engine.io's own writer and aiohttp's send_str:"
            " no coalesced writes, no direct writes, no slow-client abort (a client that stops"
            " reading is not cut off). Update workers/patches/ for this version.",
            websocket,
        )
    elif direct:
        log.warning(
            "%s: deliveries always go through engine.io's queue and writer task (no direct"
            " writes to idle websockets; coalesced writes and the slow-client abort stay on)."
            " Update workers/patches/ for this version.",
            direct,
        )
    session = _session_problem(p)
    if session and not websocket:
        log.warning(
            "%s: websockets are served by engine.io's own handler (a task more per connection"
            " and one per received message). Update workers/patches/ for this version.",
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
    try:
        drivers_websocket = websocket_class(p.eio)
    except (AttributeError, TypeError):
        drivers_websocket = None
    if drivers_websocket is not EngineIoWebSocket:
        return (
            f"{version('python-engineio')}: AsyncServer._async['websocket'] is not"
            " engineio.async_drivers.aiohttp.WebSocket"
        )
    try:
        aiohttp_response(p.eio_websocket)  # None until the websocket is open
    except AttributeError:
        return (
            f"{version('python-engineio')}: its aiohttp WebSocket keeps no _sock"
            " (the aiohttp WebSocketResponse)"
        )
    try:
        unprepared = ws_transport(p.aiohttp_ws)
    except AttributeError:
        return f"{version('aiohttp')}: WebSocketResponse has no _writer"
    if unprepared is not None or getattr(p.ws_writer, "transport", None) is not _STAND_IN:
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
        "patch-probe",
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
            "in setup.cfg or update workers/patches/."
        )


def check_v09(sio: Any) -> None:
    """Raise :class:`CompatError` unless what ``--allow-v09`` relies on is there (call at start
    with the option on): engine.io's handlers, ping settings, reasons and CORS headers."""
    eio = sio.eio
    handlers = getattr(eio, "handlers", None)
    missing = [
        name
        for name, present in (
            (
                "AsyncServer.handlers (connect, message, disconnect)",
                isinstance(handlers, dict)
                and all(callable(handlers.get(e)) for e in ("connect", "message", "disconnect")),
            ),
            ("AsyncServer._cors_headers", callable(getattr(eio, "_cors_headers", None))),
            ("AsyncServer.generate_id", callable(getattr(eio, "generate_id", None))),
            ("AsyncServer.async_handlers", isinstance(getattr(eio, "async_handlers", None), bool)),
            (
                "the ping settings",
                all(
                    isinstance(getattr(eio, name, None), int | float)
                    for name in ("ping_interval", "ping_timeout", "max_http_buffer_size")
                ),
            ),
            (
                "the disconnect reasons",
                all(
                    hasattr(eio.reason, reason)
                    for reason in (
                        "SERVER_DISCONNECT",
                        "CLIENT_DISCONNECT",
                        "PING_TIMEOUT",
                        "TRANSPORT_CLOSE",
                        "TRANSPORT_ERROR",
                    )
                ),
            ),
        )
        if not present
    ]
    if missing:
        raise CompatError(
            f"--allow-v09 cannot work on {version('python-socketio')} and "
            f"{version('python-engineio')}: missing {', '.join(missing)}. Install the versions "
            "in setup.cfg or update workers/patches/."
        )


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
            "in setup.cfg or update workers/patches/."
        )


# -- each installed patch, exercised once at start -------------------------------------------


async def exercise(
    paths: FastPaths, recovery: bool = False, eio3: bool = False, v09: bool = False
) -> None:
    """Run each patch :func:`workers.patches.install` installed on throwaway engine.io and
    python-socketio servers, and raise :class:`CompatError` naming every one whose patched
    path was not taken. Call once, after installing, before serving: these are the
    behaviours the worker relies on, which attributes alone do not show. ``recovery``,
    ``eio3``: the hooks connection state recovery and the Engine.IO 3 translation install
    are exercised too (with those options on); ``v09``: a socket of the worker's own in
    engine.io's table is reached by engine.io's ``send`` and ``disconnect``."""
    found = [
        await _close_on_poll_problem(),
        await _timer_ping_problem(),
        await _disconnect_problem(),
        await _guard_problem(),
        await _limit_problem(),
        await _parked_problem() if paths.direct_writes else None,
        await _connect_hooks_problem() if recovery or eio3 else None,
        await _poll_hooks_problem() if eio3 else None,
        await _own_socket_problem() if v09 else None,
    ]
    problems = [problem for problem in found if problem]
    if problems:
        raise CompatError(
            "sio-cluster's patches do not take hold on the installed versions: "
            + "; ".join(problems)
            + ". Install the versions in setup.cfg or update workers/patches/."
        )


def _probe_socket() -> AsyncSocket:
    """A long-polling engine.io socket of a bare engine.io server, registered there."""
    eio = engineio.AsyncServer(async_mode="aiohttp")
    socket = AsyncSocket(eio, "patch-probe")
    eio.sockets[socket.sid] = socket
    return socket


async def _close_on_poll_problem() -> str | None:
    """A CLOSE packet from a long-polling client answers its pending GET and forgets it."""
    socket = _probe_socket()
    await socket.receive(eio_packet.Packet(eio_packet.CLOSE))
    answered = socket.queue.qsize() == 1 and socket.queue.get_nowait() is None
    if not socket.closed or not answered or socket.sid in socket.server.sockets:
        return (
            f"{version('python-engineio')}: a long-polling client's CLOSE neither answered"
            " its pending GET nor ended its session (AsyncSocket.receive)"
        )
    return None


async def _timer_ping_problem() -> str | None:
    """A PING is scheduled on a timer, not a task, and closing the socket stops the timer."""
    if not timer_pings_installed():
        return None  # engine.io's own ping task serves (see timer_pings)
    socket = _probe_socket()
    tasks = asyncio.all_tasks()
    socket.schedule_ping()  # last_ping is set at creation: a ping cycle is due
    armed = ping_timer(socket)  # a loop's timer handle (asyncio's or uvloop's)
    new_tasks = asyncio.all_tasks() - tasks
    await socket.close(wait=False, abort=True)
    if armed is None or new_tasks or ping_timer(socket) is not None:
        for task in new_tasks:
            task.cancel()
        if armed is not None:
            armed.cancel()
        return (
            f"{version('python-engineio')}: PINGs are not sent from a timer stopped at close"
            " (AsyncSocket.schedule_ping, close)"
        )
    return None


async def _disconnect_problem() -> str | None:
    """``eio.disconnect(sid)`` closes at once, without waiting for the client to fetch."""
    socket = _probe_socket()
    disconnect_without_waiting(socket.server)
    try:
        await asyncio.wait_for(socket.server.disconnect(socket.sid), 1.0)
    except TimeoutError:
        return (
            f"{version('python-engineio')}: AsyncServer.disconnect waits for the client"
            " to fetch its CLOSE"
        )
    if not socket.closed or socket.sid in socket.server.sockets:
        return f"{version('python-engineio')}: AsyncServer.disconnect left the session open"
    return None


async def _guard_problem() -> str | None:
    """A message announcing too many binary frames, an event of a shape python-socketio
    raises on, and an undecodable one are refused."""
    sio = socketio.AsyncServer(async_mode="aiohttp")
    refusals: list[str] = []

    async def refused(eio_sid: str, why: str) -> None:
        refusals.append(why)

    guard_messages(sio, refused, PartialPackets(1, 1, 1.0, lambda eio_sid: None))
    handler = sio.eio.handlers["message"]
    sio.eio.sockets["patch-probe"] = None  # an open connection, as far as the guard asks
    for message in (f'5{MAX_ATTACHMENTS + 1}-["x"]', "2", "2["):
        try:
            await handler("patch-probe", message)
        except (ValueError, TypeError):  # python-socketio's own handler, unguarded
            pass
    if len(refusals) != 3:
        return (
            f"{version('python-socketio')}: its message handler (AsyncServer."
            f"_handle_eio_message) was not guarded (refused {refusals})"
        )
    return None


async def _limit_problem() -> str | None:
    """A connection past the limit is refused before python-socketio sees it."""
    sio = socketio.AsyncServer(async_mode="aiohttp")
    counted: list[None] = []
    refuse_connections_over(sio.eio, 0, lambda: counted.append(None))
    sio.eio.sockets["patch-probe"] = _probe_socket()
    answer = await sio.eio.handlers["connect"]("patch-probe", {})
    if answer != "this worker is full" or len(counted) != 1:
        return f"{version('python-engineio')}: its connect handler was not wrapped"
    return None


async def _parked_problem() -> str | None:
    """A socket whose writer waits on its empty queue is seen idle, and busy once a packet
    is queued: the condition for a direct write (asyncio ``Queue._getters``)."""
    socket = _probe_socket()
    socket.upgraded = True
    getter = asyncio.ensure_future(socket.queue.get())
    await asyncio.sleep(0)  # the getter runs until it waits on the empty queue
    parked = writer_is_parked(socket)
    socket.queue.put_nowait(None)
    busy = writer_is_parked(socket)
    await getter
    if not parked or busy:
        return (
            f"Python {platform.python_version()} asyncio: a writer waiting on an engine.io"
            f" socket's queue is not seen (parked {parked}, busy {busy})"
        )
    return None


async def _connect_hooks_problem() -> str | None:
    """A namespace CONNECT goes through the connect hook with the client's auth, and the
    CONNECT reply through the sent-packet hook (recovery reads one and amends the other;
    the Engine.IO 3 translation downgrades the reply)."""
    sio = socketio.AsyncServer(async_mode="aiohttp")
    sent: list[Any] = []

    async def send(eio_sid: str, data: Any) -> None:  # no transport: the reply is kept
        sent.append(data)

    sio.eio.send = send
    seen: list[tuple[str, str, Any]] = []

    async def before(eio_sid: str, namespace: str, auth: Any) -> Any:
        seen.append((eio_sid, namespace, auth))
        return auth

    intercept_connect(sio, before)
    intercept_connect_reply(sio, lambda namespace, data: data.update(pid="probe-pid"))
    await sio.eio.handlers["connect"]("patch-probe", {})
    await sio.eio.handlers["message"]("patch-probe", '0{"probe":1}')
    if seen != [("patch-probe", "/", {"probe": 1})] or "probe-pid" not in str(sent):
        return (
            f"{version('python-socketio')}: a CONNECT did not pass through"
            " AsyncServer._handle_connect and _send_packet as hooked"
            f" (saw {seen}, sent {sent})"
        )
    return None


async def _poll_hooks_problem() -> str | None:
    """A long-poll answer goes through the answer hook, a POST body through the POST hook
    (engine.io ``AsyncServer._ok``, ``AsyncSocket.handle_post_request``)."""
    socket = _probe_socket()
    eio = socket.server
    encode_polls(eio, lambda packets: (b"probe", "text/plain"))
    taken: list[bytes] = []

    async def take(eio_socket: Any, environ: Any, body: bytes) -> None:
        taken.append(body)

    take_posts(eio, lambda environ: True, take)
    answer = eio._ok([eio_packet.Packet(eio_packet.NOOP)])
    await socket.handle_post_request({"CONTENT_LENGTH": "5", "wsgi.input": _Body(b"probe")})
    if answer.get("response") != b"probe" or taken != [b"probe"]:
        return (
            f"{version('python-engineio')}: long-poll answers or POST bodies did not pass"
            " through AsyncServer._ok and AsyncSocket.handle_post_request as hooked"
        )
    return None


class _OwnSocket:
    """A socket of the worker's own, as :func:`register_socket` registers one."""

    def __init__(self) -> None:
        self.sid = "patch-probe"
        self.closed = False
        self.sent: list[Any] = []

    async def send(self, pkt: Any) -> None:
        self.sent.append(pkt.data)

    async def close(self, wait: bool = True, abort: bool = False, reason: Any = None) -> None:
        self.closed = True


async def _own_socket_problem() -> str | None:
    """engine.io's ``send`` and (patched) ``disconnect`` reach a socket registered in its
    table, and its CORS headers answer an allowed origin (0.9 clients)."""
    eio = engineio.AsyncServer(async_mode="aiohttp", cors_allowed_origins="*")
    disconnect_without_waiting(eio)
    socket = _OwnSocket()
    register_socket(eio, socket)
    await eio.send(socket.sid, "probe")
    await eio.disconnect(socket.sid)
    cors = cors_headers(eio, {"REQUEST_METHOD": "GET", "HTTP_ORIGIN": "http://probe"})
    if (
        socket.sent != ["probe"]
        or not socket.closed
        or socket.sid in eio.sockets
        or (("Access-Control-Allow-Origin", "http://probe") not in cors)
    ):
        return (
            f"{version('python-engineio')}: a socket registered in AsyncServer.sockets was not"
            " reached by send/disconnect, or _cors_headers did not answer as expected"
        )
    return None


class _Body:
    """A request body as engine.io reads it (``environ['wsgi.input']``)."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    async def read(self, length: int) -> bytes:
        return self._data[:length]
