"""What a worker does when the master asks it to act on its own sockets.

The master fans cluster operations (:mod:`wire.operations`) out to the workers
that hold matching sockets (and other hosts answer for theirs). Each operation
selects this worker's sockets the way a broadcast does. Membership changes made
here are reported to the master before the answer, on the same ordered pipe, so
the master's routing table includes them when it answers the caller.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import TYPE_CHECKING, Any

import orjson

from sio_cluster.wire.operations import (
    ClusterOperation,
    DisconnectSockets,
    EmitWithAck,
    FetchSockets,
    JoinRooms,
    LeaveRooms,
    ServerEmit,
    SocketInfo,
)

if TYPE_CHECKING:
    from sio_cluster.workers.manager import ClusterManager

log = logging.getLogger(__name__)


async def handle_request(manager: ClusterManager, operation: ClusterOperation) -> Any:
    """Carry out ``operation`` on this worker's sockets and return the result."""
    namespace = operation.namespace
    match operation:
        case EmitWithAck(_, sid, data, timeout):
            return await _emit_with_ack(manager, namespace, sid, data, timeout)
        case ServerEmit(_, event, args):
            handler = manager.server_event_handler(namespace, event)
            if handler is None:
                return 0
            result = handler(*args)
            if inspect.isawaitable(result):
                await result
            return 1
        case JoinRooms(_, selector, rooms):
            selected = manager.select(namespace, selector.rooms, selector.exclude)
            for sid, _ in selected:
                for room in rooms:
                    manager.basic_enter_room(sid, namespace, room)
            return len(selected)
        case LeaveRooms(_, selector, rooms):
            selected = manager.select(namespace, selector.rooms, selector.exclude)
            for sid, _ in selected:
                for room in rooms:
                    if room != sid:
                        manager.basic_leave_room(sid, namespace, room)
            return len(selected)
        case DisconnectSockets(_, selector, close):
            selected = manager.select(namespace, selector.rooms, selector.exclude)
            for sid, eio_sid in selected:
                if close:
                    await manager.server.eio.disconnect(eio_sid)
                else:
                    await manager.server.disconnect(sid, namespace=namespace)
            return len(selected)
        case FetchSockets(_, selector, ids_only):
            selected = manager.select(namespace, selector.rooms, selector.exclude)
            if ids_only:
                return [
                    SocketInfo(sid, tuple(manager.get_rooms(sid, namespace))).to_wire()
                    for sid, _ in selected
                ]
            return [await _describe(manager, namespace, sid) for sid, _ in selected]
    raise ValueError(f"unknown operation {operation!r}")


async def _describe(manager: ClusterManager, namespace: str, sid: str) -> dict[str, Any]:
    """A socket as Node's fetchSockets shows it; ``data`` is its python-socketio session."""
    return SocketInfo(
        sid,
        tuple(manager.get_rooms(sid, namespace)),
        manager.handshake(sid, namespace),
        await _session_data(manager, namespace, sid),
    ).to_wire()


async def _session_data(manager: ClusterManager, namespace: str, sid: str) -> Any:
    """The socket's session when it is plain JSON data (it crosses to other servers)."""
    try:
        session = await manager.server.get_session(sid, namespace=namespace)
        return orjson.loads(orjson.dumps(session))
    except (KeyError, TypeError, orjson.JSONEncodeError):
        return {}


async def _emit_with_ack(
    manager: ClusterManager, namespace: str, sid: str, data: list[Any], timeout: float
) -> list[Any]:
    if not manager.is_local(sid, namespace):
        raise KeyError(f"no socket {sid!r} here")
    answer: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()

    def on_ack(*ack: Any) -> None:
        if not answer.done():
            answer.set_result(list(ack))

    event, *args = data
    await manager.server.emit(event, tuple(args), to=sid, namespace=namespace, callback=on_ack)
    return await asyncio.wait_for(answer, timeout)
