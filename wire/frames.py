"""The pipe frame format between the master and its workers.

Why a format of our own: the master and the workers exchange many small messages
(membership reports, deliveries) and must never unpickle anything, so each frame
is a 4-byte big-endian length followed by a msgpack array whose first element is
the frame :class:`Kind`. Frames are self-delimiting, so the master can batch many
of them into one pipe write and the reader can split a single read into many.

Frame layouts (``nsp`` is a namespace, ``room`` ``None`` means "every socket of
the namespace", exactly as in python-socketio's room table):

=========  =====================================================  =========
kind       fields after the kind                                  direction
=========  =====================================================  =========
HELLO      worker_id, pid, namespaces (list, or ``"*"``)          w -> m
READY      port                                                   w -> m
JOIN       nsp, sid, room                                         w -> m
LEAVE      nsp, sid, room                                         w -> m
BROADCAST  nsp, rooms (list or ``None``), except (list), parts    both
PING       token                                                  m -> w
PONG       token                                                  w -> m
STOP       (none)                                                 m -> w
SYNC       token                                                  w -> m
SYNCED     token                                                  m -> w
REQUEST    request_id, operation, arguments (map)                 both
RESPONSE   request_id, error (``None`` or text), result           both
=========  =====================================================  =========

SYNC/SYNCED is a barrier: the master handles a worker's frames in order, so when
it answers SYNCED every report sent before the SYNC is in its routing table.

``parts`` is the Socket.IO packet already encoded for the wire (a ``str``,
followed by ``bytes`` attachments for binary events), so a packet is encoded once
by whoever produced it and each receiving worker only writes it to its sockets.
A worker-originated BROADCAST is forwarded by the master to the sibling workers
byte for byte.
"""

from __future__ import annotations

import struct
from enum import IntEnum
from typing import Any

import msgpack

HEADER = struct.Struct(">I")
MAX_FRAME_BYTES = 64 * 1024 * 1024


class Kind(IntEnum):
    """The first element of every frame."""

    HELLO = 1
    READY = 2
    JOIN = 3
    LEAVE = 4
    BROADCAST = 5
    PING = 6
    PONG = 7
    STOP = 8
    SYNC = 9
    SYNCED = 10
    REQUEST = 11
    RESPONSE = 12


class FrameError(ValueError):
    """A frame that cannot be read: oversized, not msgpack, or of an unknown shape."""


def encode_frame(kind: Kind, *fields: Any) -> bytes:
    """Return one complete frame (header and body) for ``kind`` and its fields."""
    body = msgpack.packb([int(kind), *fields], use_bin_type=True)
    if len(body) > MAX_FRAME_BYTES:
        raise FrameError(f"frame of {len(body)} bytes exceeds {MAX_FRAME_BYTES} bytes")
    return HEADER.pack(len(body)) + body


def decode_body(body: bytes) -> tuple[Kind, list[Any]]:
    """Split a frame body into its kind and fields; raise :class:`FrameError` if malformed."""
    try:
        items = msgpack.unpackb(body, raw=False, use_list=True, strict_map_key=False)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise FrameError(f"frame body is not msgpack: {exc}") from exc
    if not isinstance(items, list) or not items or not isinstance(items[0], int):
        raise FrameError("frame body is not an array starting with a kind")
    try:
        kind = Kind(items[0])
    except ValueError as exc:
        raise FrameError(f"unknown frame kind {items[0]!r}") from exc
    return kind, items[1:]


class FrameDecoder:
    """Incremental splitter: feed it whatever a read returned, get back whole bodies.

    Pure and I/O-free so it can be tested with arbitrary chunkings.
    """

    def __init__(self, max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        self._buffer = bytearray()
        self._max = max_frame_bytes

    def feed(self, data: bytes) -> list[bytes]:
        """Append ``data`` and return the frame bodies it completed, in order.

        Raises :class:`FrameError` when a header announces more than the limit:
        the stream cannot be resynchronised after that, so the caller must close it.
        """
        self._buffer += data
        bodies: list[bytes] = []
        offset = 0
        buf = self._buffer
        size = len(buf)
        while size - offset >= HEADER.size:
            (length,) = HEADER.unpack_from(buf, offset)
            if length > self._max:
                raise FrameError(f"frame header announces {length} bytes (limit {self._max})")
            end = offset + HEADER.size + length
            if end > size:
                break
            bodies.append(bytes(buf[offset + HEADER.size : end]))
            offset = end
        if offset:
            del buf[:offset]
        return bodies

    @property
    def pending_bytes(self) -> int:
        """Bytes received that do not yet form a whole frame."""
        return len(self._buffer)
