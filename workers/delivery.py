"""Writing an already-encoded packet to this worker's recipients.

Why a module of its own: delivery is the worker's hot path. It reads python-socketio's
room table and writes to engine.io sockets only through :mod:`workers.patches` (checked
when the worker starts), so the rest of the worker stays on public APIs.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

from engineio import packet as eio_packet

from sio_cluster.workers.conn import deflate
from sio_cluster.workers.patches import engineio as eio_patches
from sio_cluster.workers.patches import socketio as sio_patches
from sio_cluster.workers.transport import fast_ws


def is_member(manager: Any, namespace: str, room: Hashable, sid: str) -> bool:
    """True if ``sid`` is in ``room`` of ``namespace`` on this worker (room None: connected)."""
    return sid in sio_patches.room_members(manager, namespace, room)


def select(
    manager: Any, namespace: str, rooms: Sequence[Hashable] | None, exclude: Sequence[Hashable]
) -> list[tuple[str, str]]:
    """This worker's ``(sid, eio_sid)`` in any of ``rooms`` (None: all) minus ``exclude``."""
    if not exclude and rooms is not None and len(rooms) == 1:
        # one room (a sid, most often) and no exclusion: no union to build, nothing to copy
        return list(sio_patches.room_members(manager, namespace, rooms[0]).items())
    excluded: set[str] = set()
    for r in exclude:
        excluded.update(sio_patches.room_members(manager, namespace, r))
    return [
        (sid, eio_sid)
        for sid, eio_sid in sio_patches.participants(manager, namespace, rooms)
        if sid not in excluded
    ]


def deliver(
    manager: Any,
    namespace: str,
    rooms: Sequence[Hashable] | None,
    exclude: Sequence[Hashable],
    parts: Sequence[str | bytes],
) -> int:
    """Write an encoded packet to this worker's recipients; return how many got it.

    Recipients: the sockets in any of ``rooms`` (``None``: all of the namespace)
    minus the sockets in any room of ``exclude``. A recipient whose websocket writer
    is idle gets the frames straight away (built once for all of them, and once more
    for Engine.IO 3 clients, whose binary frames differ); the others
    get the packets on their engine.io queue. Neither path creates a task or awaits. A
    connection that agreed to permessage-deflate gets frames compressed once for all such
    recipients (:func:`workers.conn.deflate.message_frames`).
    """
    recipients = select(manager, namespace, rooms, exclude)
    writers = fast_ws.direct_writers
    frames = eio3_frames = b""
    deflated: dict[int, bytes] = {}  # by compression window: the frames compressed once
    packets: list[Any] = []
    for _, eio_sid in recipients:
        ws = writers.get(eio_sid)
        if ws is not None and ws.idle():
            window = ws.deflate_window
            if window:
                compressed = deflated.get(window)
                if compressed is None:
                    compressed = deflated[window] = deflate.message_frames(parts, window)
                ws.write(compressed)
                continue
            if ws.eio3:
                if not eio3_frames:
                    eio3_frames = fast_ws.message_frames(parts, eio3=True)
                ws.write(eio3_frames)
                continue
            if not frames:
                frames = fast_ws.message_frames(parts)
            ws.write(frames)
            continue
        eio_socket = eio_patches.eio_sockets(manager.server).get(eio_sid)
        if eio_socket is not None:
            if not packets:
                packets = [eio_packet.Packet(eio_packet.MESSAGE, p) for p in parts]
            eio_patches.enqueue(eio_socket, packets)
    return len(recipients)
