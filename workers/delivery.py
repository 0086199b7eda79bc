"""Writing an already-encoded packet to this worker's recipients.

Why a module of its own: delivery is the worker's hot path and the one place that
reads python-socketio's room table and engine.io's socket internals directly
(see :mod:`workers.compat`), so the rest of the worker stays on public APIs.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

from engineio import packet as eio_packet


def is_member(manager: Any, namespace: str, room: Hashable, sid: str) -> bool:
    """True if ``sid`` is in ``room`` of ``namespace`` on this worker (room None: connected)."""
    return sid in manager.rooms.get(namespace, {}).get(room, {})


def select(
    manager: Any, namespace: str, rooms: Sequence[Hashable] | None, exclude: Sequence[Hashable]
) -> list[tuple[str, str]]:
    """This worker's ``(sid, eio_sid)`` in any of ``rooms`` (None: all) minus ``exclude``."""
    ns_rooms = manager.rooms.get(namespace)
    if not ns_rooms:
        return []
    excluded: set[str] = set()
    for r in exclude:
        excluded.update(ns_rooms.get(r, {}).keys())
    target = None if rooms is None else list(rooms)
    return [
        (sid, eio_sid)
        for sid, eio_sid in manager.get_participants(namespace, target)
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
    minus the sockets in any room of ``exclude``.
    """
    recipients = select(manager, namespace, rooms, exclude)
    packets = [eio_packet.Packet(eio_packet.MESSAGE, p) for p in parts]
    sockets = manager.server.eio.sockets
    for _, eio_sid in recipients:
        eio_socket = sockets.get(eio_sid)
        if eio_socket is None or eio_socket.closed:
            continue
        fast_ws = getattr(eio_socket, "fast_ws", None)
        if fast_ws is not None and fast_ws.can_write_now(eio_socket):
            for p in packets:  # straight to the websocket: nothing is queued ahead
                fast_ws.write_now(p.encode())
        else:
            for p in packets:  # onto the socket's queue: no task, no await
                eio_socket.queue.put_nowait(p)
    return len(recipients)
