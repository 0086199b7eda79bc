"""One engine.io socket served over its websocket, read in the request's own task.

Why not engine.io's ``_websocket_handler``: it wraps every message it reads in a new task
(and ``asyncio.wait_for``, which on Python 3.11 makes more futures and a timer), and its
writer waits on the queue through ``wait_for`` too, which holds one more task per
connection for the connection's whole life. At 10,000 connections that is 20,000 idle
tasks and their coroutines, and a task created per message a client sends. Here the
reader is the aiohttp request's task itself, with one timer per connection for a silent
client (:class:`Silence`), and the writer awaits the queue directly: two tasks fewer per
connection, none per message.

What it does is engine.io's websocket transport, unchanged for clients and for engine.io's
own socket: the upgrade from long-polling (``2probe``/``3probe``, the NOOP that ends the
pending poll, then ``5``), PONGs, messages and CLOSE through the socket's own ``receive``,
the writer sending what engine.io queues until it meets the ``None`` that ends it, and,
when the client goes or is silent past the ping interval plus timeout, the socket closed
as a transport close. A packet that cannot be decoded raises ``ValueError`` to the caller,
as engine.io's handler does (:class:`workers.transport.fast_ws.CoalescingWebSocket` drops that
client). The engine.io internals this reads are checked by :func:`workers.patches.checks.check`
(``session_loop``); without them engine.io's own handler serves.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Protocol

from engineio import exceptions as eio_exceptions
from engineio import packet as eio_packet


class Websocket(Protocol):
    """What the loop needs of engine.io's websocket wrapper."""

    async def wait(self) -> str | bytes: ...

    async def send(self, message: str | bytes) -> None: ...

    async def close(self) -> None: ...


async def serve(sock: Any, ws: Websocket) -> None:
    """Serve engine.io socket ``sock`` over ``ws`` until either side ends it."""
    server = sock.server
    silence = Silence(server.ping_interval + server.ping_timeout, ws)
    try:
        silence.waiting()
        if sock.connected and not await _upgraded(sock, ws, silence):
            return
        sock.connected = True
        sock.upgraded = True
        writer = asyncio.create_task(_write(sock, ws))
        reason = server.reason.TRANSPORT_CLOSE
        try:
            while True:
                silence.waiting()
                try:
                    data = await ws.wait()
                except OSError:  # the client went, was silent, or sent what ws refuses
                    break
                silence.busy()  # a handler may take its time: that is not the client's silence
                if len(data) > server.max_http_buffer_size:
                    break
                pkt = eio_packet.Packet(encoded_packet=data)  # undecodable: ValueError, out
                if not 0 <= pkt.packet_type < len(eio_packet.packet_names):  # Node closes too
                    raise ValueError(f"unknown Engine.IO packet type {pkt.packet_type}")
                try:
                    await sock.receive(pkt)
                except eio_exceptions.UnknownPacketError:
                    pass
                except eio_exceptions.SocketIsClosedError:
                    break
                except Exception:  # a bug in a handler must not leave the socket half-open
                    server.logger.exception("Unknown receive error")
        except ValueError:
            reason = server.reason.TRANSPORT_ERROR
            raise
        finally:
            await _end(sock, writer, reason)
    finally:
        silence.cancel()


class Silence:
    """Closes the websocket of a client that sends nothing for ``limit`` seconds while the
    server waits for it (engine.io's ping interval plus timeout).

    One timer per connection, re-armed only when it fires early, not per message: the
    reader just notes when it started waiting. Closing wakes the waiting reader as a
    client's close would, so nothing is cancelled."""

    def __init__(self, limit: float, ws: Websocket) -> None:
        self._limit = limit
        self._ws = ws
        self._loop = asyncio.get_running_loop()
        self._since: float | None = None  # None: not waiting for the client now
        self._timer: asyncio.TimerHandle | None = self._loop.call_later(limit, self._check)
        self._closing: asyncio.Task[None] | None = None

    def waiting(self) -> None:
        self._since = self._loop.time()

    def busy(self) -> None:
        self._since = None

    def _check(self) -> None:
        now = self._loop.time()
        if self._since is None or now < self._since + self._limit:
            due = now + self._limit if self._since is None else self._since + self._limit
            self._timer = self._loop.call_at(due, self._check)
            return
        self._timer = None
        self._closing = self._loop.create_task(self._close())

    async def _close(self) -> None:
        with contextlib.suppress(Exception):  # the connection may be broken already
            await self._ws.close()

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


async def _upgraded(sock: Any, ws: Websocket, silence: Silence) -> bool:
    """The upgrade of a long-polling session: True once the client confirmed it."""
    sock.upgrading = True  # engine.io holds its sends meanwhile
    try:
        probe = eio_packet.Packet(encoded_packet=await ws.wait())
        if probe.packet_type != eio_packet.PING or probe.data != "probe":
            return False
        await ws.send(eio_packet.Packet(eio_packet.PONG, data="probe").encode())
        await sock.queue.put(eio_packet.Packet(eio_packet.NOOP))  # ends the pending poll
        silence.waiting()
        confirm = eio_packet.Packet(encoded_packet=await ws.wait())
        if confirm.packet_type != eio_packet.UPGRADE:
            sock.upgraded = False
            return False
        return True
    except OSError:
        return False
    finally:
        sock.upgrading = False


async def _write(sock: Any, ws: Websocket) -> None:
    """Send what engine.io queues for ``sock``, in order, until the ``None`` that ends it;
    then close the websocket."""
    queue = sock.queue
    try:
        while True:
            pkt = await queue.get()
            queue.task_done()
            if pkt is None:
                break
            await ws.send(pkt.encode())
        await ws.close()
    except Exception:  # the connection broke under the write; the reader sees it end
        return


async def _end(sock: Any, writer: asyncio.Task[None], reason: str) -> None:
    """Stop the writer (after what is queued before it) and close the socket."""
    await sock.queue.put(None)
    await writer
    await sock.close(wait=False, abort=True, reason=reason)
