"""The Socket.IO Admin UI's server side (``--admin-ui``), for the whole cluster.

Why not python-socketio's ``instrument()``: it patches engine.io internals this
worker already replaces (:mod:`workers.transport.fast_ws`) and reports the local process
only. Here every worker speaks @socket.io/admin-ui 0.5's protocol on the ``/admin``
namespace the way its Node server does in a cluster: every event below is emitted
to the whole namespace through the cluster manager, so the UI, connected to any
worker of any host, hears every worker (``server_stats`` per worker, each its own
server), and its listing comes from the cluster-wide ``fetch_sockets``.

- on connect (``auth`` ``{username, password}``): ``config`` then ``all_sockets``;
- every 2 s from each worker: ``server_stats``, with the connections, disconnections and
  packets and bytes received per second since the last ones (``aggregatedEvents``);
- as they happen on each worker: ``socket_connected``, ``socket_disconnected``,
  ``room_joined``, ``room_left``;
- from the UI: ``emit``, ``join``, ``leave``, ``_disconnect`` (room-wide, cluster-wide).
"""

from __future__ import annotations

import asyncio
import datetime
import hmac
import logging
import os
import socket
import time
from collections.abc import Hashable
from typing import Any

import socketio

from sio_cluster.workers.manager import ClusterManager
from sio_cluster.workers.patches import engineio as eio_patches

log = logging.getLogger(__name__)

NAMESPACE = "/admin"
STATS_INTERVAL = 2.0
FEATURES = [
    "EMIT",
    "JOIN",
    "LEAVE",
    "DISCONNECT",
    "MJOIN",
    "MLEAVE",
    "MDISCONNECT",
    "AGGREGATED_EVENTS",
]


class EventBuffer:
    """Counts per second and kind, as the UI's charts read them (``aggregatedEvents``)."""

    def __init__(self) -> None:
        self._counts: dict[tuple[int, str, str | None], int] = {}

    def push(self, kind: str, sub_kind: str | None = None, count: int = 1) -> None:
        key = (int(time.time()) * 1000, kind, sub_kind)
        self._counts[key] = self._counts.get(key, 0) + count

    def take(self) -> list[dict[str, Any]]:
        values = [
            {"timestamp": ts, "type": kind, "subType": sub, "count": n}
            for (ts, kind, sub), n in self._counts.items()
        ]
        self._counts.clear()
        return values


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


class AdminUI:
    """One worker's part of the cluster-wide Admin UI server."""

    def __init__(
        self,
        sio: socketio.AsyncServer,
        manager: ClusterManager,
        credentials: tuple[str, str] | None,
    ) -> None:
        self.sio = sio
        self.manager = manager
        self.credentials = credentials
        self.server_id = f"{socket.gethostname()}#{os.getpid()}"
        self._started = time.monotonic()
        self._tasks: set[asyncio.Task[None]] = set()
        self.events = EventBuffer()

    def install(self) -> None:
        """Register the namespace, its handlers, the membership observer and the stats."""
        self.sio.on("connect", self._on_connect, namespace=NAMESPACE)
        self.sio.on("emit", self._emit, namespace=NAMESPACE)
        self.sio.on("join", self._join, namespace=NAMESPACE)
        self.sio.on("leave", self._leave, namespace=NAMESPACE)
        self.sio.on("_disconnect", self._disconnect, namespace=NAMESPACE)
        self.manager.observers.append(self._on_membership)
        eio = self.sio.eio
        eio_patches.observe_eio_event(eio, "connect", lambda *_: self.events.push("rawConnection"))
        eio_patches.observe_eio_event(
            eio, "disconnect", lambda _, reason=None: self.events.push("rawDisconnection", reason)
        )
        eio_patches.observe_eio_event(eio, "message", self._message_in)
        self._spawn(self._stats_forever())

    def _spawn(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _authenticated(self, auth: Any) -> bool:
        if self.credentials is None:
            return True
        if not isinstance(auth, dict):
            return False
        user, password = str(auth.get("username", "")), str(auth.get("password", ""))
        expected_user, expected_password = self.credentials
        return hmac.compare_digest(user.encode(), expected_user.encode()) & hmac.compare_digest(
            password.encode(), expected_password.encode()
        )

    async def _on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        if not self._authenticated(auth):
            raise socketio.exceptions.ConnectionRefusedError("invalid credentials")
        self._spawn(self._welcome(sid))

    async def _welcome(self, sid: str) -> None:
        await self.sio.emit("config", {"supportedFeatures": FEATURES}, to=sid, namespace=NAMESPACE)
        sockets: list[dict[str, Any]] = []
        for namespace in self._namespaces():
            for info in await self.manager.fetch_sockets(namespace=namespace):
                sockets.append(self._shape(info, namespace))
        await self.sio.emit("all_sockets", sockets, to=sid, namespace=NAMESPACE)

    def _namespaces(self) -> list[str]:
        return sorted(n for n in self.sio.handlers if isinstance(n, str))

    def _shape(self, info: dict[str, Any], namespace: str) -> dict[str, Any]:
        """A socket as the UI lists it (Node's ``serialize``), from a fetched socket."""
        handshake = dict(info.get("handshake") or {})
        data = info.get("data")
        return {
            "id": info["id"],
            "clientId": handshake.pop("clientId", None),
            "transport": handshake.pop("transport", None),
            "nsp": namespace,
            "data": data if isinstance(data, dict) else {},
            "handshake": {
                key: handshake.get(key)
                for key in ("address", "headers", "query", "issued", "secure", "time")
            },
            "rooms": list(info.get("rooms") or []),
        }

    def _local_socket(self, sid: str, namespace: str) -> dict[str, Any]:
        rooms = self.manager.get_rooms(sid, namespace)
        eio_sid = self.manager.eio_sid_from_sid(sid, namespace) or ""
        eio_socket = eio_patches.eio_sockets(self.sio).get(eio_sid)
        transport = "websocket" if eio_socket is not None and eio_socket.upgraded else "polling"
        info = {
            "id": sid,
            "rooms": rooms,
            "handshake": {
                **self.manager.handshake(sid, namespace),
                "clientId": eio_sid[:12],
                "transport": transport,
            },
            "data": {},
        }
        return self._shape(info, namespace)

    # ---- what happens on this worker ---------------------------------------------

    def _message_in(self, _: str, data: Any) -> None:
        self.events.push("packetsIn")
        self.events.push("bytesIn", None, len(data))

    def _on_membership(self, namespace: str, sid: str, room: Hashable, joined: bool) -> None:
        """Called by the manager on every join and leave (``room`` None: connect or
        disconnect), synchronously: the events go out from a task."""
        if room is None and joined:
            event: tuple[Any, ...] = ("socket_connected", self._local_socket(sid, namespace), now())
        elif room is None:
            event = ("socket_disconnected", namespace, sid, "disconnect", now())
        else:
            name = "room_joined" if joined else "room_left"
            event = (name, namespace, room, sid, now())
        self._spawn(self.sio.emit(event[0], event[1:], namespace=NAMESPACE))

    async def _stats_forever(self) -> None:
        while True:
            await asyncio.sleep(STATS_INTERVAL)
            try:
                await self.sio.emit("server_stats", self.stats(), namespace=NAMESPACE)
            except Exception:  # stats must never stop for good
                log.exception("admin UI: could not send server stats")

    def stats(self) -> dict[str, Any]:
        sockets = eio_patches.eio_sockets(self.sio)
        return {
            "serverId": self.server_id,
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "uptime": time.monotonic() - self._started,
            "clientsCount": len(sockets),
            "pollingClientsCount": sum(1 for s in sockets.values() if not s.upgraded),
            "aggregatedEvents": self.events.take(),
            "namespaces": [
                {"name": n, "socketsCount": len(self.manager.rooms.get(n, {}).get(None, {}))}
                for n in self._namespaces()
            ],
        }

    # ---- what the UI asks for (every worker and host) -----------------------------

    async def _emit(self, _: str, namespace: str, target: Any, event: str, *args: Any) -> None:
        await self.sio.emit(event, args, to=target or None, namespace=namespace)

    async def _join(self, _: str, namespace: str, room: Any, target: Any) -> None:
        await self.manager.sockets_join([room], to=target, namespace=namespace)

    async def _leave(self, _: str, namespace: str, room: Any, target: Any) -> None:
        await self.manager.sockets_leave([room], to=target, namespace=namespace)

    async def _disconnect(self, _: str, namespace: str, close: Any, target: Any) -> None:
        await self.manager.disconnect_sockets(to=target, close=bool(close), namespace=namespace)
