"""RFC 6455 frames: the unmasked frames a server writes, and a parser of the masked frames a
client sends, one frame at a time, with every check the RFC asks of a server.

Pure bytes in, values out, no I/O (an import contract says so), so the connection layer's
protocol code is tested by feeding it scripted bytes. Why our own and not a library's: the
frames are a few struct operations, and what a library adds (its own transport, or a task and
a reader per connection) is the per-connection cost this layer exists to shed. Unmasking a
payload is one big-integer XOR, which CPython does at C speed.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
CONTROL = 0x8  # opcodes from here up are control frames
FIN = 0x80
RSV1 = 0x40  # set on the first frame of a compressed message (permessage-deflate)

# close codes (RFC 6455 section 7.4.1)
NORMAL, GOING_AWAY, PROTOCOL_ERROR, INVALID_DATA, TOO_BIG = 1000, 1001, 1002, 1007, 1009

_LEN1 = struct.Struct("!BB")
_LEN2 = struct.Struct("!BBH")
_LEN3 = struct.Struct("!BBQ")
_CODE = struct.Struct("!H")
_VALID_CLOSE = frozenset((1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014))


class FrameError(Exception):
    """What the client sent breaks the protocol: the connection is closed with ``code``."""

    def __init__(self, code: int, why: str) -> None:
        super().__init__(why)
        self.code = code


def frame(payload: bytes, opcode: int, compressed: bool = False) -> bytes:
    """One unmasked, final frame (RFC 6455 section 5.2)."""
    first = FIN | opcode | (RSV1 if compressed else 0)
    size = len(payload)
    if size < 126:
        return _LEN1.pack(first, size) + payload
    if size < 65536:
        return _LEN2.pack(first, 126, size) + payload
    return _LEN3.pack(first, 127, size) + payload


def close_frame(code: int, reason: str = "") -> bytes:
    """A close frame with ``code`` (and a short reason)."""
    return frame(_CODE.pack(code) + reason.encode()[:120], CLOSE)


def unmask(payload: bytes, mask: bytes) -> bytes:
    """``payload`` XORed with the 4-byte ``mask`` repeated (RFC 6455 section 5.3)."""
    size = len(payload)
    if not size:
        return b""
    key = (mask * ((size >> 2) + 1))[:size]
    value = int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")
    return value.to_bytes(size, "little")


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame read: its first byte's flags and opcode, and its unmasked payload."""

    fin: bool
    rsv1: bool
    opcode: int
    payload: bytes


def parse(buffer: bytes | memoryview, limit: int) -> tuple[Frame, int] | None:
    """The first frame of ``buffer`` and the bytes it took, or None while it is incomplete.

    Raises :class:`FrameError` for what a server must refuse: an unmasked frame, reserved
    bits other than RSV1, an unknown opcode, a fragmented or oversized control frame, a
    payload over ``limit`` bytes (checked from the header, before the payload arrives).
    """
    have = len(buffer)
    if have < 2:
        return None
    first, second = buffer[0], buffer[1]
    opcode = first & 0x0F
    if first & 0x30:
        raise FrameError(PROTOCOL_ERROR, "reserved bits set")
    if not second & 0x80:
        raise FrameError(PROTOCOL_ERROR, "an unmasked frame from a client")
    if opcode not in (CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG):
        raise FrameError(PROTOCOL_ERROR, f"unknown opcode {opcode}")
    size = second & 0x7F
    start = 2
    if size == 126:
        if have < 4:
            return None
        size = int.from_bytes(buffer[2:4], "big")
        start = 4
    elif size == 127:
        if have < 10:
            return None
        size = int.from_bytes(buffer[2:10], "big")
        start = 10
    fin = bool(first & FIN)
    if opcode >= CONTROL and (size > 125 or not fin):
        raise FrameError(PROTOCOL_ERROR, "a fragmented or oversized control frame")
    if size > limit:
        raise FrameError(TOO_BIG, f"a frame of {size} bytes")
    end = start + 4 + size
    if have < end:
        return None
    mask = bytes(buffer[start : start + 4])
    payload = unmask(bytes(buffer[start + 4 : end]), mask)
    return Frame(fin, bool(first & RSV1), opcode, payload), end


def needed(buffer: bytes | memoryview) -> int:
    """How many bytes the first frame of ``buffer`` takes in all, as far as its header tells
    (at least one byte more than ``buffer`` while even the header is incomplete)."""
    have = len(buffer)
    if have < 2:
        return have + 1
    size = buffer[1] & 0x7F
    if size == 126:
        return have + 1 if have < 4 else 8 + int.from_bytes(buffer[2:4], "big")
    if size == 127:
        return have + 1 if have < 10 else 14 + int.from_bytes(buffer[2:10], "big")
    return 6 + size


def close_code(payload: bytes) -> int | None:
    """The code of a client's close frame; None if it carries none.

    Raises :class:`FrameError` for a code a client may not send, a one-byte payload or a
    reason that is not UTF-8 (RFC 6455 sections 5.5.1 and 7.4)."""
    if not payload:
        return None
    if len(payload) == 1:
        raise FrameError(PROTOCOL_ERROR, "a close frame of one byte")
    code = _CODE.unpack_from(payload)[0]
    if code not in _VALID_CLOSE and not 3000 <= code <= 4999:
        raise FrameError(PROTOCOL_ERROR, f"close code {code}")
    try:
        payload[2:].decode()
    except UnicodeDecodeError:
        raise FrameError(INVALID_DATA, "a close reason that is not UTF-8") from None
    return code
