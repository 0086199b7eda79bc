"""The pipe frame format between the master and its workers: one frozen class per kind.

Why a format of our own: the master and the workers exchange many small messages
(membership reports, deliveries) and must never unpickle anything, so each frame
is a 4-byte big-endian length followed by a msgpack array ``[kind, *fields]``.
Frames are self-delimiting, so the master can batch many of them into one pipe
write and the reader can split a single read into many.

Why classes (the h11 way): every frame kind is a small frozen class, produced by
the pure :func:`decode_body` only once its fields have the right types, so the
code that handles a frame matches on its class and reads named, typed fields;
no positional list or bare string is shared by convention across modules.

=============  ==================================================  =========
class          fields                                              direction
=============  ==================================================  =========
Hello          worker_id, pid, namespaces (tuple, or ``"*"``)      w -> m
Ready          port                                                w -> m
Failed         reason (one line)                                   w -> m
Join           namespace, sid, room                                w -> m
Leave          namespace, sid, room                                w -> m
Broadcast      namespace, rooms (tuple or ``None``), exclude,      both
               parts
Ping           token                                               m -> w
Pong           token, stats (map)                                  w -> m
Sync           token                                               w -> m
Synced         token                                               m -> w
Request        request_id, operation, payload (see wire.operations)  both
Response       request_id, error (``None`` or text), result        both
Recoverable    namespace, sid, pid                                 w -> m
SessionData    namespace, sid, data (msgpack bytes)                w -> m
KeepSession    namespace, sid, rooms                               w -> m
Restore        token, namespace, pid, offset                       w -> m
Restored       token, outcome, sid, rooms, data, missed            m -> w
=============  ==================================================  =========

``room`` ``None`` means "connected" (the room of every socket of the namespace),
exactly as in python-socketio's room table; ``rooms`` ``None`` means "every socket
of the namespace". Rooms are ``str`` or ``int``.

Sync/Synced is a barrier: the master handles a worker's frames in order, so when
it answers Synced every report sent before the Sync is in its routing table.

``parts`` is the Socket.IO packet already encoded for the wire (a ``str``,
followed by ``bytes`` attachments for binary events), so a packet is encoded once
by whoever produced it and each receiving worker only writes it to its sockets.
A worker-originated Broadcast is forwarded by the master to the sibling workers
byte for byte.

The last five kinds carry connection state recovery (:mod:`master.recovery.log`): a worker
tells the master each recoverable socket's private id and python-socketio session, and
which sockets ended without a goodbye; a returning client's Restore is answered with a
Restored frame that the worker applies as it reads it, in pipe order, so no broadcast
routed after the answer can overtake the replay.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, ClassVar, TypeGuard

import msgpack

HEADER = struct.Struct(">I")
MAX_FRAME_BYTES = 64 * 1024 * 1024

Room = str | int


class Kind(IntEnum):
    """The first element of every frame."""

    HELLO = 1
    READY = 2
    JOIN = 3
    LEAVE = 4
    BROADCAST = 5
    PING = 6
    PONG = 7
    SYNC = 9
    SYNCED = 10
    REQUEST = 11
    RESPONSE = 12
    RECOVERABLE = 13
    SESSION_DATA = 14
    KEEP_SESSION = 15
    RESTORE = 16
    RESTORED = 17
    FAILED = 18


class FrameError(ValueError):
    """A frame that cannot be read: oversized, not msgpack, or of an unknown shape."""


def is_room(value: Any) -> TypeGuard[Room]:
    """A room that can cross processes: a ``str`` or an ``int`` (never a ``bool``)."""
    return type(value) is str or type(value) is int


def _room_or_none(value: Any) -> bool:
    return value is None or is_room(value)


def _rooms(value: Any) -> bool:
    return type(value) is list and all(is_room(v) for v in value)


def _rooms_or_none(value: Any) -> bool:
    return value is None or _rooms(value)


def is_parts(value: Any) -> bool:
    """An encoded Socket.IO packet: its text, then its binary attachments."""
    return (
        type(value) is list
        and bool(value)
        and type(value[0]) is str
        and all(type(p) is bytes for p in value[1:])
    )


def _parts_list(value: Any) -> bool:
    return type(value) is list and all(is_parts(v) for v in value)


def _is_bytes(value: Any) -> bool:
    return type(value) is bytes


def _bytes_or_none(value: Any) -> bool:
    return value is None or type(value) is bytes


def _namespaces(value: Any) -> bool:
    return value == "*" or (type(value) is list and all(type(v) is str for v in value))


def _is_int(value: Any) -> bool:
    return type(value) is int


def _is_str(value: Any) -> bool:
    return type(value) is str


def _is_map(value: Any) -> bool:
    return type(value) is dict


def _anything(value: Any) -> bool:
    return True


def _error_text(value: Any) -> bool:
    return value is None or type(value) is str


class Frame:
    """Base of every frame class; ``KIND`` and ``CHECKS`` describe the wire layout."""

    __slots__ = ()
    KIND: ClassVar[Kind]
    CHECKS: ClassVar[tuple[Callable[[Any], bool], ...]] = ()

    def encode(self) -> bytes:
        """This frame, header and body, ready for the pipe (fields in declaration order)."""
        names: tuple[str, ...] = self.__slots__  # a slotted dataclass: its fields
        return encode_frame(self.KIND, *(getattr(self, name) for name in names))


@dataclass(frozen=True, slots=True)
class Hello(Frame):
    KIND = Kind.HELLO
    CHECKS = (_is_int, _is_int, _namespaces)
    worker_id: int
    pid: int
    namespaces: tuple[str, ...] | str

    def encode(self) -> bytes:
        names = self.namespaces if isinstance(self.namespaces, str) else list(self.namespaces)
        return encode_frame(self.KIND, self.worker_id, self.pid, names)


@dataclass(frozen=True, slots=True)
class Ready(Frame):
    KIND = Kind.READY
    CHECKS = (_is_int,)
    port: int


@dataclass(frozen=True, slots=True)
class Failed(Frame):
    """A worker cannot start (its ``--app`` does not load, its port is taken...): the one
    line it says why, sent just before it exits, so the master can say it too."""

    KIND = Kind.FAILED
    CHECKS = (_is_str,)
    reason: str


@dataclass(frozen=True, slots=True)
class Join(Frame):
    KIND = Kind.JOIN
    CHECKS = (_is_str, _is_str, _room_or_none)
    namespace: str
    sid: str
    room: Room | None


@dataclass(frozen=True, slots=True)
class Leave(Frame):
    KIND = Kind.LEAVE
    CHECKS = (_is_str, _is_str, _room_or_none)
    namespace: str
    sid: str
    room: Room | None


@dataclass(frozen=True, slots=True)
class Broadcast(Frame):
    KIND = Kind.BROADCAST  # checked by _decode_broadcast, inline
    namespace: str
    rooms: Sequence[Room] | None
    exclude: Sequence[Room]
    parts: Sequence[str | bytes]

    def encode(self) -> bytes:
        return Broadcast.build(self.namespace, self.rooms, self.exclude, self.parts)

    @staticmethod
    def build(
        namespace: str,
        rooms: Sequence[Room] | None,
        exclude: Sequence[Room],
        parts: Sequence[str | bytes],
    ) -> bytes:
        """The frame's bytes without building the object: the master's hot path makes
        one per routed message."""
        return encode_frame(Kind.BROADCAST, namespace, rooms, exclude, parts)


@dataclass(frozen=True, slots=True)
class Ping(Frame):
    KIND = Kind.PING
    CHECKS = (_is_int,)
    token: int


SLOW_CLIENTS_DROPPED = "slow_clients_dropped"
"""The key of a Pong's stats: connections the worker aborted for not reading."""
BAD_CLIENTS_DROPPED = "bad_clients_dropped"
"""The key of a Pong's stats: websockets the worker closed for an undecodable packet."""
CONNECTIONS_REFUSED = "connections_refused"
"""The key of a Pong's stats: connections refused because the worker was full."""
HEADER_TIMEOUTS = "header_timeouts"
"""The key of a Pong's stats: connections closed for not sending a request in time."""
CLIENTS_SERVED = "clients_served"
"""The key of a Pong's stats: its open connections or engine.io sessions, whichever is more."""
HANDOFFS_TAKEN = "handoffs_taken"
"""The key of a Pong's stats: connections taken from the master's hand-off socket, ever."""
CLIENTS_GONE_MID_ANSWER = "clients_gone_mid_answer"
"""The key of a Pong's stats: connections their clients closed while a request was answered."""
EIO3_CLIENTS = "eio3_clients"
"""The key of a Pong's stats: Engine.IO 3 clients connected now (``--allow-eio3``)."""
V09_CLIENTS = "v09_clients"
"""The key of a Pong's stats: socket.io 0.9 clients connected now (``--allow-v09``)."""
V09_BAD_FRAMES = "v09_bad_frames"
"""The key of a Pong's stats: socket.io 0.9 frames that could not be read (each closed its
client)."""
SLOW_CLIENT_BYTES_DROPPED = "slow_client_bytes_dropped"
"""The key of a Pong's stats: bytes unsent to the slow clients aborted (what they lost)."""
BROADCASTS_READ = "broadcasts_read"
"""The key of a Pong's stats: Broadcast frames read from the master, so the master can tell
how many it sent were still on their way when the worker was lost."""


@dataclass(frozen=True, slots=True)
class Pong(Frame):
    KIND = Kind.PONG
    CHECKS = (_is_int, _is_map)
    token: int
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Sync(Frame):
    KIND = Kind.SYNC
    CHECKS = (_is_int,)
    token: int


@dataclass(frozen=True, slots=True)
class Synced(Frame):
    KIND = Kind.SYNCED
    CHECKS = (_is_int,)
    token: int


@dataclass(frozen=True, slots=True)
class Request(Frame):
    """``payload`` is an operation's wire form; :mod:`wire.operations` reads it."""

    KIND = Kind.REQUEST
    CHECKS = (_is_int, _is_int, _anything)
    request_id: int
    operation: int
    payload: Any

    def encode(self) -> bytes:
        return encode_frame(self.KIND, self.request_id, self.operation, self.payload)


@dataclass(frozen=True, slots=True)
class Response(Frame):
    KIND = Kind.RESPONSE
    CHECKS = (_is_int, _error_text, _anything)
    request_id: int
    error: str | None
    result: Any

    def encode(self) -> bytes:
        return encode_frame(self.KIND, self.request_id, self.error, self.result)


@dataclass(frozen=True, slots=True)
class Recoverable(Frame):
    """A socket that may recover later, and its private id (sent with its CONNECT reply)."""

    KIND = Kind.RECOVERABLE
    CHECKS = (_is_str, _is_str, _is_str)
    namespace: str
    sid: str
    pid: str


@dataclass(frozen=True, slots=True)
class SessionData(Frame):
    """A recoverable socket's python-socketio session, msgpack, each time it is saved."""

    KIND = Kind.SESSION_DATA
    CHECKS = (_is_str, _is_str, _is_bytes)
    namespace: str
    sid: str
    data: bytes


@dataclass(frozen=True, slots=True)
class KeepSession(Frame):
    """A recoverable socket's connection ended without a goodbye: keep its session.
    Sent before the socket's Leave reports; ``rooms`` include its own sid room."""

    KIND = Kind.KEEP_SESSION
    CHECKS = (_is_str, _is_str, _rooms)
    namespace: str
    sid: str
    rooms: Sequence[Room]


@dataclass(frozen=True, slots=True)
class Restore(Frame):
    """A client came back with the private id and last offset of a socket it had."""

    KIND = Kind.RESTORE
    CHECKS = (_is_int, _is_str, _is_str, _is_str)
    token: int
    namespace: str
    pid: str
    offset: str


@dataclass(frozen=True, slots=True)
class Restored(Frame):
    """The answer to a Restore. ``outcome`` is ``"recovered"`` (then the socket is routed
    to this worker again, and ``missed`` holds the encoded packets to replay, in order) or
    why not (then the other fields are empty)."""

    KIND = Kind.RESTORED
    CHECKS = (_is_int, _is_str, _is_str, _rooms, _bytes_or_none, _parts_list)
    token: int
    outcome: str
    sid: str
    rooms: Sequence[Room]
    data: bytes | None
    missed: Sequence[Sequence[str | bytes]]


RecoveryFrame = Recoverable | SessionData | KeepSession | Restore
"""What a worker sends the master about connection state recovery."""

FRAME_CLASSES: dict[Kind, type[Frame]] = {
    cls.KIND: cls
    for cls in (Hello, Ready, Failed, Join, Leave, Broadcast, Ping, Pong, Sync, Synced)
    + (Request, Response, Recoverable, SessionData, KeepSession, Restore, Restored)
}


def encode_frame(kind: Kind, *fields: Any) -> bytes:
    """Return one complete frame (header and body) for ``kind`` and its fields."""
    body = msgpack.packb([int(kind), *fields], use_bin_type=True)
    if len(body) > MAX_FRAME_BYTES:
        raise FrameError(f"frame of {len(body)} bytes exceeds {MAX_FRAME_BYTES} bytes")
    return HEADER.pack(len(body)) + body


# What msgpack raises on bytes that are not msgpack. TypeError: a map keyed by something
# unhashable, such as a list (found by tests/test_fuzz.py).
MSGPACK_ERRORS = (
    ValueError,
    TypeError,
    msgpack.ExtraData,
    msgpack.FormatError,
    msgpack.StackError,
)


def decode_body(body: bytes) -> Frame:
    """The frame a body holds; raise :class:`FrameError` if it is malformed in any way."""
    try:
        items = msgpack.unpackb(body, raw=False, use_list=True, strict_map_key=False)
    except MSGPACK_ERRORS as exc:
        raise FrameError(f"frame body is not msgpack: {exc}") from exc
    if type(items) is not list or not items or type(items[0]) is not int:
        raise FrameError("frame body is not an array starting with a kind")
    cls = FRAME_CLASSES.get(items[0])  # type: ignore[call-overload]
    if cls is None:
        raise FrameError(f"unknown frame kind {items[0]!r}")
    fields = items[1:]
    if cls is Broadcast:
        return _decode_broadcast(fields)
    checks = cls.CHECKS
    if len(fields) != len(checks) or not all(
        check(value) for check, value in zip(checks, fields, strict=True)
    ):
        raise FrameError(f"malformed {cls.__name__} frame: {fields[:4]!r}"[:300])
    if cls is Hello and fields[2] != "*":
        fields[2] = tuple(fields[2])
    return cls(*fields)


def _decode_broadcast(fields: list[Any]) -> Broadcast:
    """The hot kind, checked inline: every delivery a worker makes starts here."""
    if len(fields) == 4:
        namespace, rooms, exclude, parts = fields
        if (
            type(namespace) is str
            and (rooms is None or _rooms(rooms))
            and _rooms(exclude)
            and is_parts(parts)
        ):
            return Broadcast(namespace, rooms, exclude, parts)
    raise FrameError(f"malformed Broadcast frame: {fields[:4]!r}"[:300])


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
