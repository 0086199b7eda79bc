"""One worker process: a python-socketio server on aiohttp and uvloop, linked to its master.

Lifecycle: open the pipe, load the user's app, say Hello (with the namespaces it
serves), listen, say Ready. Then serve until SIGTERM arrives (the master's
supervisor sends it) or the pipe closes (the master died); then stop accepting, close every
client properly (engine.io CLOSE, so clients reconnect elsewhere) and exit.
SIGINT is ignored: a Ctrl-C on the terminal reaches the master, which stops us.

Health pings come on a second socketpair, not on the pipe: deliveries queued for this
worker must never delay its answer (the master would take a busy worker for a stuck one),
while a stopped or spinning event loop still answers nothing.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import socket
from collections.abc import Callable
from typing import Any, NoReturn

import socketio
from aiohttp import web

from sio_cluster.common.config import Config
from sio_cluster.common.forwarded import TrustedHosts
from sio_cluster.common.logformat import adopt_library_loggers
from sio_cluster.common.memtrim import MemoryTrimmer
from sio_cluster.wire.frames import (
    BAD_CLIENTS_DROPPED,
    BROADCASTS_READ,
    CLIENTS_GONE_MID_ANSWER,
    CLIENTS_SERVED,
    CONNECTIONS_REFUSED,
    EIO3_CLIENTS,
    HANDOFFS_TAKEN,
    HEADER_TIMEOUTS,
    SLOW_CLIENT_BYTES_DROPPED,
    SLOW_CLIENTS_DROPPED,
    V09_BAD_FRAMES,
    V09_CLIENTS,
    Broadcast,
    Failed,
    Frame,
    Hello,
    Ping,
    Pong,
    Ready,
    Request,
    Response,
    Restored,
    Synced,
)
from sio_cluster.wire.handoff import NO_HANDOFF
from sio_cluster.wire.link import FrameLink
from sio_cluster.workers import gone_clients, lost_sessions, patches
from sio_cluster.workers.admin import AdminUI
from sio_cluster.workers.app_loader import AppLoadError, apply_app, describe_error, load_app
from sio_cluster.workers.apps import environ
from sio_cluster.workers.apps.adopt import Origins, adopt
from sio_cluster.workers.apps.asgi_bridge import AsgiBridge
from sio_cluster.workers.apps.forms import AiohttpApp, AsgiApp, SetupApp, UserApp, identify
from sio_cluster.workers.client_address import ClientAddress
from sio_cluster.workers.conn.layer import Layer, engineio_path
from sio_cluster.workers.eio3.translate import Eio3Clients
from sio_cluster.workers.handoff import HandoffSite, close_after_response, prefix_sids
from sio_cluster.workers.header_deadline import DeadlineSite, Fronting, HeaderDeadline, aiohttp_only
from sio_cluster.workers.manager import ClusterManager
from sio_cluster.workers.partial_packets import PartialPackets
from sio_cluster.workers.patches import checks
from sio_cluster.workers.patches import engineio as eio_patches
from sio_cluster.workers.patches.versions import CompatError
from sio_cluster.workers.recovery import WorkerRecovery
from sio_cluster.workers.transport import fast_ws
from sio_cluster.workers.transport.fast_ws import Counters
from sio_cluster.workers.v09.server import V09Clients

log = logging.getLogger(__name__)

# An idle kept-alive HTTP connection is closed after this long (aiohttp's default differs
# between versions: 75 s, later 3,630 s); a long-poll GET is never idle for more than ~25 s.
KEEPALIVE_SECONDS = 75.0
ORPHAN_EXIT_SECONDS = 1.0  # the master is gone: close clients briefly, then exit
QUIET_BROADCASTS = 1000  # fewer read between two pings: quiet enough to trim memory


class Worker:
    """Serves Socket.IO on one port and exchanges frames with the master."""

    def __init__(
        self, worker_id: int, config: Config, handoff_fd: int = NO_HANDOFF, key: int = 0
    ) -> None:
        self.worker_id = worker_id
        self.config = config
        self.port = config.worker_port(worker_id)
        self.handoff_fd = handoff_fd  # one port per host: the master hands connections here
        self.key = key
        # built before the pipe is read: a frame may be waiting in it already
        self.link = FrameLink(self.on_frame, self.on_lost, config.worker_buffer_bytes)
        self.health = FrameLink(self.on_health, lambda exc: None, config.worker_buffer_bytes)
        self.broadcasts_read = 0
        self._read_at_last_ping = 0
        self._trimmer = MemoryTrimmer()
        self._load: Callable[[], dict[str, int]] = dict  # what it serves, once it serves
        self.manager = ClusterManager(self.link, sequenced=bool(config.connection_state_recovery))
        self.recovery: WorkerRecovery | None = None
        self.eio3: Eio3Clients | None = None
        self.v09: V09Clients | None = None
        self.layer: Layer | None = None
        self._stop = asyncio.Event()
        self._orphaned = False

    def on_frame(self, frame: Frame, body: bytes) -> None:
        """Every frame the master sends is handled here, by its class."""
        match frame:
            case Broadcast(namespace, rooms, exclude, parts):
                self.broadcasts_read += 1
                try:
                    self.manager.deliver(namespace, rooms, exclude, parts)
                except Exception:  # one bad delivery must not stop the link
                    log.exception("delivery to namespace %r failed", namespace)
            case Request():
                self.manager.rpc.on_request(frame)
            case Response():
                self.manager.rpc.on_response(frame)
            case Synced(token):
                self.manager.synced(token)
            case Restored() if self.recovery is not None:
                self.recovery.on_restored(frame)
            case _:
                log.warning("unexpected %s frame from the master", type(frame).__name__)

    def on_health(self, frame: Frame, body: bytes) -> None:
        """A Ping on the health channel: answered at once with this worker's counters."""
        if not isinstance(frame, Ping):
            log.warning("unexpected %s frame on the health channel", type(frame).__name__)
            return
        stats = {
            SLOW_CLIENTS_DROPPED: Counters.dropped,
            SLOW_CLIENT_BYTES_DROPPED: Counters.dropped_bytes,
            BAD_CLIENTS_DROPPED: Counters.bad_clients,
            CONNECTIONS_REFUSED: Counters.refused,
            HEADER_TIMEOUTS: Counters.header_timeouts,
            CLIENTS_GONE_MID_ANSWER: gone_clients.GoneClients.count,
            EIO3_CLIENTS: 0 if self.eio3 is None else len(self.eio3.sessions),
            V09_CLIENTS: 0 if self.v09 is None else len(self.v09.sessions),
            V09_BAD_FRAMES: 0 if self.v09 is None else self.v09.bad_frames,
            BROADCASTS_READ: self.broadcasts_read,
            **self._load(),
        }
        self.health.send(Pong(frame.token, stats).encode(), droppable=False)
        if self.broadcasts_read - self._read_at_last_ping < QUIET_BROADCASTS:
            self._trimmer.quiet()
        self._read_at_last_ping = self.broadcasts_read

    def on_lost(self, exc: Exception | None) -> None:
        if not self._stop.is_set():
            log.warning("pipe to the master closed; exiting")
            self._orphaned = True
            self.manager.release_waiters()
            self.manager.rpc.fail_all("the master is gone")
            self._stop.set()

    async def _refuse_client(self, sio: socketio.AsyncServer, eio_sid: str, why: str) -> None:
        """A client sent what cannot be used (see ``workers.patches.socketio.guard_messages``):
        counted, closed, logged at most once per 10 s."""
        fast_ws.bad_client(why)
        if self.recovery is not None:
            self.recovery.refused(eio_sid)
        eio_socket = eio_patches.eio_sockets(sio).get(eio_sid)
        await sio.eio.disconnect(eio_sid)
        if eio_socket is not None:
            eio_patches.stop_writer(eio_socket)  # a websocket gets its close frame too

    def _full(self) -> None:
        Counters.refused += 1
        fast_ws.client_refusals.log(
            logging.WARNING,
            "full",
            "refused a connection: %d open (--max-connections)",
            self.config.max_connections,
        )

    def _late_headers(self) -> None:
        Counters.header_timeouts += 1
        fast_ws.client_refusals.log(
            logging.WARNING,
            "headers",
            "closed a connection that sent no request within %.1f s (--header-timeout)",
            self.config.header_timeout,
        )

    async def _healthz(self, sio: socketio.AsyncServer) -> web.Response:
        """``GET /healthz``: 200 while this worker serves and its master is there; 503 once
        it is stopping or orphaned (a balancer's HTTP check takes it out of the pool)."""
        healthy = not self._stop.is_set()
        state = {
            "status": "ok" if healthy else "stopping",
            "worker": self.worker_id,
            "pid": os.getpid(),
            "connections": len(eio_patches.eio_sockets(sio)),
        }
        return web.json_response(state, status=200 if healthy else 503)

    def _namespaces(self, sio: socketio.AsyncServer) -> tuple[str, ...] | str:
        if sio.namespaces == "*":
            return "*"
        names = set(sio.namespaces) | set(sio.handlers) | set(sio.namespace_handlers)
        return tuple(sorted(names))

    async def serve(self, fd: int, health_fd: int) -> bool:
        """Run until stopped (see the module docstring); True if the master is gone."""
        await self.link.attach(socket.socket(fileno=fd))
        await self.health.attach(socket.socket(fileno=health_fd))
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._stop.set)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        config = self.config
        origins = list(config.cors_allowed_origins) or None
        try:
            user_app = identify(load_app(config.app, config.app_dir), config.app)
            sio = self._server(user_app, origins if origins != ["*"] else "*")
        except AppLoadError as exc:
            self._cannot_start(str(exc))
        adopt_library_loggers()
        lost_sessions.install()
        gone_clients.install()
        try:
            checks.check(sio)  # the dependency internals we rely on, checked once
        except CompatError as exc:
            self._cannot_start(str(exc))
        if config.allow_eio3:
            try:
                checks.check_eio3(sio)
            except CompatError as exc:
                self._cannot_start(str(exc))
            self.eio3 = Eio3Clients(sio)
        refuse = functools.partial(self._refuse_client, sio)
        unfinished = f"a binary packet unfinished after {config.partial_packet_timeout:g} s"
        partial = PartialPackets(
            config.partial_packet_bytes,
            config.partial_worker_bytes,
            config.partial_packet_timeout,
            lambda eio_sid: sio.start_background_task(refuse, eio_sid, unfinished),
        )
        patches.install(  # in the order workers.patches.install documents
            sio, refuse, partial, config.max_connections, self._full
        )
        if self.eio3 is not None:
            self.eio3.install()
            self.manager.fixed_sid = self.eio3.sid_for
        if config.allow_v09:
            try:
                checks.check_v09(sio)
            except CompatError as exc:
                self._cannot_start(str(exc))
            self.v09 = V09Clients(
                sio, fast_ws.bad_client, _slow_v09_client, checks.v09_direct_writes()
            )
            eio_patches.observe_eio_event(sio.eio, "disconnect", self.v09.forget)
            self.manager.fixed_sid = _first_sid(self.v09.sid_for, self.manager.fixed_sid)
        deadline = HeaderDeadline(config.header_timeout, self._late_headers)
        if isinstance(user_app, AiohttpApp):
            app = user_app.web_app  # the user's, with the worker's deadline and /healthz
            app.middlewares.insert(0, deadline.middleware)
        else:
            app = web.Application(middlewares=[deadline.middleware])
        try:
            app.router.add_get("/healthz", lambda _: self._healthz(sio))
        except RuntimeError:  # aiohttp: the user's web.Application has its own GET /healthz
            self._cannot_start(
                f"--app {config.app!r}: the application routes GET /healthz, the worker's"
                " health endpoint; move that route"
            )
        if self.v09 is not None:
            self.v09.add_routes(app)  # before an ASGI app's catch-all route
        bridge = (
            AsgiBridge(user_app.asgi_app, user_app.path) if isinstance(user_app, AsgiApp) else None
        )
        environ.install(sio, None if bridge is None else bridge.state)
        if isinstance(user_app, SetupApp):
            try:
                await apply_app(user_app.setup, sio, app)
            except Exception as exc:  # the user's setup raised: what and where, in one line
                log.debug("--app %r raised", config.app, exc_info=True)
                self._cannot_start(f"--app {config.app!r} raised {describe_error(exc)}")
        if config.connection_state_recovery:
            try:
                checks.check_recovery(sio)
            except CompatError as exc:
                self._cannot_start(str(exc))
            self.recovery = WorkerRecovery(sio, self.manager)
            self.recovery.install()
        if config.admin_ui:
            AdminUI(sio, self.manager, config.admin_credentials()).install()
        try:
            # each patch above, seen taking hold
            await checks.exercise(
                bool(config.connection_state_recovery), config.allow_eio3, config.allow_v09
            )
        except CompatError as exc:
            self._cannot_start(str(exc))
        if bridge is not None:
            failed = await bridge.lifespan.start()
            if failed is not None:
                self._cannot_start(
                    f"--app {config.app!r}: the ASGI lifespan startup failed: {failed}"
                )
        self.link.send(Hello(self.worker_id, os.getpid(), self._namespaces(sio)).encode())

        addresses = ClientAddress(
            TrustedHosts(config.forwarded_allow_ips) if config.proxy_headers else None,
            config.header_timeout,
        )
        if config.proxy_headers or config.proxy_protocol:
            app.middlewares.append(addresses.middleware)
        if self.handoff_fd != NO_HANDOFF:
            prefix_sids(sio.eio, self.key)
            app.on_response_prepare.append(close_after_response)
        if bridge is not None:
            sio.attach(app, bridge.reserved)
            app.router.add_route("*", "/{tail:.*}", bridge.handle)  # after every other route
        elif not isinstance(user_app, AiohttpApp):  # the user attached theirs
            sio.attach(app)
        runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=2.0,
            keepalive_timeout=KEEPALIVE_SECONDS,
        )
        await runner.setup()
        self.layer = self._layer(sio, app, bridge, [deadline.middleware, addresses.middleware])
        if self.layer is None and self.eio3 is not None:
            self._cannot_start(
                "--allow-eio3 needs the worker's connection layer, which serves Engine.IO 3"
                " (python-engineio does not): not with --ws aiohttp, nor with an aiohttp app"
                " whose own middlewares guard the handshakes"
            )
        fronting: Fronting = aiohttp_only if self.layer is None else self.layer.fronting
        site: web.BaseSite
        if self.handoff_fd != NO_HANDOFF:
            handoff = socket.socket(fileno=self.handoff_fd)
            site = HandoffSite(runner, handoff, deadline, addresses, fronting)
            await site.start()
            log.info("serving %s:%d through the master", config.host, self.port)
        else:
            site = DeadlineSite(runner, config.host, self.port, deadline, fronting)
            try:
                await site.start()
            except OSError as exc:
                self._cannot_start(f"cannot listen on {config.host}:{self.port}: {exc}")
            log.info("listening on %s:%d", config.host, self.port)
        self._load = functools.partial(_load, sio, runner, site)
        self.link.send(Ready(self.port).encode(), droppable=False)

        await self._stop.wait()
        try:
            timeout = ORPHAN_EXIT_SECONDS if self._orphaned else config.graceful_timeout
            await asyncio.wait_for(self._shutdown(site, runner, sio, bridge), timeout)
        except TimeoutError:
            log.warning("graceful shutdown timed out; exiting anyway")
        self.link.close()
        self.health.close()
        return self._orphaned

    def _layer(
        self,
        sio: socketio.AsyncServer,
        app: web.Application,
        bridge: AsgiBridge | None,
        own: list[Any],
    ) -> Layer | None:
        """The workers' own connection layer (``--ws own``) in front of aiohttp, for the path
        engine.io is routed on; None with ``--ws aiohttp``, or when the user's aiohttp app
        has middlewares of its own (``own``: the worker's): they guard its requests, the
        websocket handshakes included, and only aiohttp runs them."""
        if self.config.ws != "own":
            return None
        path = engineio_path(app, sio.eio)
        if path is None:
            log.warning("engine.io is not routed in the app; aiohttp serves every connection")
            return None
        theirs = [m for m in app.middlewares if m not in own]
        if theirs:
            if self.worker_id == 0:
                log.info(
                    "the app's aiohttp middlewares (%s) guard its requests: aiohttp serves every"
                    " connection, as with --ws aiohttp",
                    ", ".join(getattr(m, "__name__", repr(m)) for m in theirs),
                )
            return None
        config = self.config
        eio3 = self.eio3
        return Layer(
            sio.eio,
            path,
            config.header_timeout,
            self._late_headers,
            TrustedHosts(config.forwarded_allow_ips) if config.proxy_headers else None,
            None if bridge is None else bridge.state,
            app=app,
            keep_alive=KEEPALIVE_SECONDS,
            # handed-off connections carry one request each: the master routes by request
            close_after_answer=self.handoff_fd != NO_HANDOFF,
            allow_eio3=eio3 is not None,
        )

    def _server(self, user_app: UserApp, origins: Origins) -> socketio.AsyncServer:
        """The server that serves: the user's own, adopted (:mod:`workers.apps.adopt`), or for
        the ``setup`` form one the worker builds."""
        if isinstance(user_app, SetupApp):
            return socketio.AsyncServer(
                async_mode="aiohttp", client_manager=self.manager, cors_allowed_origins=origins
            )
        adopt(user_app.sio, self.manager, origins, self.config.app, warn=self.worker_id == 0)
        return user_app.sio

    def _cannot_start(self, reason: str) -> NoReturn:
        """End a start that cannot succeed: its one-line reason goes to the master, which logs
        it with the exit (``cluster failed to start: worker 0 exited with code 1: ...``, or
        the respawn's line); exit 1 without a traceback."""
        self._stop.set()  # the pipe closing now is ours, not the master's
        self.link.send(Failed(reason).encode(), droppable=False)
        self.link.close()
        raise SystemExit(1)

    async def _shutdown(
        self,
        site: web.BaseSite,
        runner: web.AppRunner,
        sio: socketio.AsyncServer,
        bridge: AsgiBridge | None,
    ) -> None:
        """Stop listening, tell every client to go, and end as soon as their connections do.

        Every engine.io socket gets its CLOSE packet, so clients reconnect elsewhere: a
        websocket also gets a close frame (its writer is stopped), a pending long-poll GET
        is answered with the CLOSE. Nothing waits for an idle long-polling client to come
        and fetch its CLOSE (python-socketio's ``disconnect()`` would, until the graceful
        timeout): its session is simply dropped, and its next request finds it gone.
        """
        if self.layer is not None:
            self.layer.stop()
        await site.stop()
        sockets = eio_patches.eio_sockets(sio)
        for eio_socket in list(sockets.values()):
            await eio_socket.close(wait=False, reason=sio.eio.reason.SERVER_DISCONNECT)
            eio_patches.stop_writer(eio_socket)
        eio_patches.forget_eio_sockets(sio)
        if self.layer is not None:
            await self.layer.drain()
        await sio.shutdown()
        await runner.cleanup()
        if bridge is not None:
            await bridge.lifespan.stop()  # the ASGI app's, once its connections are closed
        log.info("stopped")


def _slow_v09_client(unread: int) -> None:
    """A socket.io 0.9 client left too much unread: counted as a slow client."""
    Counters.dropped += 1
    Counters.dropped_bytes += unread
    fast_ws.client_refusals.log(
        logging.WARNING, "slow", "dropped a socket.io 0.9 client with %d characters unread", unread
    )


FixedSid = Callable[[str, str], str | None]


def _first_sid(first: FixedSid, then: FixedSid) -> FixedSid:
    """The socket id ``first`` gives, else the one ``then`` gives (each knows its clients)."""

    def fixed(eio_sid: str, namespace: str) -> str | None:
        sid = first(eio_sid, namespace)
        return sid if sid is not None else then(eio_sid, namespace)

    return fixed


def run(worker_id: int, fd: int, health_fd: int, config: Config, handoff_fd: int, key: int) -> None:
    """Process entry point: serve on uvloop, then exit."""
    import uvloop

    orphaned = uvloop.run(Worker(worker_id, config, handoff_fd, key).serve(fd, health_fd))
    if orphaned:
        # Nobody supervises us any more: skip interpreter teardown so the exit is prompt.
        logging.shutdown()
        os._exit(0)


def _load(sio: socketio.AsyncServer, runner: web.AppRunner, site: web.BaseSite) -> dict[str, int]:
    """What the one-port balancer weighs this worker by (see master.acceptor.balance)."""
    server = runner.server
    connections = 0 if server is None else len(server.connections)
    return {
        CLIENTS_SERVED: max(connections, len(eio_patches.eio_sockets(sio))),
        HANDOFFS_TAKEN: site.taken if isinstance(site, HandoffSite) else 0,
    }
