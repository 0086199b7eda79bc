"""socket.io 0.9's ``RedisStore`` messages, read and written: pure, no I/O.

What a 0.9 server publishes (socket.io 0.9.19, ``lib/stores/redis.js``): on the channel named
by the event itself (plain SUBSCRIBE, no prefix), ``JSON.stringify({nodeId, args})``, and a
subscriber drops what its own ``nodeId`` published. The ``args`` this bridge reads:

===================  ==========================================  =========================
channel              args                                        published by
===================  ==========================================  =========================
``join``             ``[id, endpoint]``                          a socket joins a namespace
                                                                 or a room
``leave``            ``[id, endpoint]``                          ... leaves it
``disconnect``       ``[id]``                                    (0.9 subscribes; we publish)
``disconnect-remote`` ``[id, reason]``                           a client's transport ended
``dispatch``         ``[endpoint, packet, volatile, exceptions]`` ``io.sockets.in(r).emit``,
                                                                 ``socket.broadcast.emit``
``dispatch-remote``  ``[id, packet, volatile]``                  ``socket.emit`` for a client
                                                                 another server holds
===================  ==========================================  =========================

An endpoint names a namespace (``''``, ``/chat``) or a room in one (``/room`` in ``''``,
``/chat/room``): 0.9 keeps both in one table, so ``/x`` is at once the namespace ``/x`` and the
room ``x`` of ``''``. A dispatch's packet carries its namespace, so a dispatch is never
ambiguous; a join alone is, exactly as it is for 0.9's own ``clients(room)``.

It is the format :mod:`legacy_store.redis_store` writes; the master does not use that class,
whose own three connections and per-channel consumers would bypass the master's one subscriber
and its bounded outbox.

Our masters publish with a ``nodeId`` that starts with :data:`OUR_NODE_PREFIX` (0.9 compares
node ids with ``!=``, so a string is fine): every master ignores what another of ours
publishes, since our hosts already reach each other through the redis-adapter bus.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from sio_cluster.wire.sio09.packets import (
    Event,
    Json,
    Message,
    PacketError,
    decode_packet,
    endpoint_of,
    namespace_of,
)
from sio_cluster.wire.sio09.packets import encode_packet as encode_09_packet

JOIN: Final = "join"
LEAVE: Final = "leave"
DISCONNECT: Final = "disconnect"
DISCONNECT_REMOTE: Final = "disconnect-remote"
DISPATCH: Final = "dispatch"
DISPATCH_REMOTE: Final = "dispatch-remote"
MESSAGE_REMOTE: Final = "message-remote"
CHANNELS: Final = (JOIN, LEAVE, DISCONNECT, DISCONNECT_REMOTE, DISPATCH, DISPATCH_REMOTE)

OUR_NODE_PREFIX: Final = "sio-cluster:"
# The client id of the roll call (see master.store09.bridge): no 0.9 id looks like it
# (0.9 makes its ids of 20 base64 characters), and no socket of ours has it.
ROLL_CALL_ID: Final = "sio-cluster-roll-call"
# What the roll call asks every 0.9 server to handle: a client leaving the '' namespace.
# Each one answers ``leave [ROLL_CALL_ID, '']`` under its own node id, and changes nothing
# (that client is in no room); see docs/migrating-0.9.md.
ROLL_CALL_PACKET: Final = {"type": "disconnect", "endpoint": ""}


class StoreFormatError(ValueError):
    """A store message this bridge cannot read (counted, logged, ignored)."""


@dataclass(frozen=True, slots=True)
class StoreMessage:
    """One published message: who published it and the event's arguments."""

    node_id: str | int
    args: list[Any]

    @property
    def ours(self) -> bool:
        """Published by one of our masters."""
        return isinstance(self.node_id, str) and self.node_id.startswith(OUR_NODE_PREFIX)


@dataclass(frozen=True, slots=True)
class Dispatch:
    """A 0.9 broadcast: to the sockets of ``namespace`` (in ``room``, None: all), minus
    ``exceptions`` (client ids), as the v4 event ``data`` (``[event, *args]``).

    0.9's ``volatile`` flag is not kept: it lets a 0.9 server drop the packet for a client
    whose transport is busy, and python-socketio has no such emit, so our sockets get a
    volatile dispatch like any other (docs/migrating-0.9.md)."""

    namespace: str
    room: str | None
    data: list[Any]
    exceptions: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DirectDispatch:
    """A 0.9 ``socket.emit`` for a client another server holds (``volatile``: as for
    :class:`Dispatch`)."""

    client_id: str
    namespace: str
    data: list[Any]


def decode_message(body: bytes) -> StoreMessage:
    """The ``{nodeId, args}`` of a body; :class:`StoreFormatError` for anything else."""
    try:
        value = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise StoreFormatError(f"not JSON (a msgpack store is not supported): {exc}") from None
    if not isinstance(value, dict) or not isinstance(value.get("args"), list):
        raise StoreFormatError("not a {nodeId, args} object")
    node_id = value.get("nodeId")
    if not isinstance(node_id, str | int) or isinstance(node_id, bool):
        raise StoreFormatError(f"a nodeId must be a number or a string, got {node_id!r}")
    return StoreMessage(node_id, value["args"])


def encode_message(node_id: str, *args: Any) -> bytes:
    """What ``RedisStore.publish(name, *args)`` writes: ``JSON.stringify({nodeId, args})``;
    ``None`` stands for JavaScript's ``undefined`` (``null`` in an array, as Node writes it)."""
    body = json.dumps({"nodeId": node_id, "args": list(args)}, separators=(",", ":"))
    return body.encode()


def room_names(namespace: str, endpoints: Sequence[str]) -> list[str]:
    """The rooms of ``namespace`` among a 0.9 client's endpoints (``/chat/a`` -> ``a``)."""
    head = endpoint_of(namespace) + "/"
    return [e[len(head) :] for e in endpoints if e.startswith(head) and len(e) > len(head)]


def _client_id(value: Any) -> str:
    # 0.9's ids are strings; a number is taken as its decimal form
    if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
        raise StoreFormatError(f"a client id must be a non-empty string, got {value!r}")
    return str(value)


def _args(message: StoreMessage, least: int) -> list[Any]:
    if len(message.args) < least:
        raise StoreFormatError(f"{least} arguments expected, got {len(message.args)}")
    return message.args


def read_membership(message: StoreMessage) -> tuple[str, str]:
    """``join``/``leave``: the client id and the endpoint."""
    client, endpoint = _args(message, 2)[:2]
    if not isinstance(endpoint, str):
        raise StoreFormatError(f"an endpoint must be a string, got {endpoint!r}")
    return _client_id(client), endpoint


def read_client(message: StoreMessage) -> str:
    """``disconnect``/``disconnect-remote``: the client id."""
    return _client_id(_args(message, 1)[0])


def v4_data(packet: Any) -> tuple[str, list[Any]] | None:
    """A 0.9 packet's namespace and the v4 event it is (``[event, *args]``): an event as
    itself, a ``send``/``json.send`` as ``message``; None for a packet that is no message
    (connect, ack ...), which a broadcast does not carry to our clients."""
    if not isinstance(packet, str):
        raise StoreFormatError(f"a packet must be a string, got {type(packet).__name__}")
    try:
        decoded = decode_packet(packet)
    except PacketError as exc:
        raise StoreFormatError(str(exc)) from None
    match decoded:
        case Event():
            return namespace_of(decoded.endpoint), [decoded.name, *decoded.args]
        case Message() | Json():
            return namespace_of(decoded.endpoint), ["message", decoded.data]
    return None


def read_dispatch(message: StoreMessage) -> Dispatch | None:
    """``dispatch``: what to deliver, to whom; None for a packet that is no message."""
    args = _args(message, 2)
    endpoint, packet = args[0], args[1]
    exceptions = args[3] if len(args) > 3 else None
    if not isinstance(endpoint, str):
        raise StoreFormatError(f"an endpoint must be a string, got {endpoint!r}")
    if exceptions is None:
        exceptions = []
    if not isinstance(exceptions, list):
        raise StoreFormatError("the exceptions must be a list of client ids")
    read = v4_data(packet)
    if read is None:
        return None
    namespace, data = read
    nsp = endpoint_of(namespace)
    if endpoint == nsp:
        room = None
    elif endpoint.startswith(nsp + "/"):
        room = endpoint[len(nsp) + 1 :]
    else:
        raise StoreFormatError(f"endpoint {endpoint!r} is not in the packet's namespace {nsp!r}")
    ids = tuple(_client_id(e) for e in exceptions)
    return Dispatch(namespace, room, data, ids)


def read_direct(message: StoreMessage) -> DirectDispatch | None:
    """``dispatch-remote``: the one client and what it gets; None for no message."""
    client, packet = _args(message, 2)[:2]
    read = v4_data(packet)
    if read is None:
        return None
    return DirectDispatch(_client_id(client), read[0], read[1])


def event_packet(namespace: str, data: list[Any]) -> str:
    """Our event ``[event, *args]`` of ``namespace`` as 0.9's packet text
    (``5:::{"name":...,"args":[...]}``); ``ValueError`` for what 0.9 cannot carry (binary)."""
    if not data or not isinstance(data[0], str):
        raise ValueError("an event needs a name")
    return encode_09_packet(Event(data[0], tuple(data[1:]), endpoint_of(namespace)))
