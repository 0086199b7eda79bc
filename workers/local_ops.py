"""What a worker does when the master asks it to act on its own sockets.

The master fans cluster operations out to the workers that hold matching
sockets (and other hosts answer for theirs). Each operation selects this
worker's sockets the same way a broadcast does: in any of ``rooms`` (``None``:
all of the namespace) minus those in any room of ``exclude``. Membership changes
made here are reported to the master before the answer, on the same ordered
pipe, so the master's routing table includes them when it answers the caller.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import TYPE_CHECKING, Any

from socketio import packet as sio_packet

if TYPE_CHECKING:
    from workers.manager import ClusterManager


async def handle_request(manager: ClusterManager, operation: str, args: dict[str, Any]) -> Any:
    """Carry out ``operation`` on this worker's sockets and return the result."""
    namespace = args["namespace"]
    if operation == "emit_ack":
        return await _emit_with_ack(manager, namespace, args)
    if operation == "server_emit":
        handler = manager.server_event_handler(namespace, args["event"])
        if handler is None:
            return 0
        result = handler(*args["args"])
        if inspect.isawaitable(result):
            await result
        return 1
    selected = manager.select(namespace, args["rooms"], args["exclude"])
    if operation == "join":
        for sid, _ in selected:
            for room in args["targets"]:
                manager.basic_enter_room(sid, namespace, room)
    elif operation == "leave":
        for sid, _ in selected:
            for room in args["targets"]:
                if room != sid:
                    manager.basic_leave_room(sid, namespace, room)
    elif operation == "disconnect":
        for sid, eio_sid in selected:
            if args.get("close"):
                await manager.server.eio.disconnect(eio_sid)
            else:
                await manager.server.disconnect(sid, namespace=namespace)
    elif operation == "fetch":
        return [{"id": sid, "rooms": manager.get_rooms(sid, namespace)} for sid, _ in selected]
    else:
        raise ValueError(f"unknown operation {operation!r}")
    return len(selected)


async def _emit_with_ack(manager: ClusterManager, namespace: str, args: dict[str, Any]) -> Any:
    sid = args["sid"]
    eio_sid = manager.eio_sid_from_sid(sid, namespace)
    if eio_sid is None:
        raise KeyError(f"no socket {sid!r} here")
    answer: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()

    def on_ack(*ack: Any) -> None:
        if not answer.done():
            answer.set_result(list(ack))

    ack_id = manager._generate_ack_id(sid, on_ack)
    pkt = manager.server.packet_class(
        sio_packet.EVENT, namespace=namespace, data=args["data"], id=ack_id
    )
    await manager.server._send_packet(eio_sid, pkt)
    return await asyncio.wait_for(answer, float(args["ack_timeout"]))
