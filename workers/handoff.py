"""One port per host, the worker's side: serve the connections the master hands over.

The master accepts every connection on the host's port and passes the descriptor of each
over this worker's hand-off socket (see :mod:`master.acceptor.listener` and
:mod:`wire.handoff`); its first request is still unread in the kernel's buffer. The worker
adopts it as if its own listener had accepted it: ``loop.connect_accepted_socket`` with the
aiohttp server's protocol factory (``AppRunner.server``, public), watched by the header
deadline as every accepted connection is.

Two rules keep each request on the worker of its session:

- every engine.io sid this worker makes starts with its process key (:func:`prefix_sids`),
  which is all the master reads to route a request of an existing session;
- every answer that is not a websocket upgrade carries ``Connection: close``
  (:func:`close_after_response`), so a connection carries one request and the next request
  comes back through the master. Why not keep-alive plus a hand-back: a browser or a proxy
  reuses a kept-alive connection for any request to the same origin, another tab's session
  included, and aiohttp has no public way to give back a connection whose bytes it has read.
  What it costs (a TCP connect and a hand-off per long-poll request) is measured in README,
  One port per host.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
from collections.abc import Callable

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from sio_cluster.wire.handoff import sid_prefix, source_of
from sio_cluster.workers.client_address import ClientAddress
from sio_cluster.workers.header_deadline import Fronting, HeaderDeadline, aiohttp_only

log = logging.getLogger(__name__)

RECEIVE_BYTES = 16  # a hand-off message is one byte; its descriptor rides beside it


def prefix_sids(eio: object, key: int) -> None:
    """Make ``eio`` (an ``engineio.AsyncServer``) start every sid it generates with this
    process's key, through its public ``generate_id``."""
    prefix = sid_prefix(key)
    generate: Callable[[], str] = eio.generate_id  # type: ignore[attr-defined]

    def prefixed() -> str:
        return prefix + generate()

    eio.generate_id = prefixed  # type: ignore[attr-defined]


async def close_after_response(_: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: one request per connection, except a websocket's."""
    if response.status != 101:
        response.force_close()
        response.headers["Connection"] = "close"


class HandoffSite(web.BaseSite):
    """A site that serves what arrives on the hand-off socket instead of listening.

    Built on aiohttp's public ``BaseSite`` contract, as :class:`DeadlineSite` is.
    """

    def __init__(
        self,
        runner: web.AppRunner,
        handoff: socket.socket,
        deadline: HeaderDeadline,
        addresses: ClientAddress,
        fronting: Fronting = aiohttp_only,
    ) -> None:
        super().__init__(runner)
        self._fronting = fronting
        self._app_runner = runner
        self._handoff = handoff
        self._deadline = deadline
        self._addresses = addresses
        self._adopting: set[asyncio.Task[object]] = set()
        self._reading = False
        self.taken = 0  # connections adopted (or dropped), ever: reported to the master,
        # so it knows what still waits here (see master.acceptor.balance)

    @property
    def name(self) -> str:
        return "the master's hand-off socket"

    async def start(self) -> None:
        await super().start()
        server = self._app_runner.server
        assert server is not None  # the runner is set up before its sites start
        self._factory = self._deadline.watched(server)
        self._handoff.setblocking(False)
        asyncio.get_running_loop().add_reader(self._handoff.fileno(), self._receive)
        self._reading = True

    async def stop(self) -> None:
        self._stop_reading()
        self._hand_back()
        await super().stop()

    def _hand_back(self) -> None:
        """Give the master back what it passed and this stopping worker has not taken (it
        stops passing any once it has told us to stop): their first request is still unread
        in the kernel, and the master routes them again, to a serving worker."""
        while True:
            try:
                message, fds, _, _ = socket.recv_fds(self._handoff, RECEIVE_BYTES, 1)
            except OSError:  # BlockingIOError: nothing is left
                return
            if not message and not fds:
                return
            for fd in fds:
                try:
                    socket.send_fds(self._handoff, [message], [fd])
                except OSError as exc:
                    log.warning("could not hand a connection back to the master: %s", exc)
                finally:
                    os.close(fd)

    def _stop_reading(self) -> None:
        if self._reading:
            self._reading = False
            asyncio.get_running_loop().remove_reader(self._handoff.fileno())

    def _receive(self) -> None:
        while self._reading:
            try:
                message, fds, _, _ = socket.recv_fds(self._handoff, RECEIVE_BYTES, 1)
            except BlockingIOError:
                return
            except OSError as exc:
                log.error("hand-off socket failed: %s", exc)
                self._stop_reading()
                return
            if not message and not fds:  # the master is gone; the pipe says so too
                self._stop_reading()
                return
            source = source_of(message)
            for fd in fds:
                self._adopt(socket.socket(fileno=fd), None if source is None else source[0])

    def _adopt(self, conn: socket.socket, client: str | None) -> None:
        conn.setblocking(False)
        factory = self._factory
        if client is not None:

            def factory() -> RequestHandler:
                handler = self._factory()
                self._addresses.remember(handler, client)
                return handler

        loop = asyncio.get_running_loop()
        task: asyncio.Task[object] = loop.create_task(
            loop.connect_accepted_socket(self._fronting(factory, client), conn)
        )
        self._adopting.add(task)
        task.add_done_callback(functools.partial(self._adopted, conn))

    def _adopted(self, conn: socket.socket, task: asyncio.Task[object]) -> None:
        self._adopting.discard(task)
        self.taken += 1  # from now on it is among aiohttp's connections, or closed
        if task.cancelled() or task.exception() is not None:
            log.debug("a handed-over connection could not be adopted: %r", task)
            conn.close()
