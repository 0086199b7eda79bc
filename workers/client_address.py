"""The client's real address as the app sees it (``request.remote``), behind a balancer.

Two sources, both believed only from a peer in ``--forwarded-allow-ips`` (uvicorn's rules,
see :mod:`common.forwarded`): the PROXY header the master read before handing the connection
over (``--proxy-protocol``; the address travels with the descriptor, see
:mod:`workers.handoff`), and ``X-Forwarded-For`` (``--proxy-headers``). A middleware hands the
app a request whose ``remote`` is the client (aiohttp's public ``Request.clone``); engine.io
keeps that request as ``environ["aiohttp.request"]``, where a handler reads it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from sio_cluster.common.forwarded import TrustedHosts, forwarded_client

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ClientAddress:
    """What each handed-over connection's PROXY header said, and the middleware using it."""

    def __init__(self, header_proxies: TrustedHosts | None, header_timeout: float) -> None:
        """``header_proxies``: with ``--proxy-headers``, the peers whose X-Forwarded-For
        is believed; None believes none."""
        self._header_proxies = header_proxies
        self._header_timeout = header_timeout
        self._sources: dict[RequestHandler, str] = {}

    def remember(self, connection: RequestHandler, host: str) -> None:
        """``connection``'s client is ``host`` (a trusted PROXY header said so).

        Kept until its request comes (a handed-over connection carries one: see
        :mod:`workers.handoff`), at most until the header deadline has closed it.
        """
        self._sources[connection] = host
        loop = asyncio.get_running_loop()
        loop.call_later(self._header_timeout + 1, self._sources.pop, connection, None)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        remote = self._sources.pop(request.protocol, request.remote)
        forwarded = request.headers.get("X-Forwarded-For")
        if forwarded and self._header_proxies is not None and remote in self._header_proxies:
            remote = forwarded_client(forwarded, self._header_proxies) or remote
        if remote is not None and remote != request.remote:
            request = request.clone(remote=remote)
        return await handler(request)
