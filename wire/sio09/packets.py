"""Socket.IO protocol 1 packets (socket.io 0.9): one frozen class per kind, a strict codec.

Why here: two parts of the cluster speak protocol 1, the master joining a 0.9 ``RedisStore``
fleet (its ``dispatch`` messages carry these packets) and the workers serving 0.9 clients, so
the format lives once, in the shared wire layer, pure (no I/O), tested on its own.

A packet is ``type:id[+]:endpoint[:data]``:

====  ==========  =============================================================
type  class       data
====  ==========  =============================================================
0     Disconnect  none
1     Connect     the query string, verbatim (``?a=b``), or none
2     Heartbeat   none
3     Message     text (``send``)
4     Json        one JSON value (``json.send``)
5     Event       ``{"name": ..., "args": [...]}`` (``args`` left out when empty)
6     Ack         ``<ack id>`` or ``<ack id>+<JSON array of args>``
7     Error       ``<reason code>[+<advice code>]``
8     Noop        none
====  ==========  =============================================================

``id`` is the sender's message id, present when it wants an acknowledgement; a ``+`` after it
(``data_ack``) means the receiver's handler answers with data, without one the receiver
acknowledges on receipt with no data. The endpoint is the namespace (``''`` for the default
one, ``/chat``) and never contains ``:``.

Several packets travel in one polling response or request as a payload: each one as
``\\ufffd<length>\\ufffd<packet>``, the length in UTF-16 code units (a JavaScript string's
``length``); a payload of one packet is the packet itself.

Why strict where the reference parsers are lenient: socket.io 0.9's ``decodePacket`` matches a
permissive regular expression and turns what it cannot read into an empty or partial packet
(an unknown type, an event whose JSON does not parse has no name). A server that keeps a
client's garbage as a half packet passes it on to handlers; ours refuses it with
:class:`PacketError`, so the caller can count it and close that client. Everything the
reference encoders produce decodes here, and everything encoded here decodes identically in
the reference parsers (the tests check both against the real sources).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, ClassVar

REASONS = ("transport not supported", "client not handshaken", "unauthorized")
"""Error reasons, by code, as 0.9 numbers them."""
ADVICE = ("reconnect",)
"""Error advice, by code."""

FRAME_MARK = "\ufffd"
MAX_ID_DIGITS = 15  # any longer id is not a JavaScript integer a 0.9 peer could have made
MAX_LENGTH_DIGITS = 15
_ASTRAL = re.compile("[\U00010000-\U0010ffff]")
_ACK_DATA = re.compile(r"([0-9]{1,15})(?:\+(.*))?", re.DOTALL)


class PacketError(ValueError):
    """A protocol 1 packet or payload that cannot be decoded strictly."""


@dataclass(frozen=True, slots=True)
class Disconnect:
    """``0::<endpoint>``: the client leaves the endpoint (or, in ``''``, the whole socket)."""

    TYPE: ClassVar[int] = 0
    endpoint: str = ""


@dataclass(frozen=True, slots=True)
class Connect:
    """``1::<endpoint>[:<query>]``: joining an endpoint, and the server's answer to it."""

    TYPE: ClassVar[int] = 1
    endpoint: str = ""
    query: str = ""


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """``2::``: sent by the server every heartbeat interval, echoed by the client."""

    TYPE: ClassVar[int] = 2
    endpoint: str = ""


@dataclass(frozen=True, slots=True)
class Message:
    """``3:<id>:<endpoint>:<text>``: ``socket.send(text)``."""

    TYPE: ClassVar[int] = 3
    data: str
    endpoint: str = ""
    id: int | None = None
    data_ack: bool = False


@dataclass(frozen=True, slots=True)
class Json:
    """``4:<id>:<endpoint>:<json>``: ``socket.json.send(value)``."""

    TYPE: ClassVar[int] = 4
    data: Any
    endpoint: str = ""
    id: int | None = None
    data_ack: bool = False


@dataclass(frozen=True, slots=True)
class Event:
    """``5:<id>:<endpoint>:{"name":..,"args":[..]}``: ``socket.emit(name, *args)``."""

    TYPE: ClassVar[int] = 5
    name: str
    args: tuple[Any, ...] = ()
    endpoint: str = ""
    id: int | None = None
    data_ack: bool = False


@dataclass(frozen=True, slots=True)
class Ack:
    """``6::<endpoint>:<ack id>[+<args>]``: the answer to the packet whose id is ``ack_id``."""

    TYPE: ClassVar[int] = 6
    ack_id: int
    args: tuple[Any, ...] = ()
    endpoint: str = ""


@dataclass(frozen=True, slots=True)
class Error:
    """``7::<endpoint>:<reason>[+<advice>]``: reason and advice by name (``''``: none)."""

    TYPE: ClassVar[int] = 7
    reason: str = ""
    advice: str = ""
    endpoint: str = ""


@dataclass(frozen=True, slots=True)
class Noop:
    """``8::``: closes a pending poll that has nothing to carry."""

    TYPE: ClassVar[int] = 8
    endpoint: str = ""


Packet = Disconnect | Connect | Heartbeat | Message | Json | Event | Ack | Error | Noop

_CLASSES: tuple[type[Packet], ...] = (
    Disconnect,
    Connect,
    Heartbeat,
    Message,
    Json,
    Event,
    Ack,
    Error,
    Noop,
)


def namespace_of(endpoint: str) -> str:
    """A 0.9 endpoint -> its python-socketio namespace (``''`` is ``/``)."""
    return endpoint or "/"


def endpoint_of(namespace: str, room: str | int | None = None) -> str:
    """A python-socketio namespace, and a room of it -> its 0.9 endpoint (``/`` is ``''``; a
    room is ``<endpoint>/<room>``, as 0.9's stores name it)."""
    endpoint = "" if namespace == "/" else namespace
    return endpoint if room is None else f"{endpoint}/{room}"


def _dumps(value: Any) -> str:
    """JSON as ``JSON.stringify`` writes it: compact, non-ASCII kept as is."""
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise ValueError(f"not JSON-serialisable for a 0.9 packet: {error}") from error


def _reject_constant(name: str) -> Any:
    raise PacketError(f"{name} is not JSON")


def _loads(text: str) -> Any:
    """Strict JSON: what ``JSON.parse`` accepts (no ``NaN``/``Infinity``)."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as error:
        raise PacketError(f"bad JSON: {error}") from None


def encode_packet(packet: Packet) -> str:
    """The packet's wire text; ``ValueError`` for a field 0.9 cannot carry."""
    if ":" in packet.endpoint:
        raise ValueError(f"an endpoint cannot contain ':': {packet.endpoint!r}")
    msg_id = ""
    data: str | None = None
    match packet:
        case Message() | Json() | Event():
            if packet.id is not None:
                if packet.id < 0:
                    raise ValueError(f"a message id is not negative: {packet.id}")
                msg_id = f"{packet.id}+" if packet.data_ack else str(packet.id)
            elif packet.data_ack:
                raise ValueError("data_ack needs a message id")
            match packet:
                case Message():
                    data = packet.data or None
                case Json():
                    data = _dumps(packet.data)
                case Event():
                    event: dict[str, Any] = {"name": packet.name}
                    if packet.args:
                        event["args"] = list(packet.args)
                    data = _dumps(event)
        case Connect():
            data = packet.query or None
        case Ack():
            if packet.ack_id < 0:
                raise ValueError(f"an ack id is not negative: {packet.ack_id}")
            data = str(packet.ack_id)
            if packet.args:
                data += "+" + _dumps(list(packet.args))
        case Error():
            reason = str(REASONS.index(packet.reason)) if packet.reason else ""
            advice = str(ADVICE.index(packet.advice)) if packet.advice else ""
            if reason or advice:
                data = reason + ("+" + advice if advice else "")
    head = f"{packet.TYPE}:{msg_id}:{packet.endpoint}"
    return head if data is None else f"{head}:{data}"


def decode_packet(text: str) -> Packet:
    """The packet ``text`` holds; :class:`PacketError` for anything 0.9 would not have sent."""
    first = text.find(":")
    second = text.find(":", first + 1) if first >= 0 else -1
    if second < 0:
        raise PacketError(f"not a 0.9 packet (needs 'type:id:endpoint'): {text[:40]!r}")
    type_text, id_text = text[:first], text[first + 1 : second]
    if len(type_text) != 1 or not "0" <= type_text <= "8":
        raise PacketError(f"unknown packet type {type_text[:10]!r}")
    kind = _CLASSES[int(type_text)]
    third = text.find(":", second + 1)
    if third < 0:
        endpoint, data = text[second + 1 :], None
    else:
        endpoint, data = text[second + 1 : third], text[third + 1 :]
    msg_id, data_ack = _decode_id(id_text)
    if msg_id is not None and kind not in (Message, Json, Event):
        raise PacketError(f"a type {kind.TYPE} packet carries no message id")
    if kind is Message:
        return Message(data or "", endpoint, msg_id, data_ack)
    if kind is Json:
        if data is None:
            raise PacketError("a JSON message without data")
        return Json(_loads(data), endpoint, msg_id, data_ack)
    if kind is Event:
        return _decode_event(data, endpoint, msg_id, data_ack)
    if kind is Ack:
        return _decode_ack(data, endpoint)
    if kind is Error:
        return _decode_error(data or "", endpoint)
    if kind is Connect:
        return Connect(endpoint, data or "")
    if data:
        raise PacketError(f"a type {kind.TYPE} packet carries no data")
    if kind is Disconnect:
        return Disconnect(endpoint)
    return Heartbeat(endpoint) if kind is Heartbeat else Noop(endpoint)


def _decode_id(id_text: str) -> tuple[int | None, bool]:
    data_ack = id_text.endswith("+")
    digits = id_text[:-1] if data_ack else id_text
    if not digits:
        if data_ack:
            raise PacketError("'+' without a message id")
        return None, False
    if not (digits.isascii() and digits.isdigit()) or len(digits) > MAX_ID_DIGITS:
        raise PacketError(f"bad message id {id_text[:20]!r}")
    return int(digits), data_ack


def _decode_event(data: str | None, endpoint: str, msg_id: int | None, data_ack: bool) -> Event:
    if data is None:
        raise PacketError("an event without data")
    value = _loads(data)
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        raise PacketError("an event is an object with a string 'name'")
    args = value.get("args", [])
    if not isinstance(args, list):
        raise PacketError("an event's 'args' is an array")
    return Event(value["name"], tuple(args), endpoint, msg_id, data_ack)


def _decode_ack(data: str | None, endpoint: str) -> Ack:
    match = _ACK_DATA.fullmatch(data or "")
    if match is None:
        raise PacketError(f"bad ack data {(data or '')[:40]!r}")
    args_text = match.group(2)
    args: list[Any] = [] if args_text is None else _loads(args_text)
    if not isinstance(args, list):
        raise PacketError("an ack's args are an array")
    return Ack(int(match.group(1)), tuple(args), endpoint)


def _decode_error(data: str, endpoint: str) -> Error:
    reason_code, _, advice_code = data.partition("+")
    try:
        reason = REASONS[int(reason_code)] if reason_code else ""
        advice = ADVICE[int(advice_code)] if advice_code else ""
    except (ValueError, IndexError):
        raise PacketError(f"bad error data {data[:40]!r}") from None
    return Error(reason, advice, endpoint)


def js_length(text: str) -> int:
    """``text.length`` in JavaScript: UTF-16 code units, which payload lengths count."""
    if text.isascii():
        return len(text)
    return len(text) + len(_ASTRAL.findall(text))


def encode_payload(packets: list[str]) -> str:
    """Encoded packets as one polling body (a single packet travels bare)."""
    if len(packets) == 1:
        return packets[0]
    return "".join(f"{FRAME_MARK}{js_length(p)}{FRAME_MARK}{p}" for p in packets)


def decode_payload(body: str) -> list[str]:
    """The encoded packets of a polling body; :class:`PacketError` for a broken frame."""
    if not body.startswith(FRAME_MARK):
        return [body]
    packets: list[str] = []
    position = 0
    while position < len(body):
        if body[position] != FRAME_MARK:
            raise PacketError(f"payload frame {len(packets)} does not start with U+FFFD")
        end_of_length = body.find(FRAME_MARK, position + 1)
        digits = body[position + 1 : end_of_length]
        if (
            end_of_length < 0
            or not digits
            or len(digits) > MAX_LENGTH_DIGITS
            or not (digits.isascii() and digits.isdigit())
        ):
            raise PacketError(f"payload frame {len(packets)} has a bad length")
        start = end_of_length + 1
        end = _advance_utf16(body, start, int(digits))
        packets.append(body[start:end])
        position = end
    return packets


def _advance_utf16(body: str, start: int, units: int) -> int:
    """The index ``units`` UTF-16 code units after ``start``; the frame must lie whole in body."""
    candidate = body[start : start + units]
    if len(candidate) < units:
        raise PacketError("payload frame longer than the payload")
    astral = len(_ASTRAL.findall(candidate))
    if not astral:
        return start + units
    end = start
    while units > 0:
        if end >= len(body):
            raise PacketError("payload frame longer than the payload")
        units -= 2 if body[end] >= "\U00010000" else 1
        end += 1
    if units < 0:
        raise PacketError("payload frame length splits a character")
    return end
