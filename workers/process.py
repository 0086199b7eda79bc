"""One worker process: a python-socketio server on aiohttp and uvloop, linked to its master.

Lifecycle: open the pipe, load the user's app, say HELLO (with the namespaces it
serves), listen, say READY. Then serve until the master sends STOP, SIGTERM
arrives, or the pipe closes (the master died); then stop accepting, close every
client properly (engine.io CLOSE, so clients reconnect elsewhere) and exit.
SIGINT is ignored: a Ctrl-C on the terminal reaches the master, which stops us.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from typing import Any

import socketio
from aiohttp import web

from wire.frames import Kind, encode_frame
from wire.link import FrameLink
from wire.rpc import Rpc
from workers.app_loader import apply_app, load_app
from workers.fast_ws import CoalescingWebSocket, SlowClients
from workers.local_ops import handle_request
from workers.manager import ClusterManager

log = logging.getLogger(__name__)

ORPHAN_EXIT_SECONDS = 1.0  # the master is gone: close clients briefly, then exit


class Worker:
    """Serves Socket.IO on one port and exchanges frames with the master."""

    def __init__(self, worker_id: int, fd: int, config: dict[str, Any]) -> None:
        self.worker_id = worker_id
        self.fd = fd
        self.config = config
        self.port = int(config["port"]) + worker_id
        self.manager = ClusterManager()
        self._stop = asyncio.Event()
        self._orphaned = False

    def _on_frame(self, kind: Kind, fields: list[Any], body: bytes) -> None:
        if kind is Kind.BROADCAST:
            try:
                self.manager.deliver(*fields)
            except Exception:  # one bad delivery must not stop the link
                log.exception("delivery to namespace %r failed", fields[0] if fields else None)
        elif kind is Kind.REQUEST or kind is Kind.RESPONSE:
            assert self.manager.rpc is not None
            self.manager.rpc.on_frame(kind, fields)
        elif kind is Kind.SYNCED:
            self.manager.synced(*fields)
        elif kind is Kind.PING:
            assert self.manager.link is not None
            stats = {"slow_clients_dropped": SlowClients.dropped}
            self.manager.link.send(encode_frame(Kind.PONG, *fields, stats), droppable=False)
        elif kind is Kind.STOP:
            log.info("stop requested by the master")
            self._stop.set()
        else:
            log.warning("unexpected frame %s from the master", kind.name)

    def _on_lost(self, exc: Exception | None) -> None:
        if not self._stop.is_set():
            log.warning("pipe to the master closed; exiting")
            self._orphaned = True
            self.manager.release_waiters()
            if self.manager.rpc is not None:
                self.manager.rpc.fail_all("the master is gone")
            self._stop.set()

    def _namespaces(self, sio: socketio.AsyncServer) -> list[str] | str:
        if sio.namespaces == "*":
            return "*"
        names = set(sio.namespaces) | set(sio.handlers) | set(sio.namespace_handlers)
        return sorted(names)

    async def serve(self) -> bool:
        """Run until stopped (see the module docstring); True if the master is gone."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._stop.set)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        sock = socket.socket(fileno=self.fd)
        link = await FrameLink.open(
            sock, self._on_frame, self._on_lost, int(self.config["worker_buffer_bytes"])
        )
        self.manager.link = link
        self.manager.rpc = Rpc(
            lambda frame: link.send(frame, droppable=False),
            lambda operation, args: handle_request(self.manager, operation, args),
        )
        origins = list(self.config["cors_allowed_origins"]) or None
        sio = socketio.AsyncServer(
            async_mode="aiohttp",
            client_manager=self.manager,
            cors_allowed_origins=origins if origins != ["*"] else "*",
        )
        # each tick's frames to a connection in one write (see workers.fast_ws)
        sio.eio._async = {**sio.eio._async, "websocket": CoalescingWebSocket}
        await apply_app(load_app(self.config["app"], self.config["app_dir"]), sio)
        link.send(encode_frame(Kind.HELLO, self.worker_id, os.getpid(), self._namespaces(sio)))

        app = web.Application()
        sio.attach(app)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(runner, self.config["host"], self.port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            log.error("cannot listen on %s:%d: %s", self.config["host"], self.port, exc)
            raise SystemExit(1) from None
        log.info("listening on %s:%d", self.config["host"], self.port)
        link.send(encode_frame(Kind.READY, self.port), droppable=False)

        await self._stop.wait()
        try:
            timeout = (
                ORPHAN_EXIT_SECONDS if self._orphaned else float(self.config["graceful_timeout"])
            )
            await asyncio.wait_for(self._shutdown(site, runner, sio), timeout)
        except TimeoutError:
            log.warning("graceful shutdown timed out; exiting anyway")
        link.close()
        return self._orphaned

    async def _shutdown(
        self, site: web.TCPSite, runner: web.AppRunner, sio: socketio.AsyncServer
    ) -> None:
        await site.stop()
        sockets = list(sio.eio.sockets.values())
        if sockets:
            await sio.eio.disconnect()  # engine.io CLOSE to each client: they reconnect elsewhere
        for eio_socket in sockets:
            # engine.io's writer closes the websocket (close frame) once it dequeues None;
            # without this the connection lingers until the client hangs up.
            eio_socket.queue.put_nowait(None)
        await sio.shutdown()
        await runner.cleanup()
        log.info("stopped")


def run(worker_id: int, fd: int, config: dict[str, Any]) -> None:
    """Process entry point: serve on uvloop, then exit."""
    import uvloop

    orphaned = uvloop.run(Worker(worker_id, fd, config).serve())
    if orphaned:
        # Nobody supervises us any more: skip interpreter teardown so the exit is prompt.
        logging.shutdown()
        os._exit(0)
