"""The worker's side of connection state recovery (``--connection-state-recovery``).

What Node's socket.io does in one process, spread over the worker and its master
(:mod:`master.recovery.log` keeps the state, so it survives this worker):

- each socket gets a private id (``pid``) in its CONNECT reply, told to the master with
  the socket's python-socketio session each time it is saved;
- a connection that ends without a goodbye (transport closed or failed, ping timeout,
  this worker stopping) has its socket's session kept by the master; a disconnect asked
  for by the client or by the server (``sio.disconnect``) does not, as in Node;
- a client that comes back with ``{pid, offset}`` in its CONNECT auth (socket.io-client
  4.6+ does it by itself) is given its old sid, rooms and session, and the packets it
  missed are queued before the CONNECT reply, as Node sends them. ``pid`` and ``offset``
  are taken out of the auth before the app's connect handler sees it, so handlers written
  as ``connect(sid, environ)`` keep working.

The master's answer is applied as the pipe delivers it (:meth:`WorkerRecovery.on_restored`,
called from the frame handler), so a broadcast routed to the restored socket after the
answer always finds it registered here, and behind its replay.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Hashable
from typing import Any

import msgpack
import socketio
from engineio import packet as eio_packet

from sio_cluster.common.ratelimit import RateLimitedLogger
from sio_cluster.wire.frames import KeepSession, Leave, Recoverable, Restore, Restored, SessionData
from sio_cluster.workers.manager import ClusterManager
from sio_cluster.workers.patches import engineio as eio_patches
from sio_cluster.workers.patches import socketio as sio_patches

log = logging.getLogger(__name__)

RESTORE_TIMEOUT = 5.0
RECOVERED = "recovered"


class WorkerRecovery:
    """Hooks one python-socketio server into the master's recovery (see the module)."""

    def __init__(self, sio: socketio.AsyncServer, manager: ClusterManager) -> None:
        self._sio = sio
        self._manager = manager
        self._tokens = itertools.count(1)
        self._waiting: dict[int, tuple[str, str, str, asyncio.Future[str]]] = {}
        self._pids: dict[tuple[str, str], str] = {}  # (namespace, sid) -> pid
        self._refused: set[str] = set()  # engine.io sids closed for what they sent
        self._session_log = RateLimitedLogger(log)

    def install(self) -> None:
        sio_patches.intercept_connect(self._sio, self._on_connect)
        sio_patches.intercept_connect_reply(self._sio, self._on_connect_reply)
        eio_patches.observe_eio_event(self._sio.eio, "disconnect", self._on_eio_disconnect)
        self._manager.observers.append(self._on_membership)
        save_session = self._sio.save_session

        async def save_and_report(sid: str, session: Any, namespace: str | None = None) -> None:
            await save_session(sid, session, namespace=namespace)
            self._report_session(sid, namespace or "/", session)

        self._sio.save_session = save_and_report  # type: ignore[method-assign]

    def refused(self, eio_sid: str) -> None:
        """This connection is closed for what it sent: its sockets are not kept (Node keeps
        none after a parse error)."""
        self._refused.add(eio_sid)

    # ---- connect --------------------------------------------------------------

    async def _on_connect(self, eio_sid: str, namespace: str, auth: Any) -> Any:
        if not isinstance(auth, dict) or not ("pid" in auth or "offset" in auth):
            return auth
        pid, offset = auth.get("pid"), auth.get("offset")
        rest = {k: v for k, v in auth.items() if k not in ("pid", "offset")}
        if isinstance(pid, str) and isinstance(offset, str):
            await self._restore(eio_sid, namespace, pid, offset)
        return rest or None

    async def _restore(self, eio_sid: str, namespace: str, pid: str, offset: str) -> None:
        token = next(self._tokens)
        answer = asyncio.get_running_loop().create_future()
        self._waiting[token] = (eio_sid, namespace, pid, answer)
        self._manager.link.send(Restore(token, namespace, pid, offset).encode(), droppable=False)
        try:
            await asyncio.wait_for(answer, RESTORE_TIMEOUT)
        except TimeoutError:
            log.warning("the master did not answer a recovery in %.0f s", RESTORE_TIMEOUT)
        finally:
            self._waiting.pop(token, None)

    def on_restored(self, frame: Restored) -> None:
        """The master's answer, applied as it arrives (see the module docstring)."""
        waiting = self._waiting.pop(frame.token, None)
        if frame.outcome != RECOVERED:
            if waiting is not None and not waiting[3].done():
                waiting[3].set_result(frame.outcome)
            return
        namespace, sid = "/", frame.sid
        eio_socket = None
        if waiting is not None:
            eio_sid, namespace, pid, answer = waiting
            eio_socket = eio_patches.eio_sockets(self._sio).get(eio_sid)
            if eio_socket is not None and not eio_socket.closed:
                if self._apply(frame, namespace, eio_sid, eio_socket):
                    self._pids[(namespace, sid)] = pid
                    answer.set_result(frame.outcome)
                    return
            answer.set_result("gone")
        # The client left (or we stopped waiting) before the answer came: the master routes
        # the socket here, so give it back, kept for another try.
        self._manager.link.send(
            KeepSession(namespace, sid, list(frame.rooms)).encode(), droppable=False
        )
        for room in (*frame.rooms, None):
            self._manager.link.send(Leave(namespace, sid, room).encode(), droppable=False)

    def _apply(self, frame: Restored, namespace: str, eio_sid: str, eio_socket: Any) -> bool:
        sid = frame.sid
        if not self._manager.restore_socket(sid, namespace, eio_sid, frame.rooms):
            return False
        if frame.data is not None:
            eio_patches.eio_session(eio_socket)[namespace] = msgpack.unpackb(frame.data, raw=False)
        eio_patches.enqueue(
            eio_socket,
            [
                eio_packet.Packet(eio_packet.MESSAGE, part)
                for parts in frame.missed
                for part in parts
            ],
        )
        self._manager.recovered_sockets.add((namespace, sid))
        return True

    def _on_connect_reply(self, namespace: str, data: dict[str, Any]) -> None:
        sid = data.get("sid")
        if not isinstance(sid, str):
            return
        key = (namespace, sid)
        pid = self._pids.get(key)
        if pid is None:
            pid = self._pids[key] = self._sio.eio.generate_id()
            self._manager.link.send(Recoverable(namespace, sid, pid).encode(), droppable=False)
        data["pid"] = pid

    # ---- while connected, and after ---------------------------------------------

    def _report_session(self, sid: str, namespace: str, session: Any) -> None:
        if (namespace, sid) not in self._pids:
            return
        try:
            data = msgpack.packb(session, use_bin_type=True)
        except (TypeError, ValueError, OverflowError) as exc:
            self._session_log.log(
                logging.WARNING,
                "session",
                "a session cannot be kept for recovery (msgpack: %s); it comes back as last kept",
                exc,
            )
            return
        self._manager.link.send(SessionData(namespace, sid, data).encode(), droppable=False)

    def _on_eio_disconnect(self, eio_sid: str, *_: Any) -> None:
        """The connection ended: every recoverable socket on it is kept, unless we closed it
        for what it sent. Called before python-socketio forgets the sockets' rooms."""
        if eio_sid in self._refused:
            self._refused.discard(eio_sid)
            return
        manager = self._manager
        for namespace in list(manager.get_namespaces()):
            sid = manager.sid_from_eio_sid(eio_sid, namespace)
            if sid is None or (namespace, sid) not in self._pids:
                continue
            rooms = manager.get_rooms(sid, namespace)  # its sid room included, None never
            manager.link.send(KeepSession(namespace, sid, rooms).encode(), droppable=False)

    def _on_membership(self, namespace: str, sid: str, room: Hashable, joined: bool) -> None:
        if room is None and not joined:  # disconnected, for whatever reason
            self._pids.pop((namespace, sid), None)
            self._manager.recovered_sockets.discard((namespace, sid))
