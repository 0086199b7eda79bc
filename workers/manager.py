"""The client manager that makes one python-socketio server a member of the host's cluster.

Why a manager: python-socketio routes every membership change through
``basic_enter_room``/``basic_leave_room`` and every emit through ``emit``, so
overriding exactly those keeps the server's public API unchanged for the user's
handlers (and keeps the admin UI, which wraps these methods by name, working).

- Membership changes are reported to the master (JOIN/LEAVE frames), which keeps
  the host's routing table. Reports are never dropped.
- An emit is delivered at once to this worker's own recipients and, unless every
  target is a socket of this worker, sent ONCE to the master as a BROADCAST frame;
  the master forwards it only to the sibling workers holding recipients.
- A BROADCAST arriving from the master is delivered to this worker's recipients.
- Read-your-writes: ``connect``, ``enter_room``, ``leave_room`` and ``close_room``
  return only once the master has applied the change (a SYNC barrier), so every
  emit made after them, from any worker, and every ``ch:*`` message the master
  reads after them, see the new membership.

The packet is encoded once by the emitter; receivers write the same engine.io
packet object to every recipient (engine.io caches its encoding).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Hashable, Sequence
from typing import Any

import socketio
from engineio import packet as eio_packet
from socketio import packet as sio_packet

from wire.frames import Kind, encode_frame
from wire.link import FrameLink

log = logging.getLogger(__name__)

SYNC_TIMEOUT = 5.0


def _check_room(room: Hashable) -> None:
    if room is not None and not isinstance(room, str | int):
        raise TypeError(f"room names must be str or int to be routed in a cluster, got {room!r}")


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, list | tuple | set | frozenset):
        return list(value)
    return [value]


class ClusterManager(socketio.AsyncManager):
    """An ``AsyncManager`` whose rooms and emits span every worker of the host."""

    def __init__(self) -> None:
        super().__init__()
        self.link: FrameLink | None = None
        self._sync_tokens = itertools.count(1)
        self._sync_waiters: dict[int, asyncio.Future[None]] = {}

    async def sync(self) -> None:
        """Return once the master has applied every report sent so far."""
        if self.link is None or self.link.closed:
            return
        token = next(self._sync_tokens)
        waiter = asyncio.get_running_loop().create_future()
        self._sync_waiters[token] = waiter
        self.link.send(encode_frame(Kind.SYNC, token), droppable=False)
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

    async def pre_connect(self, eio_sid: str, namespace: str) -> str | None:
        sid: str | None = await super().pre_connect(eio_sid, namespace)
        if sid is not None:
            await self.sync()
        return sid

    async def enter_room(
        self, sid: str, namespace: str, room: Hashable, eio_sid: str | None = None
    ) -> None:
        await super().enter_room(sid, namespace, room, eio_sid=eio_sid)
        await self.sync()

    async def leave_room(self, sid: str, namespace: str, room: Hashable) -> None:
        await super().leave_room(sid, namespace, room)
        await self.sync()

    async def close_room(self, room: Hashable, namespace: str) -> None:
        await super().close_room(room, namespace)
        await self.sync()

    def _report(self, kind: Kind, namespace: str, sid: str, room: Hashable) -> None:
        if self.link is not None:
            self.link.send(encode_frame(kind, namespace, sid, room), droppable=False)

    def basic_enter_room(
        self, sid: str, namespace: str, room: Hashable, eio_sid: str | None = None
    ) -> None:
        _check_room(room)
        super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)
        self._report(Kind.JOIN, namespace, sid, room)

    def basic_leave_room(self, sid: str, namespace: str, room: Hashable) -> None:
        member = sid in self.rooms.get(namespace, {}).get(room, {})
        super().basic_leave_room(sid, namespace, room)
        if member:
            self._report(Kind.LEAVE, namespace, sid, room)

    def _is_local_sid(self, namespace: str, room: Hashable) -> bool:
        return room in self.rooms.get(namespace, {}).get(None, {})

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
        if callback is not None or kwargs.get("ignore_queue"):
            await super().emit(
                event, data, namespace, room=room, skip_sid=skip_sid, callback=callback
            )
            return
        rooms = None if room is None else _as_list(room)
        for r in rooms or ():
            _check_room(r)
        exclude = [s for s in _as_list(skip_sid) if s is not None]
        if isinstance(data, tuple):
            args = list(data)
        elif data is not None:
            args = [data]
        else:
            args = []
        pkt = self.server.packet_class(sio_packet.EVENT, namespace=namespace, data=[event, *args])
        encoded = pkt.encode()
        parts = encoded if isinstance(encoded, list) else [encoded]
        if rooms is not None and all(self._is_local_sid(namespace, r) for r in rooms):
            await self.deliver(namespace, rooms, exclude, parts)
            return
        frame = encode_frame(Kind.BROADCAST, namespace, rooms, exclude, parts)
        await self.deliver(namespace, rooms, exclude, parts)
        if self.link is not None and not self.link.send(frame):
            log.warning(
                "master pipe backlog full: emit of %r not forwarded to sibling workers", event
            )

    async def deliver(
        self,
        namespace: str,
        rooms: Sequence[Hashable] | None,
        exclude: Sequence[Hashable],
        parts: Sequence[str | bytes],
    ) -> int:
        """Write an encoded packet to this worker's recipients; return how many got it.

        Recipients: the sockets in any of ``rooms`` (``None``: all of the
        namespace) minus the sockets in any room of ``exclude``.
        """
        ns_rooms = self.rooms.get(namespace)
        if not ns_rooms:
            return 0
        excluded: set[str] = set()
        for r in exclude:
            excluded.update(ns_rooms.get(r, {}).keys())
        target = None if rooms is None else list(rooms)
        packets = [eio_packet.Packet(eio_packet.MESSAGE, p) for p in parts]
        count = 0
        for sid, eio_sid in self.get_participants(namespace, target):
            if sid in excluded:
                continue
            for p in packets:
                await self.server._send_eio_packet(eio_sid, p)
            count += 1
        return count
