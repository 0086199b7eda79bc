"""The master's one listening port: accept, peek at the request line, pass the socket on.

Why the master, and why by descriptor passing: python-socketio's long-polling sessions live
in one process, and every request of a session must reach it (``--workers N`` behind one
port otherwise answers "Invalid session"). The master accepts each connection, peeks at its
first request line with ``MSG_PEEK`` (nothing is consumed: the bytes stay in the kernel's
buffer and travel with the descriptor), decides the worker (:mod:`.balance`) and sends the
descriptor over that worker's hand-off socketpair (SCM_RIGHTS, as Node's
``@socket.io/sticky`` primary does). Then it closes its copy: the worker serves the
connection directly and the master is out of the data path.

Each connection is one descriptor and at most two timers here, never a task: a client that
sends nothing holds no accept slot and is closed at ``--header-timeout`` (counted). The peek
is level-triggered, so a request line that arrives in pieces is peeked again every
:data:`PEEK_RETRY` seconds rather than on every wake-up.

One request per connection (see :mod:`workers.handoff`): a worker answers every request that
is not a websocket upgrade with ``Connection: close``, so a kept-alive connection never
carries a second session's request to the wrong worker.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from sio_cluster.common.forwarded import TrustedHosts
from sio_cluster.common.ratelimit import RateLimitedLogger
from sio_cluster.master.acceptor import proxy_protocol
from sio_cluster.master.acceptor.balance import Balancer, Report
from sio_cluster.master.acceptor.request_line import Incomplete, first_request
from sio_cluster.wire.handoff import connection_message, source_of

log = logging.getLogger(__name__)
limited = RateLimitedLogger(log)

PEEK_BYTES = 8192  # a request line longer than this is routed as a new session
PEEK_RETRY = 0.02  # seconds between peeks at a request line that came in part
NO_WORKER_RETRY = 0.05  # seconds between looks for a serving worker (all are restarting)
ACCEPTS_PER_WAKEUP = 256
MAX_QUEUED = 4096  # connections waiting for one worker's hand-off socket to drain
BACKLOG = 4096


class Workers(Protocol):
    """What the acceptor needs of the supervisor."""

    def serving(self) -> list[int]:
        """Keys of the workers that take new connections (ready, not stopping)."""
        ...

    def handoff_socket(self, key: int) -> socket.socket | None: ...

    def reports(self) -> Mapping[int, Report]:
        """Each worker's last health report of its load, by key."""
        ...


@dataclass(eq=False)
class _Pending:
    """An accepted connection whose request line is awaited."""

    sock: socket.socket
    expiry: asyncio.TimerHandle | None = None
    retry: asyncio.TimerHandle | None = None
    reading: bool = False
    waiting_for_worker: bool = False  # its request line is here; no worker serves yet
    proxied: bool = False  # a PROXY header is expected first (and not yet consumed)
    source: tuple[str, int] | None = None  # the client, as the PROXY header named it


@dataclass
class _Queue:
    """Connections for one worker waiting for its hand-off socket to take them."""

    sock: socket.socket
    items: deque[tuple[socket.socket, str | None, tuple[str, int] | None]] = field(
        default_factory=deque
    )


class Acceptor:
    """Owns the listening socket and the connections not yet handed to a worker."""

    def __init__(
        self,
        host: str,
        port: int,
        header_timeout: float,
        workers: Workers,
        count: Callable[[str], None],
        proxies: TrustedHosts | None = None,
    ) -> None:
        """``proxies``: with ``--proxy-protocol``, the peers whose connections start with a
        PROXY header (``--forwarded-allow-ips``); None reads none."""
        self.address = (host, port)
        self.header_timeout = header_timeout
        self._workers = workers
        self._count = count
        self._balancer = Balancer()
        self._proxies = proxies
        self._listener: socket.socket | None = None
        self._pending: set[_Pending] = set()
        self._queues: dict[int, _Queue] = {}
        self._gone: set[int] = set()  # workers whose hand-off failed; their exit is coming
        self._watched: dict[int, socket.socket] = {}  # hand-off sockets read for hand-backs
        self._loop = asyncio.get_running_loop()

    def listen(self) -> None:
        """Bind and listen now (an OSError says why not); connections wait in the backlog
        until :meth:`start`."""
        host, port = self.address
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((host, port))
            listener.listen(BACKLOG)
            listener.setblocking(False)
        except OSError:
            listener.close()
            raise
        self._listener = listener

    def start(self) -> None:
        assert self._listener is not None, "listen() first"
        self._loop.add_reader(self._listener.fileno(), self._accept)

    def close(self) -> None:
        """Stop accepting; close what was accepted and not yet handed over."""
        if self._listener is not None:
            self._loop.remove_reader(self._listener.fileno())
            self._listener.close()
            self._listener = None
        for pending in list(self._pending):
            self._drop(pending)
        for handoff in self._watched.values():
            self._loop.remove_reader(handoff.fileno())
        self._watched.clear()
        for queue in self._queues.values():
            self._loop.remove_writer(queue.sock.fileno())
            for conn, _, _ in queue.items:
                conn.close()
        self._queues.clear()

    def forget(self, key: int) -> None:
        """Worker ``key`` has exited: what waited for it goes to the others (a request of one
        of its sessions is answered "Invalid session" there, and its client starts anew)."""
        self._worker_gone(key)
        self._gone.discard(key)
        self._balancer.forget(key)
        handoff = self._watched.pop(key, None)
        if handoff is not None:
            self._loop.remove_reader(handoff.fileno())

    # ---- accept and peek -----------------------------------------------------------

    def _accept(self) -> None:
        assert self._listener is not None
        for _ in range(ACCEPTS_PER_WAKEUP):
            try:
                conn, peer = self._listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:  # out of descriptors, say: the backlog keeps the rest
                limited.log(logging.ERROR, "accept", "cannot accept a connection: %s", exc)
                return
            proxied = self._proxies is not None and peer[0] in self._proxies
            self._peek(self._track(conn, None, proxied))

    def _track(
        self, conn: socket.socket, source: tuple[str, int] | None, proxied: bool = False
    ) -> _Pending:
        """Watch ``conn`` until it is handed over, ``--header-timeout`` at most."""
        conn.setblocking(False)
        pending = _Pending(conn, proxied=proxied, source=source)
        pending.expiry = self._loop.call_later(self.header_timeout, self._expire, pending)
        self._pending.add(pending)
        return pending

    def _peek(self, pending: _Pending) -> None:
        pending.retry = None
        try:
            data = pending.sock.recv(PEEK_BYTES, socket.MSG_PEEK)
        except BlockingIOError:
            self._wait_readable(pending)
            return
        except OSError:
            self._drop(pending, "closed_early")
            return
        if not data:
            self._drop(pending, "closed_early")
            return
        if pending.proxied:
            self._proxy_header(pending, data)
            return
        decision = first_request(data, PEEK_BYTES)
        if isinstance(decision, Incomplete):
            pending.retry = self._loop.call_later(PEEK_RETRY, self._peek, pending)
            return
        self._route(pending, decision.sid)

    def _proxy_header(self, pending: _Pending, data: bytes) -> None:
        """Consume the PROXY header (exactly its bytes), keep the client it names, then
        peek at the request line behind it."""
        header = proxy_protocol.parse(data)
        if isinstance(header, proxy_protocol.NeedMore):
            pending.retry = self._loop.call_later(PEEK_RETRY, self._peek, pending)
            return
        if isinstance(header, proxy_protocol.Invalid):
            limited.log(logging.WARNING, "proxy", "closed a connection: %s", header.reason)
            self._drop(pending, "bad_proxy_header")
            return
        try:
            consumed = pending.sock.recv(header.length)  # peeked: they are in the buffer
        except OSError:
            consumed = b""
        if len(consumed) != header.length:
            self._drop(pending, "closed_early")
            return
        pending.proxied = False
        pending.source = header.source
        self._peek(pending)

    def _wait_readable(self, pending: _Pending) -> None:
        pending.reading = True
        self._loop.add_reader(pending.sock.fileno(), self._readable, pending)

    def _readable(self, pending: _Pending) -> None:
        self._stop_reading(pending)
        self._peek(pending)

    def _stop_reading(self, pending: _Pending) -> None:
        if pending.reading:
            pending.reading = False
            self._loop.remove_reader(pending.sock.fileno())

    def _expire(self, pending: _Pending) -> None:
        pending.expiry = None
        if pending.waiting_for_worker:
            limited.log(logging.ERROR, "no worker", "closed a connection: no worker serves")
            self._drop(pending, "no_worker")
            return
        limited.log(
            logging.WARNING,
            "headers",
            "closed a connection that sent no request line within %.1f s (--header-timeout)",
            self.header_timeout,
        )
        self._drop(pending, "header_timeout")

    def _drop(self, pending: _Pending, outcome: str | None = None) -> None:
        self._release(pending)
        pending.sock.close()
        if outcome is not None:
            self._count(outcome)

    def _release(self, pending: _Pending) -> None:
        """Stop watching ``pending`` (its socket stays open)."""
        self._stop_reading(pending)
        for timer in (pending.expiry, pending.retry):
            if timer is not None:
                timer.cancel()
        pending.expiry = pending.retry = None
        self._pending.discard(pending)

    # ---- hand-off ------------------------------------------------------------------

    def _route(self, pending: _Pending, sid: str | None) -> None:
        serving = [key for key in self._workers.serving() if key not in self._gone]
        key = self._balancer.target(sid, serving, self._workers.reports())
        handoff = None if key is None else self._workers.handoff_socket(key)
        if key is None or handoff is None:
            # every worker is (re)starting: wait, until the header timeout at most
            pending.waiting_for_worker = True
            pending.retry = self._loop.call_later(NO_WORKER_RETRY, self._route, pending, sid)
            return
        self._release(pending)
        self._hand(key, handoff, pending.sock, sid, pending.source)

    def _reroute(
        self, conn: socket.socket, sid: str | None, source: tuple[str, int] | None
    ) -> None:
        """``conn`` could not reach its worker (it died): route it again, as if just read."""
        self._route(self._track(conn, source), sid)

    def _hand(
        self,
        key: int,
        handoff: socket.socket,
        conn: socket.socket,
        sid: str | None,
        source: tuple[str, int] | None,
    ) -> None:
        if key not in self._watched:
            self._watched[key] = handoff
            self._loop.add_reader(handoff.fileno(), self._handed_back, handoff)
        queue = self._queues.get(key)
        if queue is not None:
            if len(queue.items) >= MAX_QUEUED:
                limited.log(logging.ERROR, "busy", "worker key %d takes no connections", key)
                conn.close()
                self._count("worker_busy")
                return
            queue.items.append((conn, sid, source))
            return
        sent = self._send(handoff, conn, source)
        if sent is None:
            queue = self._queues[key] = _Queue(handoff)
            queue.items.append((conn, sid, source))
            self._loop.add_writer(handoff.fileno(), self._drain, key)
        elif not sent:
            self._worker_gone(key)
            self._reroute(conn, sid, source)

    def _send(
        self, handoff: socket.socket, conn: socket.socket, source: tuple[str, int] | None
    ) -> bool | None:
        """Pass ``conn`` on and close it here: True. None if the hand-off socket is full,
        False if the worker is gone (its exit not yet seen); ``conn`` is kept then."""
        try:
            socket.send_fds(handoff, [connection_message(source)], [conn.fileno()])
        except BlockingIOError:
            return None
        except OSError as exc:
            log.debug("hand-off failed: %s", exc)
            return False
        conn.close()
        self._count("handed")
        return True

    def _drain(self, key: int) -> None:
        queue = self._queues[key]
        if key not in self._workers.serving():  # told to stop meanwhile: it takes no more
            self._worker_gone(key)
            return
        while queue.items:
            conn, _, source = queue.items[0]
            sent = self._send(queue.sock, conn, source)
            if sent is None:
                return
            if not sent:
                self._worker_gone(key)
                return
            queue.items.popleft()
        self._loop.remove_writer(queue.sock.fileno())
        del self._queues[key]

    def _handed_back(self, handoff: socket.socket) -> None:
        """A stopping worker gave back connections it had not taken (see
        ``workers.handoff``): their first request is unread, so they are routed anew, with
        the client address they travelled with."""
        while True:
            try:
                message, fds, _, _ = socket.recv_fds(handoff, 64, 1)
            except OSError:  # BlockingIOError: nothing more now
                return
            if not message and not fds:  # the worker is gone; its exit is handled
                self._loop.remove_reader(handoff.fileno())
                return
            for fd in fds:
                self._count("handed_back")
                self._peek(self._track(socket.socket(fileno=fd), source_of(message)))

    def _worker_gone(self, key: int) -> None:
        """Worker ``key`` cannot take connections any more: none go to it from now on, and
        those waiting for it go elsewhere."""
        self._gone.add(key)
        queue = self._queues.pop(key, None)
        if queue is None:
            return
        self._loop.remove_writer(queue.sock.fileno())
        for conn, sid, source in queue.items:
            self._reroute(conn, sid, source)
