"""The client manager that makes one python-socketio server a member of the cluster.

Why a manager: python-socketio routes every membership change through
``basic_enter_room``/``basic_leave_room`` and every emit through ``emit``, so
overriding exactly those keeps the server's public API unchanged for the user's
handlers (and keeps the admin UI, which wraps these methods by name, working).

- Membership changes are reported to the master (Join/Leave frames), which keeps
  the host's routing table. Reports are never dropped.
- An emit is delivered at once to this worker's own recipients and, unless every
  target is a socket of this worker, sent ONCE to the master as a Broadcast frame;
  the master forwards it only to the workers (and hosts) holding recipients.
- A Broadcast arriving from the master is delivered to this worker's recipients.
- Read-your-writes: ``connect``, ``enter_room``, ``leave_room`` and ``close_room``
  return only once the master has applied the change (a Sync barrier, or the
  answer to a request for a socket of another worker or host), so every emit made
  after them, from any worker, and every ``ch:*`` message the master reads after
  them, see the new membership.
- The same calls for a socket held elsewhere (``enter_room``, ``leave_room``,
  ``disconnect``, ``emit(..., callback=...)``/``call``) become requests that the
  master carries to the owner; the cluster-wide operations of Node's adapter are
  here too: :meth:`ClusterManager.fetch_sockets`, :meth:`~ClusterManager.sockets_join`,
  :meth:`~ClusterManager.sockets_leave`, :meth:`~ClusterManager.disconnect_sockets`,
  :meth:`~ClusterManager.server_side_emit`.

The packet is encoded once by the emitter; receivers write the same engine.io
packet object to every recipient (engine.io caches its encoding).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import socketio
from socketio import packet as sio_packet

from sio_cluster.wire.frames import Broadcast, Join, Leave, Room, Sync, is_room
from sio_cluster.wire.link import FrameLink
from sio_cluster.wire.operations import (
    ClusterOperation,
    DisconnectSockets,
    EmitWithAck,
    FetchSockets,
    JoinRooms,
    LeaveRooms,
    Selector,
    ServerEmit,
)
from sio_cluster.wire.rpc import Rpc, RpcError
from sio_cluster.workers import delivery
from sio_cluster.workers.handshake import handshake_of
from sio_cluster.workers.local_ops import handle_request
from sio_cluster.workers.patches import socketio as sio_patches

log = logging.getLogger(__name__)

SYNC_TIMEOUT = 5.0
REQUEST_TIMEOUT = 10.0  # a cluster operation (the master waits 5 s for other hosts)
ACK_CEILING = 300.0  # pending remote acks are forgotten after this; call() times out sooner

ServerEventHandler = Callable[..., Any]


def _room(room: Hashable) -> Room:
    """``room`` as a routable room name; rooms must be str or int to cross processes."""
    if not is_room(room):
        raise TypeError(f"room names must be str or int to be routed in a cluster, got {room!r}")
    return room


def _check_room(room: Hashable) -> None:
    if room is not None:
        _room(room)


def _selector(to: Any, exclude: Any) -> Selector:
    """Sockets in any of ``to`` (None: all) minus those in any room of ``exclude``."""
    rooms = None if to is None else tuple(_room(r) for r in _as_list(to))
    return Selector(rooms, tuple(_room(r) for r in _as_list(exclude)))


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, list | tuple | set | frozenset):
        return list(value)
    return [value]


MembershipObserver = Callable[[str, str, Hashable, bool], None]  # namespace, sid, room, joined


class ClusterManager(socketio.AsyncManager):
    """An ``AsyncManager`` whose rooms and emits span every worker of the host."""

    def __init__(self, link: FrameLink, sequenced: bool = False) -> None:
        super().__init__()
        self.link = link
        # connection state recovery: every emit is stamped by the master, in the host's
        # order, so this worker's own sockets get theirs through the master too
        self.sequenced = sequenced
        self._restored: dict[tuple[str, str], str] = {}  # (eio_sid, namespace) -> its old sid
        self.recovered_sockets: set[tuple[str, str]] = set()  # (namespace, sid), while connected
        self._reporting = True
        self.rpc = Rpc(
            lambda frame: link.send(frame, droppable=False),
            lambda operation: handle_request(self, operation),
        )
        self._server_events: dict[tuple[str, str], ServerEventHandler] = {}
        self._ack_tasks: set[asyncio.Task[None]] = set()
        self._sync_tokens = itertools.count(1)
        self._sync_waiters: dict[int, asyncio.Future[None]] = {}
        self._connected_at: dict[str, int] = {}  # sid -> ms since the epoch
        # told of every join and leave (room None: connect, disconnect), e.g. the Admin UI
        self.observers: list[MembershipObserver] = []
        # (namespace, sid) -> its rooms, in join order: get_rooms without scanning every room
        self._rooms_of: dict[tuple[str, str], dict[Hashable, None]] = {}
        # the id a connecting socket must have, if not a random one (Engine.IO 3 clients)
        self.fixed_sid: Callable[[str, str], str | None] = lambda eio_sid, namespace: None

    async def sync(self) -> None:
        """Return once the master has applied every report sent so far."""
        if self.link.closed:
            return
        token = next(self._sync_tokens)
        waiter = asyncio.get_running_loop().create_future()
        self._sync_waiters[token] = waiter
        self.link.send(Sync(token).encode(), droppable=False)
        try:
            await asyncio.wait_for(waiter, SYNC_TIMEOUT)
        except TimeoutError:
            log.warning("the master did not confirm a membership change in %.0f s", SYNC_TIMEOUT)
        finally:
            self._sync_waiters.pop(token, None)

    def synced(self, token: int) -> None:
        """The master's answer to :meth:`sync`."""
        waiter = self._sync_waiters.get(token)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def release_waiters(self) -> None:
        """The master is gone: nobody will answer, let every waiter go on."""
        for waiter in self._sync_waiters.values():
            if not waiter.done():
                waiter.set_result(None)

    def restore_socket(
        self, sid: str, namespace: str, eio_sid: str, rooms: Sequence[Hashable]
    ) -> bool:
        """Give ``eio_sid`` its old socket ``sid`` and rooms back (connection state recovery),
        before python-socketio handles its CONNECT: :meth:`pre_connect` then picks this sid.
        The master routed them here already, so nothing is reported. False if ``eio_sid``
        has a socket in ``namespace`` already, or ``sid`` is connected here."""
        members = sio_patches.room_members(self, namespace, None)
        if sid in members or eio_sid in members.values():
            return False
        self._reporting = False
        try:
            self.basic_enter_room(sid, namespace, None, eio_sid=eio_sid)
            for room in rooms:
                if room == sid or not self.is_sid_room(namespace, room):
                    self.basic_enter_room(sid, namespace, room, eio_sid=eio_sid)
        finally:
            self._reporting = True
        self.pending_connect.setdefault(namespace, []).append(sid)
        self._restored[(eio_sid, namespace)] = sid
        return True

    def recovered(self, sid: str, namespace: str = "/") -> bool:
        """True if ``sid`` came back through connection state recovery, with its rooms and
        session and the packets it missed (Node's ``socket.recovered``)."""
        return (namespace, sid) in self.recovered_sockets

    async def pre_connect(self, eio_sid: str, namespace: str) -> str | None:
        restored = self._restored.pop((eio_sid, namespace), None)
        if restored is not None:
            return restored  # registered by restore_socket, and routed by the master
        sid = self.fixed_sid(eio_sid, namespace)
        if sid is None:
            sid = await super().pre_connect(eio_sid, namespace)
        elif not sio_patches.pre_connect_as(self, sid, eio_sid, namespace):
            sid = None
        if sid is not None:
            await self.sync()
        return sid

    def is_local(self, sid: str, namespace: str) -> bool:
        """True if this worker holds ``sid`` in ``namespace``."""
        return delivery.is_member(self, namespace, None, sid)

    def handshake(self, sid: str, namespace: str) -> dict[str, Any]:
        """``sid``'s handshake as Node's socket.io describes one (see workers.handshake)."""
        environ = self.server.get_environ(sid, namespace=namespace) or {}
        issued = self._connected_at.get(sid) or int(time.time() * 1000)
        return handshake_of(environ, issued)

    def select(
        self, namespace: str, rooms: Sequence[Hashable] | None, exclude: Sequence[Hashable]
    ) -> list[tuple[str, str]]:
        """This worker's ``(sid, eio_sid)`` in any of ``rooms`` (None: all) minus ``exclude``."""
        return delivery.select(self, namespace, rooms, exclude)

    def deliver(
        self,
        namespace: str,
        rooms: Sequence[Hashable] | None,
        exclude: Sequence[Hashable],
        parts: Sequence[str | bytes],
    ) -> int:
        """Write an encoded packet to this worker's recipients; return how many got it."""
        return delivery.deliver(self, namespace, rooms, exclude, parts)

    async def cluster(self, operation: ClusterOperation, timeout: float = REQUEST_TIMEOUT) -> Any:
        """Ask the master to carry out ``operation`` across the cluster."""
        return await self.rpc.call(operation, timeout)

    async def enter_room(
        self, sid: str, namespace: str, room: Hashable, eio_sid: str | None = None
    ) -> None:
        _check_room(room)
        if eio_sid is None and not self.is_local(sid, namespace):
            await self._remote_membership(JoinRooms, sid, namespace, room)
            return
        await super().enter_room(sid, namespace, room, eio_sid=eio_sid)
        await self.sync()

    async def leave_room(self, sid: str, namespace: str, room: Hashable) -> None:
        if not self.is_local(sid, namespace):
            await self._remote_membership(LeaveRooms, sid, namespace, room)
            return
        await super().leave_room(sid, namespace, room)
        await self.sync()

    async def _remote_membership(
        self, operation: type[JoinRooms | LeaveRooms], sid: str, namespace: str, room: Hashable
    ) -> None:
        found = await self.cluster(
            operation(namespace, Selector((sid,)), (_room(room),), single_sid=True)
        )
        if not found:
            raise KeyError(f"no socket {sid!r} in namespace {namespace!r} in the cluster")

    async def close_room(self, room: Hashable, namespace: str) -> None:
        """Empty ``room`` on every worker and host (python-socketio: this process only)."""
        name = _room(room)
        if self.is_sid_room(namespace, name):
            raise ValueError("cannot close a sid room")
        await self.cluster(LeaveRooms(namespace, Selector((name,)), (name,)))

    async def can_disconnect(self, sid: str, namespace: str) -> bool:
        """Local sockets disconnect here; others are disconnected by their owner."""
        if self.is_local(sid, namespace):
            return bool(await super().can_disconnect(sid, namespace))
        found = await self.cluster(
            DisconnectSockets(namespace, Selector((sid,)), close=False, single_sid=True)
        )
        if not found:
            raise KeyError(f"no socket {sid!r} in namespace {namespace!r} in the cluster")
        return False

    # ---- Node adapter's cluster-wide operations --------------------------------

    async def fetch_sockets(
        self, to: Any = None, exclude: Any = None, namespace: str = "/"
    ) -> list[dict[str, Any]]:
        """Every socket of the cluster in ``to`` (rooms/sids; None = all) minus ``exclude``.

        Each is ``{"id", "rooms", "handshake", "data"}`` as Node's adapter gives them
        (rooms include the sid's own room).
        """
        sockets: list[dict[str, Any]] = await self.cluster(
            FetchSockets(namespace, _selector(to, exclude))
        )
        return sockets

    async def sockets_join(
        self, rooms: Any, to: Any = None, exclude: Any = None, namespace: str = "/"
    ) -> int:
        """Make the matching sockets of the whole cluster join ``rooms``; return how many."""
        return await self._sockets_membership(JoinRooms, rooms, to, exclude, namespace)

    async def sockets_leave(
        self, rooms: Any, to: Any = None, exclude: Any = None, namespace: str = "/"
    ) -> int:
        """Make the matching sockets of the whole cluster leave ``rooms``; return how many."""
        return await self._sockets_membership(LeaveRooms, rooms, to, exclude, namespace)

    async def _sockets_membership(
        self,
        operation: type[JoinRooms | LeaveRooms],
        rooms: Any,
        to: Any,
        exclude: Any,
        namespace: str,
    ) -> int:
        targets = tuple(_room(room) for room in _as_list(rooms))
        count: int = await self.cluster(operation(namespace, _selector(to, exclude), targets))
        return count

    async def disconnect_sockets(
        self, to: Any = None, exclude: Any = None, close: bool = False, namespace: str = "/"
    ) -> int:
        """Disconnect the matching sockets of the whole cluster; ``close`` ends the connection."""
        count: int = await self.cluster(
            DisconnectSockets(namespace, _selector(to, exclude), close=close)
        )
        return count

    def server_event_handler(self, namespace: str, event: str) -> ServerEventHandler | None:
        return self._server_events.get((namespace, event))

    def on_server_event(
        self, event: str, handler: ServerEventHandler, namespace: str = "/"
    ) -> None:
        """Call ``handler(*args)`` when another server emits ``event`` with server_side_emit."""
        self._server_events[(namespace, event)] = handler

    async def server_side_emit(self, event: str, *args: Any, namespace: str = "/") -> int:
        """Send ``event`` to every OTHER worker and host (not to clients); return how many."""
        count: int = await self.cluster(ServerEmit(namespace, event, list(args)))
        return count

    def get_rooms(self, sid: str, namespace: str) -> list[Any]:
        """The rooms ``sid`` is in (its own room included), from this manager's index:
        python-socketio's scans every room of the namespace, making a join's ack quadratic."""
        return list(self._rooms_of.get((namespace, sid), ()))

    def basic_disconnect(self, sid: str, namespace: str, **kwargs: Any) -> None:
        """``sid`` leaves ``namespace``: its rooms from this manager's index, then what
        python-socketio's own ``basic_disconnect`` clears (acks, pending lists).

        python-socketio's copies and scans every room of the namespace for each disconnect,
        every socket's own room included: 10,000 clients dropping at once cost one worker
        11.5 s of CPU, quadratic in the clients it holds."""
        if namespace not in self.rooms:
            return
        self.basic_leave_room(sid, namespace, None)
        for room in list(self._rooms_of.get((namespace, sid), ())):
            self.basic_leave_room(sid, namespace, room)
        self.callbacks.pop(sid, None)
        for pending in (self.pending_connect, self.pending_disconnect):
            waiting = pending.get(namespace)
            if waiting is not None and sid in waiting:
                waiting.remove(sid)
                if not waiting:
                    del pending[namespace]

    def _report(self, report: Join | Leave) -> None:
        if self._reporting:
            self.link.send(report.encode(), droppable=False)
        for observer in self.observers:
            try:
                observer(report.namespace, report.sid, report.room, isinstance(report, Join))
            except Exception:  # an observer's bug must not cost the membership
                log.exception("a membership observer failed")

    def basic_enter_room(
        self, sid: str, namespace: str, room: Hashable, eio_sid: str | None = None
    ) -> None:
        _check_room(room)
        super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)
        if room is None:
            self._connected_at[sid] = int(time.time() * 1000)
        else:
            self._rooms_of.setdefault((namespace, sid), {})[room] = None
        self._report(Join(namespace, sid, room))  # type: ignore[arg-type]  # checked above

    def basic_leave_room(self, sid: str, namespace: str, room: Hashable) -> None:
        member = delivery.is_member(self, namespace, room, sid)
        super().basic_leave_room(sid, namespace, room)
        if room is None:
            self._connected_at.pop(sid, None)
        else:
            rooms = self._rooms_of.get((namespace, sid))
            if rooms is not None:
                rooms.pop(room, None)
                if not rooms:
                    del self._rooms_of[(namespace, sid)]
        if member:
            self._report(Leave(namespace, sid, room))  # type: ignore[arg-type]  # a member

    async def emit(
        self,
        event: str,
        data: Any,
        namespace: str,
        room: Any = None,
        skip_sid: Any = None,
        callback: Any = None,
        to: Any = None,
        **kwargs: Any,
    ) -> None:
        """Deliver to this worker's recipients, then hand the rest to the master."""
        room = to or room
        namespace = namespace or "/"
        if callback is not None and isinstance(room, str) and not self.is_local(room, namespace):
            self._emit_remote_with_ack(event, data, namespace, room, callback)
            return
        if callback is not None or kwargs.get("ignore_queue"):
            await super().emit(
                event, data, namespace, room=room, skip_sid=skip_sid, callback=callback
            )
            return
        rooms = None if room is None else [_room(r) for r in _as_list(room)]
        exclude = [_room(s) for s in _as_list(skip_sid) if s is not None]
        if isinstance(data, tuple):
            args = list(data)
        elif data is not None:
            args = [data]
        else:
            args = []
        pkt = self.server.packet_class(sio_packet.EVENT, namespace=namespace, data=[event, *args])
        encoded = pkt.encode()
        parts = encoded if isinstance(encoded, list) else [encoded]
        if self.sequenced:
            # never dropped: with recovery on, a lost emit would be lost for good
            self.link.send(Broadcast.build(namespace, rooms, exclude, parts), droppable=False)
            return
        if rooms is not None and all(
            isinstance(r, str) and self.is_local(r, namespace) for r in rooms
        ):
            self.deliver(namespace, rooms, exclude, parts)
            return
        frame = Broadcast.build(namespace, rooms, exclude, parts)
        self.deliver(namespace, rooms, exclude, parts)
        if not self.link.send(frame):
            log.warning(
                "master pipe backlog full: emit of %r not forwarded to sibling workers", event
            )

    def _emit_remote_with_ack(
        self, event: str, data: Any, namespace: str, sid: str, callback: Callable[..., Any]
    ) -> None:
        """Emit to a socket of another worker or host; run ``callback`` with its ack."""
        args = list(data) if isinstance(data, tuple) else ([] if data is None else [data])

        async def wait_for_ack() -> None:
            try:
                ack = await self.cluster(
                    EmitWithAck(namespace, sid, [event, *args], ACK_CEILING),
                    timeout=ACK_CEILING + 5,
                )
            except (RpcError, TimeoutError) as exc:
                log.info("no ack from %s for %r: %s", sid, event, exc)
                return
            result = callback(*ack)
            if asyncio.iscoroutine(result):
                await result

        task = asyncio.create_task(wait_for_ack())
        self._ack_tasks.add(task)
        task.add_done_callback(self._ack_tasks.discard)
