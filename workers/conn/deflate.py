"""permessage-deflate (RFC 7692), accepted when a client offers it, at no idle cost.

Why each message alone: the server answers every offer with ``server_no_context_takeover``
and ``client_no_context_takeover`` (RFC 7692 sections 7.1.1.1 and 7.1.1.2 allow both even when
the client did not ask; Node's ``ws`` does the same when told to), so no compressor nor
decompressor is kept per connection (zlib's are about 256 KiB and 40 KiB, and a browser
compresses every message it sends): a message is compressed by a compressor made for it, the
same compressed frame serves every recipient of a broadcast, and what a client sends
compressed is inflated by a decompressor made for that message. Messages under
:data:`THRESHOLD` bytes go uncompressed, as Node's ``ws`` does (RFC 7692 lets each message
choose).

Pure: no I/O.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from sio_cluster.workers.conn import ws_frames

THRESHOLD = 1024  # bytes: smaller messages are sent uncompressed
_TAIL = b"\x00\x00\xff\xff"


@dataclass(frozen=True, slots=True)
class Agreement:
    """What the server answered a client's permessage-deflate offer with."""

    header: str  # the Sec-WebSocket-Extensions answer
    window_bits: int  # the server's compression window (server_max_window_bits, or 15)


def negotiate(offers: str | None) -> Agreement | None:
    """The first permessage-deflate offer in ``offers`` that the server can take, answered;
    None to decline (then the connection is uncompressed)."""
    if not offers:
        return None
    for offer in offers.split(","):
        name, *params = (part.strip() for part in offer.split(";"))
        if name.lower() != "permessage-deflate":
            continue
        agreement = _accept(params)
        if agreement is not None:
            return agreement
    return None


def _accept(params: list[str]) -> Agreement | None:
    seen: set[str] = set()
    window_bits = 15
    for param in params:
        key, _, value = param.partition("=")
        key, value = key.strip().lower(), value.strip().strip('"')
        if key in seen:
            return None  # RFC 7692 section 7: a repeated parameter declines the offer
        seen.add(key)
        if key in ("server_no_context_takeover", "client_no_context_takeover") and not value:
            continue
        if key == "server_max_window_bits":
            if not value.isdigit() or not 9 <= int(value) <= 15:
                return None  # zlib's raw deflate cannot use a window of 8 bits
            window_bits = int(value)
        elif key == "client_max_window_bits":
            if value and (not value.isdigit() or not 8 <= int(value) <= 15):
                return None
        else:
            return None
    header = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
    if "server_max_window_bits" in seen:
        header += f"; server_max_window_bits={window_bits}"
    return Agreement(header, window_bits)


def compress(payload: bytes, window_bits: int) -> bytes:
    """``payload`` as one compressed message, with no context kept (RFC 7692 section 7.2.1)."""
    compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -window_bits)
    data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return data[:-4] if data.endswith(_TAIL) else data


def new_inflater() -> zlib._Decompress:
    """A decompressor for one message of a client (any window up to 15 bits)."""
    return zlib.decompressobj(-15)


class TooBig(Exception):
    """A compressed message inflates past the limit."""


def inflate(inflater: zlib._Decompress, payload: bytes, limit: int) -> bytes:
    """A compressed message's bytes; :class:`TooBig` past ``limit`` (a zip bomb stops there)."""
    data = inflater.decompress(payload + _TAIL, limit + 1)
    if len(data) > limit or inflater.unconsumed_tail:
        raise TooBig(f"a compressed message over {limit} bytes")
    return data


def message_frames(parts: Sequence[str | bytes], window_bits: int) -> bytes:
    """A Socket.IO packet's ``parts`` as the websocket frames of engine.io MESSAGE packets, for
    a connection that agreed to permessage-deflate: each compressed on its own when over
    :data:`THRESHOLD`, so the same bytes serve every such recipient."""
    out = []
    for part in parts:
        if isinstance(part, str):
            payload, opcode = b"4" + part.encode(), ws_frames.TEXT
        else:
            payload, opcode = part, ws_frames.BINARY
        if len(payload) >= THRESHOLD:
            out.append(ws_frames.frame(compress(payload, window_bits), opcode, compressed=True))
        else:
            out.append(ws_frames.frame(payload, opcode))
    return out[0] if len(out) == 1 else b"".join(out)
