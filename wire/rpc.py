"""Request/response over a frame link, in both directions (see :mod:`wire.frames`).

Why: cluster operations (join a socket held by another worker, wait for an ack
from a client of another worker, fetch sockets) need an answer, while the pipe
carries one-way frames. Each side keeps its pending requests by id; a request
is answered by the other side's handler, whose exception becomes an error text.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from wire.frames import Kind, encode_frame

log = logging.getLogger(__name__)

Handler = Callable[[str, dict[str, Any]], Awaitable[Any]]


class RpcError(RuntimeError):
    """The other side could not carry out the request; the text says why."""


class Rpc:
    """Pending requests and the handler for incoming ones, for one link."""

    def __init__(self, send: Callable[[bytes], bool], handler: Handler) -> None:
        self._send = send
        self._handler = handler
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def call(self, operation: str, args: dict[str, Any], timeout: float) -> Any:
        """Ask the other side; raise :class:`RpcError` or ``TimeoutError``."""
        request_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            if not self._send(encode_frame(Kind.REQUEST, request_id, operation, args)):
                raise RpcError("the link is closed")
            return await asyncio.wait_for(future, timeout)
        finally:
            self._pending.pop(request_id, None)

    def on_frame(self, kind: Kind, fields: list[Any]) -> None:
        """Feed REQUEST and RESPONSE frames here."""
        if kind is Kind.RESPONSE and len(fields) == 3:
            future = self._pending.get(fields[0])
            if future is not None and not future.done():
                if fields[1] is None:
                    future.set_result(fields[2])
                else:
                    future.set_exception(RpcError(str(fields[1])))
        elif kind is Kind.REQUEST and len(fields) == 3 and isinstance(fields[2], dict):
            task = asyncio.create_task(self._answer(fields[0], str(fields[1]), fields[2]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            log.warning("malformed %s frame: %r", kind.name, fields[:3])

    async def _answer(self, request_id: Any, operation: str, args: dict[str, Any]) -> None:
        try:
            result = await self._handler(operation, args)
            frame = encode_frame(Kind.RESPONSE, request_id, None, result)
        except Exception as exc:  # the requester gets the reason; we keep serving
            if not isinstance(exc, RpcError | TimeoutError | KeyError | ValueError):
                log.exception("request %r failed", operation)
            frame = encode_frame(Kind.RESPONSE, request_id, f"{type(exc).__name__}: {exc}", None)
        self._send(frame)

    def fail_all(self, reason: str) -> None:
        """The link is gone: every pending request fails now."""
        for future in self._pending.values():
            if not future.done():
                future.set_exception(RpcError(reason))
