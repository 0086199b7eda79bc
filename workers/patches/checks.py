"""The start-up checks: each internal the patches rely on, exercised on the installed versions.

Why: an upgrade that moved an internal would otherwise misroute or disable a feature
silently. :func:`check` inspects real objects once, at start, and raises
:class:`CompatError` when routing or delivery cannot work, so the worker fails at start
instead of misbehaving; the ``check_*`` functions do the same for what an option relies on.
:func:`exercise` then runs each installed patch on a throwaway engine.io or python-socketio
server and sees the patched path taken (a message to a real python-socketio handler, a
connection to a real engine.io handler), not only that the attributes are there.

======================================================  ==================  ======================
internal                                                needed by           without it
======================================================  ==================  ======================
python-socketio ``manager.rooms[ns][room][sid]``        routing             :class:`CompatError`
= ``eio_sid``, ``manager.get_participants``
engine.io ``AsyncServer.sockets``, socket ``queue``     every delivery,     :class:`CompatError`
(``put_nowait``, ``qsize``) and ``closed``              worker shutdown
engine.io ``AsyncServer.disconnect`` (replaced on the   disconnects that    :class:`CompatError`
instance: it waits for a long-polling client)           do not hang         (:func:`exercise`)
python-socketio ``AsyncServer._handle_eio_message``     the message guard   :class:`CompatError`
(replaced through ``eio.on``)                                               (:func:`exercise`)
python-socketio ``AsyncServer._handle_connect``,        connection state    :class:`CompatError`
``_send_packet``, ``manager.pending_connect``;          recovery            (checked only with
engine.io socket ``session``                                                the option on)
python-socketio ``_send_packet``,                       Engine.IO 3         :class:`CompatError`
``manager.pending_connect``                             clients             (checked only with
                                                        (``--allow-eio3``)  the option on)
engine.io ``AsyncServer._cors_headers``; aiohttp        socket.io 0.9       :class:`CompatError`;
``WebSocketResponse._writer.transport``                 clients             without the writer,
                                                        (``--allow-v09``)   aiohttp's send_str
======================================================  ==================  ======================
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from dataclasses import dataclass
from typing import Any

import engineio
import socketio
from aiohttp import http_websocket, web
from engineio.async_socket import AsyncSocket

from sio_cluster.workers.partial_packets import PartialPackets
from sio_cluster.workers.patches.aiohttp import ws_transport
from sio_cluster.workers.patches.engineio import (
    cors_headers,
    disconnect_without_waiting,
    refuse_connections_over,
    register_socket,
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


def probes(sio: Any) -> Probes:
    """Build the objects :func:`check` inspects, from ``sio`` and the installed libraries."""
    eio_socket = AsyncSocket(sio.eio, "patch-probe")
    return Probes(
        manager=sio.manager,
        eio=sio.eio,
        room_table=socketio.AsyncManager(),
        eio_socket=eio_socket,
        queue=eio_socket.queue,
    )


def check(sio: Any) -> None:
    """Check the internals routing and delivery need on the installed versions, for
    python-socketio server ``sio``.

    Call once when a worker starts, before serving. Raises :class:`CompatError` when
    routing or delivery cannot work.
    """
    evaluate(probes(sio))


def evaluate(p: Probes) -> None:
    """:func:`check` on given probe objects."""
    missing = [m for m in (_room_table_problem(p), _delivery_problem(p)) if m]
    if missing:
        raise CompatError(
            "sio-cluster cannot route or deliver on the installed versions: "
            + "; ".join(missing)
            + ". Install the versions in setup.cfg or update workers/patches/."
        )


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


def check_eio3(sio: Any) -> None:
    """Raise :class:`CompatError` unless the internals ``--allow-eio3`` hooks into are there
    (call at start with the option on): without them old clients would be misread."""
    eio = sio.eio
    missing = [
        name
        for name, present in (
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


def v09_direct_writes() -> bool:
    """True if aiohttp shows the transport under a websocket (:mod:`.aiohttp`), so a 0.9
    client's frames of one tick leave in one write and a client that stops reading is
    aborted; otherwise one warning, and they go through aiohttp's ``send_str``."""
    writer_class = getattr(http_websocket, "WebSocketWriter", None)
    stand_in = object()
    try:
        unprepared = ws_transport(web.WebSocketResponse())
        kept = writer_class is not None and writer_class(None, stand_in).transport is stand_in
    except (AttributeError, TypeError):
        unprepared, kept = None, False
    if unprepared is None and kept:
        return True
    log.warning(
        "%s: WebSocketResponse has no _writer.transport: a 0.9 websocket's frames go through"
        " aiohttp's send_str (no tick writes, no slow-client abort). Update"
        " workers/patches/ for this version.",
        version("aiohttp"),
    )
    return False


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


async def exercise(recovery: bool = False, eio3: bool = False, v09: bool = False) -> None:
    """Run each patch :func:`workers.patches.install` installed on throwaway engine.io and
    python-socketio servers, and raise :class:`CompatError` naming every one whose patched
    path was not taken. Call once, after installing, before serving: these are the
    behaviours the worker relies on, which attributes alone do not show. ``recovery``,
    ``eio3``: the hooks connection state recovery and the Engine.IO 3 translation install
    are exercised too (with those options on); ``v09``: a socket of the worker's own in
    engine.io's table is reached by engine.io's ``send`` and ``disconnect``."""
    found = [
        await _disconnect_problem(),
        await _guard_problem(),
        await _limit_problem(),
        await _connect_hooks_problem() if recovery or eio3 else None,
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
    sio.eio.sockets["patch-probe"] = AsyncSocket(sio.eio, "patch-probe")
    answer = await sio.eio.handlers["connect"]("patch-probe", {})
    if answer != "this worker is full" or len(counted) != 1:
        return f"{version('python-engineio')}: its connect handler was not wrapped"
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
