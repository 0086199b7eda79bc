"""Socket.IO 5 packets (python-socketio's) to protocol 1 packets (socket.io 0.9's) and back.

Pure: text in, text out, so every rule is tested on its own (:mod:`workers.v09.session` applies
them to real connections). Namespaces map to 0.9 endpoints: ``/`` is ``''``, ``/chat`` is
``/chat``.

From a 0.9 client (:func:`upgrade`):

- ``socket.emit(name, *args)`` is an EVENT; with a callback (``5:7+::…``) its id is kept, so
  python-socketio's ACK answers it; a bare id (``5:7::…``, no ``+``) asks for an
  acknowledgement on receipt without data, which 0.9 servers send at once: so do we;
- ``socket.send(text)`` and ``socket.json.send(value)`` are the event ``message`` with that one
  argument (0.9 servers emit ``message`` for both);
- an ACK is an ACK; ``1::/chat`` is a CONNECT with the handshake query as its auth; ``0::/chat``
  a DISCONNECT of that namespace (``0::`` closes the whole connection: the caller's job);
- an event named ``connect`` or ``disconnect`` is dropped, as 0.9 drops a blacklisted one
  (python-socketio would run the connect or disconnect handler for it); its acknowledgement on
  receipt, if it asked for one, is still sent, as 0.9 sends it before looking at the name.

To a 0.9 client (:func:`downgrade`): CONNECT is ``1::<endpoint>``, DISCONNECT ``0::<endpoint>``,
EVENT ``5:<id>+:<endpoint>:{"name":…,"args":[…]}`` (an id asks for the callback's data),
ACK ``6::<endpoint>:<id>+[…]``, CONNECT_ERROR the error ``unauthorized`` 0.9 sends when a
namespace's authorization fails. Binary events and acks have no protocol 1 form: None.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sio_cluster.wire.sio09 import packets as p09
from sio_cluster.wire.sio09.packets import endpoint_of

IGNORED_EVENTS = frozenset(("connect", "disconnect"))
"""Event names a 0.9 client's emit is dropped for: python-socketio would run the namespace's
connect or disconnect handler for them (its ``BaseServer.reserved_events``). 0.9 ignores an
event on its blacklist the same way (``['disconnect']`` by default) rather than closing the
client; every other name, ``error`` or ``newListener`` included, is an ordinary event there
and here."""

_CONNECT, _DISCONNECT, _EVENT, _ACK, _CONNECT_ERROR = "0", "1", "2", "3", "4"


@dataclass(frozen=True, slots=True)
class Upgraded:
    """What one 0.9 packet becomes: Socket.IO 5 text for python-socketio (None: nothing), and a
    0.9 packet to answer at once (an acknowledgement on receipt), if any."""

    socketio: str | None
    reply: str | None = None


NOTHING = Upgraded(None)


def _prefix(kind: str, endpoint: str) -> str:
    return kind + (f"{endpoint}," if endpoint else "")


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _event(
    name: str, args: tuple[Any, ...], packet: p09.Message | p09.Json | p09.Event
) -> Upgraded:
    endpoint = packet.endpoint
    if name in IGNORED_EVENTS:
        if packet.id is None or packet.data_ack:
            return NOTHING
        return Upgraded(None, p09.encode_packet(p09.Ack(packet.id, (), endpoint)))
    if packet.id is not None and packet.data_ack:
        text = f"{_prefix(_EVENT, endpoint)}{packet.id}{_dumps([name, *args])}"
        return Upgraded(text)
    reply = None
    if packet.id is not None:
        reply = p09.encode_packet(p09.Ack(packet.id, (), endpoint))
    return Upgraded(f"{_prefix(_EVENT, endpoint)}{_dumps([name, *args])}", reply)


def upgrade(packet: p09.Packet, auth: dict[str, Any]) -> Upgraded:
    """What a 0.9 client's ``packet`` means to python-socketio (see the module docstring).
    ``auth``: the auth of a namespace CONNECT (the handshake query). Heartbeat, noop, error,
    ``1::`` and ``0::`` become nothing here."""
    match packet:
        case p09.Event(name, args):
            return _event(name, args, packet)
        case p09.Message(data):
            return _event("message", (data,), packet)
        case p09.Json(data):
            return _event("message", (data,), packet)
        case p09.Ack(ack_id, args, endpoint):
            return Upgraded(f"{_prefix(_ACK, endpoint)}{ack_id}{_dumps(list(args))}")
        case p09.Connect(endpoint) if endpoint:
            return Upgraded(f"{_prefix(_CONNECT, endpoint)}{_dumps(auth)}")
        case p09.Disconnect(endpoint) if endpoint:
            return Upgraded(_prefix(_DISCONNECT, endpoint))
    return NOTHING


def downgrade(text: str) -> str | None:
    """The 0.9 form of a Socket.IO 5 packet python-socketio sends (None: it has none)."""
    kind, rest = text[:1], text[1:]
    if kind not in (_CONNECT, _DISCONNECT, _EVENT, _ACK, _CONNECT_ERROR):
        return None  # binary events and acks: protocol 1 has no binary
    namespace = "/"
    if rest.startswith("/"):
        namespace, comma, rest = rest.partition(",")
        if not comma:
            rest = ""
    digits = 0
    while digits < len(rest) and rest[digits].isdigit():
        digits += 1
    ack_id = int(rest[:digits]) if digits else None
    data = json.loads(rest[digits:]) if rest[digits:] else None
    endpoint = endpoint_of(namespace)
    packet: p09.Packet
    if kind == _EVENT and isinstance(data, list) and data and isinstance(data[0], str):
        packet = p09.Event(data[0], tuple(data[1:]), endpoint, ack_id, ack_id is not None)
    elif kind == _ACK and ack_id is not None and isinstance(data, list):
        packet = p09.Ack(ack_id, tuple(data), endpoint)
    elif kind == _CONNECT:
        packet = p09.Connect(endpoint)
    elif kind == _DISCONNECT:
        packet = p09.Disconnect(endpoint)
    elif kind == _CONNECT_ERROR:
        packet = p09.Error("unauthorized", "", endpoint)
    else:
        return None  # an event without a name: nothing a 0.9 client could be told
    return p09.encode_packet(packet)
