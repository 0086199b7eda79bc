"""The master's routing table: which worker holds which socket, in which rooms.

Pure and I/O-free (the httpcore way): the workers' membership reports mutate it
and :meth:`RoutingTable.route` answers "which workers must receive this", so the
whole routing decision is tested without processes or pipes.

The model mirrors python-socketio's own room table: per namespace, a room maps to
its members; every socket is in the room named by its sid and in the room
``None`` ("every socket of the namespace"). Here each member set is split by the
worker that holds it, so routing answers per worker.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence

Room = Hashable  # a room name, a sid (every sid is a room), or None for "everyone"
WorkerId = int


class RoutingTable:
    """namespace -> room -> worker -> sids, kept from the workers' JOIN/LEAVE reports."""

    def __init__(self) -> None:
        self._rooms: dict[str, dict[Room, dict[WorkerId, set[str]]]] = {}

    def join(self, worker: WorkerId, namespace: str, sid: str, room: Room) -> bool:
        """Record that ``sid`` (held by ``worker``) is in ``room``; ``None`` means connected.
        True when the room had no socket on this host before."""
        rooms = self._rooms.setdefault(namespace, {})
        members = rooms.get(room)
        if members is None:
            rooms[room] = {worker: {sid}}
            return True
        members.setdefault(worker, set()).add(sid)
        return False

    def leave(self, worker: WorkerId, namespace: str, sid: str, room: Room) -> bool:
        """Forget one membership; empty rooms and namespaces vanish. True when the room
        has no socket on this host any more."""
        rooms = self._rooms.get(namespace)
        if rooms is None:
            return False
        members = rooms.get(room)
        if members is None:
            return False
        sids = members.get(worker)
        if sids is None:
            return False
        sids.discard(sid)
        if sids:
            return False
        del members[worker]
        if members:
            return False
        del rooms[room]
        if not rooms:
            del self._rooms[namespace]
        return True

    def drop_worker(self, worker: WorkerId) -> tuple[list[tuple[str, str]], list[tuple[str, Room]]]:
        """Forget everything ``worker`` held (it died): return its ``(namespace, sid)``s, and
        the ``(namespace, room)``s that have no socket on this host any more."""
        dropped: list[tuple[str, str]] = []
        emptied: list[tuple[str, Room]] = []
        for namespace in list(self._rooms):
            rooms = self._rooms[namespace]
            dropped += [(namespace, sid) for sid in rooms.get(None, {}).get(worker, ())]
            for room in list(rooms):
                members = rooms[room]
                if members.pop(worker, None) is not None and not members:
                    del rooms[room]
                    emptied.append((namespace, room))
            if not rooms:
                del self._rooms[namespace]
        return dropped, emptied

    def sockets_of_worker(self, worker: WorkerId) -> dict[tuple[str, str], list[Room]]:
        """Every socket ``worker`` holds, as ``(namespace, sid)`` -> its rooms (its own sid
        room included, None not): what a socket takes with it when its worker dies."""
        found: dict[tuple[str, str], list[Room]] = {}
        for namespace, rooms in self._rooms.items():
            for sid in rooms.get(None, {}).get(worker, ()):
                found[(namespace, sid)] = []
            for room, members in rooms.items():
                if room is None:
                    continue
                for sid in members.get(worker, ()):
                    held = found.get((namespace, sid))
                    if held is not None:
                        held.append(room)
        return found

    def route(
        self,
        namespace: str,
        to: Sequence[Room] | None,
        exclude: Iterable[Room] = (),
        skip_worker: WorkerId | None = None,
    ) -> list[WorkerId]:
        """Return, sorted, the workers holding at least one socket that must receive.

        The recipients are the sockets in the union of the rooms ``to`` (``None``:
        every socket of the namespace) minus the sockets in any room of
        ``exclude``. A worker is returned only if at least one recipient is
        its own, so a worker without targets gets nothing over its pipe.
        ``skip_worker`` is the origin of a worker broadcast, which already
        delivered to its own sockets.
        """
        rooms = self._rooms.get(namespace)
        if not rooms:
            return []
        candidates: dict[WorkerId, list[set[str]]] = {}
        for room in (None,) if to is None else to:
            for worker, sids in rooms.get(room, {}).items():
                if worker != skip_worker:
                    candidates.setdefault(worker, []).append(sids)
        excluded_rooms = [rooms[r] for r in exclude if r in rooms]
        if not excluded_rooms:
            return sorted(candidates)
        chosen = []
        for worker, sid_sets in candidates.items():
            excluded: set[str] = set()
            for members in excluded_rooms:
                excluded.update(members.get(worker, ()))
            if not excluded or any(sid not in excluded for sids in sid_sets for sid in sids):
                chosen.append(worker)
        return sorted(chosen)

    def sockets(self) -> list[tuple[str, str, list[Room]]]:
        """Every connected socket as ``(namespace, sid, rooms)``; rooms exclude None and sid."""
        found: dict[tuple[str, str], list[Room]] = {}
        for namespace, rooms in self._rooms.items():
            for sids in rooms.get(None, {}).values():
                for sid in sids:
                    found[(namespace, sid)] = []
            for room, members in rooms.items():
                if room is None:
                    continue
                for sids in members.values():
                    for sid in sids:
                        if sid != room and (namespace, sid) in found:
                            found[(namespace, sid)].append(room)
        return [(namespace, sid, rooms) for (namespace, sid), rooms in found.items()]

    def room_names(self, namespace: str) -> list[Room]:
        """Every room of ``namespace`` with a socket in it, sid rooms included (Node's allRooms)."""
        return [room for room in self._rooms.get(namespace, {}) if room is not None]

    def sockets_per_worker(self) -> dict[WorkerId, int]:
        """Connected sockets (one per namespace connection) held by each worker."""
        counts: dict[WorkerId, int] = {}
        for rooms in self._rooms.values():
            for worker, sids in rooms.get(None, {}).items():
                counts[worker] = counts.get(worker, 0) + len(sids)
        return counts
