"""Writing frames to websocket clients: each tick's frames in ONE write, and the slow-client
abort.

Why: delivering a broadcast through a websocket library costs one ``transport.write`` (a
syscall) per recipient per message; when a pipe read brings many messages, a busy connection
receives several in the same loop tick. The connection layer's websockets
(:class:`workers.conn.eio_conn.EioConnection`) join the frames a connection gets during one
tick and write them once (:func:`write_tick`); a delivery finds them in
:data:`direct_writers` and gives them frames built once for every recipient
(:func:`message_frames`).

Backpressure: a client that does not read lets the transport's buffer grow; past
:data:`SLOW_CLIENT_BYTES` the connection is aborted and counted
(:func:`abort_slow_client`) instead of growing the worker's memory without bound.

:class:`Counters` and :func:`bad_client` are the worker's per-process counts of what it
refused, reported to the master.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Protocol

from sio_cluster.common.ratelimit import RateLimitedLogger
from sio_cluster.workers.conn.ws_frames import frame
from sio_cluster.workers.eio3 import codec as eio3_codec

log = logging.getLogger(__name__)
client_refusals = RateLimitedLogger(log)  # a line per 10 s per kind, however many clients

SLOW_CLIENT_BYTES = 4 * 1024 * 1024


def message_frames(parts: Sequence[str | bytes], eio3: bool = False) -> bytes:
    """A Socket.IO packet's ``parts`` as the websocket frames of engine.io MESSAGE packets,
    ready for a :class:`DirectWriter`'s ``write``: text ``4<text>``, and each binary
    attachment as it is (``eio3``: for an Engine.IO 3 client, whose binary frames start with
    their type). Built straight from the parts: no engine.io packet object on the way."""
    out = []
    for part in parts:
        if isinstance(part, str):
            out.append(frame(b"4" + part.encode(), 0x1))
        else:
            out.append(frame(eio3_codec.websocket_binary(part) if eio3 else part, 0x2))
    return out[0] if len(out) == 1 else b"".join(out)


class Counters:
    """Per-process counts that show each fast path really runs (tests read them)."""

    flushes = 0  # transport writes made here: at most one per connection per tick
    coalesced_flushes = 0  # of those, the writes that carried several deliveries
    dropped = 0  # connections aborted for not reading (reported to the master)
    dropped_bytes = 0  # what those connections had unsent when aborted (reported too)
    bad_clients = 0  # websockets closed for an undecodable packet (reported to the master)
    refused = 0  # connections refused at --max-connections (reported to the master)
    header_timeouts = 0  # connections closed at --header-timeout (reported to the master)


def bad_client(why: str) -> None:
    """A client sent what cannot be used (``why``) and is being closed: counted, and logged
    at most once per 10 s however many do it."""
    Counters.bad_clients += 1
    client_refusals.log(logging.WARNING, "refused", "closed a client that sent %s", why)


class DirectWriter(Protocol):
    """A connection a delivery may write its frames to straight away."""

    @property
    def eio3(self) -> bool: ...

    @property
    def deflate_window(self) -> int:
        """permessage-deflate's window when agreed (frames must be compressed); 0: none."""
        ...

    def idle(self) -> bool: ...

    def write(self, data: bytes) -> None: ...


def write_tick(transport: asyncio.Transport, frames: list[bytes]) -> None:
    """Write a connection's frames of one tick in one ``transport.write``; abort a client
    that leaves more than :data:`SLOW_CLIENT_BYTES` unsent, counted."""
    if len(frames) == 1:
        transport.write(frames[0])
    else:
        transport.write(b"".join(frames))
        Counters.coalesced_flushes += 1
    Counters.flushes += 1
    abort_slow_client(transport)


def abort_slow_client(transport: asyncio.Transport, unwritten: int = 0) -> bool:
    """Abort the connection if more than :data:`SLOW_CLIENT_BYTES` wait unsent in it (the
    client does not read), counting what is lost, with ``unwritten`` bytes not yet given to
    it; True if it was aborted."""
    unsent = transport.get_write_buffer_size()
    if unsent <= SLOW_CLIENT_BYTES:
        return False
    Counters.dropped += 1
    Counters.dropped_bytes += unsent + unwritten
    log.warning("a client is not reading (over %d bytes unsent): closing it", SLOW_CLIENT_BYTES)
    transport.abort()
    return True


direct_writers: dict[str, DirectWriter] = {}
"""This process's websockets that accept direct writes, by engine.io sid."""
