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

from sio_cluster.wire.frames import Request, Response
from sio_cluster.wire.operations import (
    ClusterOperation,
    Operation,
    OperationError,
    decode_operation,
)

log = logging.getLogger(__name__)

Handler = Callable[[ClusterOperation], Awaitable[Any]]
EXPECTED_ERRORS = (OperationError, TimeoutError, KeyError, ValueError)


def _operation_name(code: int) -> str:
    try:
        return Operation(code).name
    except ValueError:
        return repr(code)


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

    async def call(self, operation: ClusterOperation, timeout: float) -> Any:
        """Ask the other side; raise :class:`RpcError` or ``TimeoutError``."""
        request_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            frame = Request(request_id, operation.OPERATION, operation.to_wire()).encode()
            if not self._send(frame):
                raise RpcError("the link is closed")
            return await asyncio.wait_for(future, timeout)
        finally:
            self._pending.pop(request_id, None)

    def on_response(self, response: Response) -> None:
        """Complete the pending call the response answers (late answers are ignored)."""
        future = self._pending.get(response.request_id)
        if future is not None and not future.done():
            if response.error is None:
                future.set_result(response.result)
            else:
                future.set_exception(RpcError(response.error))

    def on_request(self, request: Request) -> None:
        """Answer a request in a task of its own."""
        task = asyncio.create_task(self._answer(request))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, request: Request) -> None:
        try:
            operation = decode_operation(request.operation, request.payload)
            result = await self._handler(operation)
            frame = Response(request.request_id, None, result).encode()
        except Exception as exc:  # the requester gets the reason; we keep serving
            if not isinstance(exc, RpcError | EXPECTED_ERRORS):
                log.exception("request %s failed", _operation_name(request.operation))
            frame = Response(request.request_id, f"{type(exc).__name__}: {exc}", None).encode()
        self._send(frame)

    def fail_all(self, reason: str) -> None:
        """The link is gone: every pending request fails now."""
        for future in self._pending.values():
            if not future.done():
                future.set_exception(RpcError(reason))
