"""Engine.IO 4 long-polling payloads: the packets of one HTTP body, and back.

A payload is its packets' encodings joined by the record separator (``\\x1e``); a binary
packet is ``b`` and its bytes in base64 (engine.io's protocol, version 4). Pure: no I/O.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from typing import Any

SEPARATOR = "\x1e"


class PayloadError(ValueError):
    """A POST body that is not an Engine.IO 4 payload."""


def encode(packets: Iterable[Any]) -> bytes:
    """The body answering a poll with engine.io ``packets`` (``Packet.encode(b64=True)``)."""
    return SEPARATOR.join(pkt.encode(b64=True) for pkt in packets).encode()


def decode(body: bytes) -> list[str | bytes]:
    """The packets of a POST body: a text packet as its encoding (type digit first), a
    binary one as its bytes (a binary MESSAGE); none in an empty body, as python-engineio
    reads it. Raises :class:`PayloadError`."""
    if not body:
        return []
    try:
        text = body.decode()
    except UnicodeDecodeError:
        raise PayloadError("a payload that is not UTF-8") from None
    packets: list[str | bytes] = []
    for part in text.split(SEPARATOR):
        if not part:
            raise PayloadError("an empty packet in a payload")
        if part[0] == "b":
            try:
                packets.append(base64.b64decode(part[1:], validate=True))
            except binascii.Error:
                raise PayloadError("a binary packet that is not base64") from None
        else:
            packets.append(part)
    return packets
