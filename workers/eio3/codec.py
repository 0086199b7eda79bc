"""Engine.IO protocol 3 and Socket.IO protocol 4, as socket.io-client 1.x and 2.x speak them.

Why: python-engineio speaks Engine.IO 4 only. A worker serving old clients (``--allow-eio3``)
keeps python-engineio's packets and translates at the edges; this module is that translation,
pure, so that every rule is tested on its own (:mod:`workers.eio3.translate` applies it to
real requests).
The reference is what Node's server does with ``allowEIO3``: engine.io 6's ``parser-v3``
and the protocol-3 branches of socket.io 4.8.

What differs from Engine.IO 4:

- long-polling payloads: ``<length>:<packet>`` records, the length in UTF-16 code units (a
  JavaScript string's length), binary packets as ``b<type><base64>``; or, for a client that
  takes binary and when a packet is binary, records of ``<0|1><length digits as bytes>0xFF``
  (strings as UTF-8, their length in bytes);
- a binary websocket frame starts with its packet type (``0x04``, message);
- the client pings and the server answers (handled in ``workers.eio3.translate``).

What differs from Socket.IO 5: the client is in ``/`` without asking; a namespace CONNECT
carries a query string (``0/chat?token=x,``) instead of an auth payload; CONNECT and
DISCONNECT carry no data; a CONNECT_ERROR carries the error's data or message itself.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from urllib.parse import parse_qs

from engineio import packet as eio_packet
from socketio import packet as sio_packet

TEXT_CONTENT_TYPE = "text/plain; charset=UTF-8"
BINARY_CONTENT_TYPE = "application/octet-stream"
MAX_LENGTH_DIGITS = 310  # the reference parser gives up on a longer length field too
_WS_MESSAGE = b"\x04"  # a v3 binary websocket frame's first byte: packet type "message"
_STRING_RECORD, _BINARY_RECORD, _LENGTH_END = 0, 1, 0xFF


class PayloadError(ValueError):
    """A client's Engine.IO 3 payload or frame that cannot be decoded."""


def js_length(text: str) -> int:
    """``text.length`` in JavaScript: UTF-16 code units, which v3 text payloads count."""
    if text.isascii():
        return len(text)
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def _text_packet(pkt: eio_packet.Packet) -> str:
    """A packet in its v3 string form (a binary one as ``b<type><base64>``)."""
    if pkt.binary:
        return f"b{pkt.packet_type}{base64.b64encode(pkt.data).decode('ascii')}"
    encoded: str = pkt.encode()
    return encoded


def _record_header(kind: int, length: int) -> bytes:
    return bytes((kind, *(int(digit) for digit in str(length)), _LENGTH_END))


def encode_payload(
    packets: Sequence[eio_packet.Packet], supports_binary: bool
) -> tuple[bytes, str]:
    """A long-poll answer's body and content type for a v3 client.

    ``supports_binary`` is False for a client that asked for base64 (``b64=1`` at its
    handshake): then binary packets travel as text, as engine.io does.
    """
    if supports_binary and any(pkt.binary for pkt in packets):
        records = []
        for pkt in packets:
            if pkt.binary:
                body = bytes((pkt.packet_type,)) + pkt.data
                records.append(_record_header(_BINARY_RECORD, len(body)) + body)
            else:
                body = pkt.encode().encode("utf-8")
                records.append(_record_header(_STRING_RECORD, len(body)) + body)
        return b"".join(records), BINARY_CONTENT_TYPE
    if not packets:
        return b"0:", TEXT_CONTENT_TYPE
    text = "".join(f"{js_length(m)}:{m}" for m in map(_text_packet, packets))
    return text.encode("utf-8"), TEXT_CONTENT_TYPE


def _decode_text_packet(text: str) -> eio_packet.Packet:
    if text.startswith("b"):
        if text[1:2] != str(eio_packet.MESSAGE):
            raise PayloadError(f"a base64 packet of type {text[1:2]!r}")
        try:
            data = base64.b64decode(text[2:], validate=True)
        except binascii.Error as exc:
            raise PayloadError(f"bad base64 in a packet: {exc}") from None
        return eio_packet.Packet(eio_packet.MESSAGE, data)
    if not text[:1].isdigit() or int(text[0]) >= len(eio_packet.packet_names):
        raise PayloadError(f"a packet of unknown type {text[:1]!r}")
    try:
        return eio_packet.Packet(encoded_packet=text)
    except ValueError as exc:
        raise PayloadError(str(exc)) from None


def _decode_text_payload(text: str) -> list[eio_packet.Packet]:
    if not text:
        raise PayloadError("an empty payload")
    # lengths count UTF-16 code units: walk the text as UTF-16 unless it is ASCII
    wide = not text.isascii()
    units = text.encode("utf-16-le", "surrogatepass") if wide else b""
    size = len(units) // 2 if wide else len(text)
    packets = []
    position = 0
    while position < size:
        if wide:
            colon = units.find(b":\x00", position * 2)
            while colon != -1 and colon % 2:
                colon = units.find(b":\x00", colon + 1)
            colon = colon // 2 if colon != -1 else -1
            digits = units[position * 2 : colon * 2].decode("utf-16-le") if colon != -1 else ""
        else:
            colon = text.find(":", position)
            digits = text[position:colon] if colon != -1 else ""
        if colon == -1 or not digits.isdigit() or len(digits) > MAX_LENGTH_DIGITS:
            raise PayloadError("a record without a valid length")
        length = int(digits)
        start, end = colon + 1, colon + 1 + length
        if end > size:
            raise PayloadError(f"a record of {length} units with {size - start} left")
        if wide:
            record = units[start * 2 : end * 2].decode("utf-16-le", "surrogatepass")
        else:
            record = text[start:end]
        if record:
            packets.append(_decode_text_packet(record))
        position = end
    return packets


def _decode_binary_payload(body: bytes) -> list[eio_packet.Packet]:
    packets = []
    position = 0
    while position < len(body):
        kind = body[position]
        end_of_length = body.find(_LENGTH_END, position + 1, position + 2 + MAX_LENGTH_DIGITS)
        digits = body[position + 1 : end_of_length]
        if (
            kind not in (_STRING_RECORD, _BINARY_RECORD)
            or end_of_length == -1
            or not digits
            or max(digits) > 9
        ):
            raise PayloadError("a binary record without a valid header")
        length = int("".join(map(str, digits)))
        start = end_of_length + 1
        record = body[start : start + length]
        if len(record) != length:
            raise PayloadError(f"a binary record of {length} bytes with {len(record)} left")
        if kind == _STRING_RECORD:
            try:
                packets.append(_decode_text_packet(record.decode("utf-8")))
            except UnicodeDecodeError:
                raise PayloadError("a string record that is not UTF-8") from None
        elif record[:1] == _WS_MESSAGE:
            packets.append(eio_packet.Packet(eio_packet.MESSAGE, record[1:]))
        else:
            raise PayloadError(f"a binary record of packet type {record[:1]!r}")
        position = start + length
    return packets


def decode_payload(body: bytes, content_type: str) -> list[eio_packet.Packet]:
    """The packets of a v3 client's long-poll POST (binary records if its content type says
    so); :class:`PayloadError` if it is malformed."""
    if content_type.split(";")[0].strip().lower() == BINARY_CONTENT_TYPE:
        return _decode_binary_payload(body)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise PayloadError("a text payload that is not UTF-8") from None
    return _decode_text_payload(text)


def websocket_binary(data: bytes) -> bytes:
    """A binary message as a v3 websocket frame's payload (its type byte first)."""
    return _WS_MESSAGE + data


def websocket_message(message: str | bytes) -> str | bytes:
    """A v3 client's websocket message as engine.io 4 reads it."""
    if isinstance(message, bytes | bytearray):
        if message[:1] != _WS_MESSAGE:
            raise PayloadError(f"a binary frame of packet type {bytes(message[:1])!r}")
        return bytes(message[1:])
    if message.startswith("b"):  # base64 binary (a client told to force base64)
        return "b" + message[2:]
    return message


def connect_request(data: str) -> str:
    """A v3 client's namespace CONNECT as Socket.IO 5 writes it: the query string it carries
    (``0/chat?token=x,``) becomes the auth payload (``0/chat,{"token":"x"}``), as socket.io 4
    does. Other packets are returned as they are."""
    if not data.startswith("0/"):
        return data
    end = data.find(",")
    target = data[1:] if end == -1 else data[1:end]
    namespace, mark, query = target.partition("?")
    if not mark:
        return data
    fields = parse_qs(query, keep_blank_values=True)
    auth = {key: values[0] if len(values) == 1 else values for key, values in fields.items()}
    prefix = "0" if namespace == "/" else f"0{namespace},"
    return prefix + json.dumps(auth, separators=(",", ":"))


def downgrade_reply(pkt: sio_packet.Packet) -> sio_packet.Packet:
    """A Socket.IO 5 packet the server sends as a v3 client reads it: CONNECT and DISCONNECT
    without data (the 2.x parser rejects them otherwise), CONNECT_ERROR with the error's
    ``data`` or else its ``message``. Other packets are returned as they are."""
    if pkt.packet_type in (sio_packet.CONNECT, sio_packet.DISCONNECT) and pkt.data is not None:
        return type(pkt)(pkt.packet_type, namespace=pkt.namespace)
    if pkt.packet_type == sio_packet.CONNECT_ERROR and isinstance(pkt.data, dict):
        reason = pkt.data.get("data") or pkt.data.get("message")
        return type(pkt)(pkt.packet_type, reason, namespace=pkt.namespace)
    return pkt
