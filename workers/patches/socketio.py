"""python-socketio: every internal of it the worker reads, writes or replaces.

Why one module: python-socketio promises none of these. Each has one accessor here, its use
is checked by :mod:`workers.patches.checks` at start, and python-socketio is bounded in
setup.cfg.

Internals: the room table ``manager.rooms[namespace][room][sid] = eio_sid`` and
``manager.pending_connect``; ``AsyncServer._handle_eio_message`` (guarded),
``AsyncServer._handle_connect`` and ``AsyncServer._send_packet`` (wrapped through the
instance).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from bidict import ValueDuplicationError
from socketio import packet as sio_packet

from sio_cluster.workers.packet_shape import shape_problem
from sio_cluster.workers.partial_packets import PartialPackets

_NO_MEMBERS: Mapping[str, str] = {}


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


def pre_connect_as(manager: Any, sid: str, eio_sid: str, namespace: str) -> bool:
    """python-socketio's ``pre_connect`` with a given ``sid`` instead of a random one (the
    same steps: the namespace's member, its own room, ``pending_connect``); False if
    ``eio_sid`` is in ``namespace`` already."""
    try:
        manager.basic_enter_room(sid, namespace, None, eio_sid=eio_sid)
    except ValueDuplicationError:
        return False
    manager.basic_enter_room(sid, namespace, sid, eio_sid=eio_sid)
    manager.pending_connect.setdefault(namespace, []).append(sid)
    return True


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


def translate_sent_packets(sio: Any, translate: Callable[[str, Any], Any]) -> None:
    """Send ``translate(eio_sid, packet)`` instead of each Socket.IO packet python-socketio
    sends one client itself (CONNECT, CONNECT_ERROR, DISCONNECT, acks: python-socketio's
    ``AsyncServer._send_packet``, called through the instance)."""
    original = sio._send_packet

    async def send_packet(eio_sid: str, pkt: Any) -> Any:
        return await original(eio_sid, translate(eio_sid, pkt))

    sio._send_packet = send_packet


def intercept_connect_reply(sio: Any, amend: Callable[[str, dict[str, Any]], None]) -> None:
    """Call ``amend(namespace, data)`` on every CONNECT reply's ``{"sid": ...}`` before it is
    sent (through :func:`translate_sent_packets`; python-socketio's ``Packet.packet_type``/
    ``data``/``namespace``); recovery adds the socket's ``pid``."""

    def amended(eio_sid: str, pkt: Any) -> Any:
        if pkt.packet_type == sio_packet.CONNECT and isinstance(pkt.data, dict):
            amend(pkt.namespace or "/", pkt.data)
        return pkt

    translate_sent_packets(sio, amended)
