"""A listening site that closes a connection whose first request's headers do not arrive in time.

aiohttp reads request headers with no deadline of its own (slowloris): 1,500 connections that
each sent half a request line stayed open for as long as their senders liked, each holding a
file descriptor and a buffer. Depending on the aiohttp version, its keep-alive timer may or may
not cover a connection that never completes a request. This site gives every accepted
connection ``seconds`` to deliver its first request's headers, whatever the version: a timer
per connection, disarmed by an application middleware, which aiohttp calls once the headers
are parsed. A connection still without a request when the timer fires is closed and counted.

Later requests on a kept-alive connection are covered by aiohttp's ``keepalive_timeout``,
which closes a connection with no request in progress.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

Fronting = Callable[
    [Callable[[], asyncio.BaseProtocol], str | None], Callable[[], asyncio.BaseProtocol]
]
"""Given aiohttp's protocol factory and the client a hand-off names, the factory to serve
with: the worker's own connection layer goes in front (:mod:`workers.conn.front`)."""


def aiohttp_only(
    factory: Callable[[], asyncio.BaseProtocol], _: str | None
) -> Callable[[], asyncio.BaseProtocol]:
    """No layer in front: aiohttp serves every connection."""
    return factory


class HeaderDeadline:
    """The per-connection timers, and the middleware that disarms them."""

    def __init__(self, seconds: float, on_expired: Callable[[], None]) -> None:
        self.seconds = seconds
        self._on_expired = on_expired
        # the armed timers; a connection is held here at most ``seconds``
        self._timers: dict[object, asyncio.TimerHandle] = {}

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Disarm the timer of the request's connection: its headers have arrived."""
        timer = self._timers.pop(request.protocol, None)
        if timer is not None:
            timer.cancel()
        return await handler(request)

    def watch(self, connection: RequestHandler) -> None:
        """Close ``connection`` in ``seconds`` unless a request has arrived on it by then."""
        loop = asyncio.get_running_loop()
        self._timers[connection] = loop.call_later(self.seconds, self._expire, connection)

    def watched(self, server: web.Server) -> Callable[[], RequestHandler]:
        """A protocol factory for ``server`` whose every connection is watched."""

        def connection() -> RequestHandler:
            handler = server()
            self.watch(handler)
            return handler

        return connection

    def _expire(self, connection: RequestHandler) -> None:
        del self._timers[connection]
        transport = connection.transport
        if transport is None:  # the client has gone already
            return
        transport.close()
        self._on_expired()


class DeadlineSite(web.BaseSite):
    """A TCP site (as aiohttp's ``TCPSite``, with SO_REUSEPORT) whose connections are watched.

    Built on aiohttp's public ``BaseSite`` contract only (``start`` registers the site with its
    runner, ``stop`` unregisters it) and ``web.Server`` as the protocol factory: the listening
    server is this class's own, closed by its own :meth:`stop`, so no aiohttp internal is
    read or written (aiohttp's ``runner.addresses``, unused here, does not list it).
    """

    def __init__(
        self,
        runner: web.AppRunner,
        host: str,
        port: int,
        deadline: HeaderDeadline,
        fronting: Fronting = aiohttp_only,
    ) -> None:
        super().__init__(runner)
        self._app_runner = runner
        self._address = (host, port)
        self._deadline = deadline
        self._fronting = fronting
        self._listener: asyncio.Server | None = None

    @property
    def name(self) -> str:
        host, port = self._address
        return f"http://{host}:{port}"

    async def start(self) -> None:
        await super().start()
        server = self._app_runner.server
        assert server is not None  # the runner is set up before its sites start
        host, port = self._address
        # reuse_port: during a rolling restart the new process listens beside the old one
        self._listener = await asyncio.get_running_loop().create_server(
            self._fronting(self._deadline.watched(server), None),
            host,
            port,
            reuse_address=True,
            reuse_port=True,
        )

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()
        await super().stop()
