"""A bare RESP subscriber connection: hiredis parses, no client library in the read path.

Why: the master reads every pub/sub message of the host. redis-py's ``PubSub``
costs several coroutine layers per message; here an asyncio protocol feeds each
read to ``hiredis.Reader`` and hands every message to a synchronous callback in
the same tick, so one socket read of many messages is handled in one go. A read that
fills the buffer pauses reading until the next tick: libuv would otherwise read a ready
socket up to 32 times in one go (megabytes of a backlog, seconds of routing), and under a
flood the master's loop must still run its timers and read its workers in between (the
reason :mod:`sio_cluster.wire.link` handles frames in slices).

The connection speaks just what a subscriber needs: AUTH, CLIENT SETNAME,
PSUBSCRIBE, SUBSCRIBE, SSUBSCRIBE (sharded: ``smessage`` is read as ``message``)
and PING (for liveness). URLs are read as redis-py reads them
(:func:`common.redis.target.parse_redis_url`), so ``redis://``, ``rediss://`` (TLS, with
redis-py's ``ssl_*`` query options) and ``unix://`` with passwords work as elsewhere.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import hiredis

from sio_cluster.common.redis.target import parse_redis_url

READ_SLICE = 64 * 1024

ItemHandler = Callable[[bytes | None, bytes, bytes], None]
PushHandler = Callable[[list[Any]], None]


class SubscriberError(ConnectionError):
    """The connection failed, was refused, or Redis answered the handshake with an error."""


def command(*args: str | bytes) -> bytes:
    """One RESP command (an array of bulk strings)."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode() if isinstance(arg, str) else arg
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class SubscriberProtocol(asyncio.Protocol):
    """Feeds reads to hiredis; messages go to ``on_message``, replies to waiting futures."""

    def __init__(self, on_message: ItemHandler, on_push: PushHandler | None = None) -> None:
        self._on_message = on_message
        self._on_push = on_push
        self._reader = hiredis.Reader()
        self._replies: deque[asyncio.Future[Any]] = deque()
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()
        self.last_read = time.monotonic()
        self.messages = 0  # messages read: the source's rate, to estimate what a cut lost

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)

    def data_received(self, data: bytes) -> None:
        self.last_read = time.monotonic()
        transport = self.transport
        if len(data) >= READ_SLICE and transport is not None:
            transport.pause_reading()
            asyncio.get_running_loop().call_soon(self._resume_reading)
        self._reader.feed(data)
        on_message = self._on_message
        try:
            while (item := self._reader.gets()) is not False:
                if type(item) is list and item:
                    kind = item[0]
                    if kind == b"pmessage":
                        self.messages += 1
                        on_message(item[1], item[2], item[3])
                        continue
                    if kind == b"message" or kind == b"smessage":
                        self.messages += 1
                        on_message(None, item[1], item[2])
                        continue
                if self._replies:
                    future = self._replies.popleft()
                    if not future.done():
                        future.set_result(item)
                elif self._on_push is not None and type(item) is list:
                    self._on_push(item)  # e.g. Redis's own sunsubscribe when a slot moves
        except hiredis.ProtocolError as exc:
            self._fail(exc)

    def _resume_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def _fail(self, exc: Exception) -> None:
        if self.transport is not None:
            self.transport.abort()
        if not self.closed.done():
            self.closed.set_result(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        for future in self._replies:
            if not future.done():
                future.set_exception(SubscriberError("connection closed"))
        if not self.closed.done():
            self.closed.set_result(exc)

    def send(self, *args: str | bytes) -> None:
        """Write a command whose replies nobody waits for (subscriptions, PING)."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(command(*args))

    async def call(self, *args: str | bytes, replies: int = 1) -> list[Any]:
        """Write a command and wait for its ``replies``; an error reply raises."""
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in range(replies)]
        self._replies.extend(futures)
        self.send(*args)
        answers = [await future for future in futures]
        for answer in answers:
            if isinstance(answer, hiredis.ReplyError):
                raise SubscriberError(f"Redis refused {args[0]!r}: {answer}")
        return answers


async def connect(
    url: str, on_message: ItemHandler, timeout: float = 10, on_push: PushHandler | None = None
) -> SubscriberProtocol:
    """Open a subscriber connection to ``url`` and authenticate; not yet subscribed.

    ``on_push`` receives the pushes no command waits for (not messages)."""
    loop = asyncio.get_running_loop()

    def factory() -> SubscriberProtocol:
        return SubscriberProtocol(on_message, on_push)

    try:
        target = parse_redis_url(url)
        if target.path is not None:
            coro = loop.create_unix_connection(factory, target.path)
        else:
            coro = loop.create_connection(
                factory,
                target.host,
                target.port,
                ssl=target.tls,
                server_hostname=target.host if target.tls else None,
            )
        _, protocol = await asyncio.wait_for(coro, timeout)
    except (OSError, TimeoutError) as exc:
        raise SubscriberError(f"cannot connect: {exc}") from None
    if target.password:
        username, password = target.username, target.password
        args = ("AUTH", username, password) if username else ("AUTH", password)
        await asyncio.wait_for(protocol.call(*args), timeout)
    return protocol
