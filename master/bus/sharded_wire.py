"""The sharded @socket.io/redis-adapter wire format (``createShardedAdapter``), I/O-free.

Why a second format: Node's sharded adapter (8.x, Redis >= 7, SPUBLISH/SSUBSCRIBE)
is not the classic one with other channels. It is socket.io-adapter's
``ClusterAdapter`` protocol: every message is one map ``{uid, nsp, type, data}``,
JSON, or msgpack (notepack) when its data holds binary, on these shard channels:

- ``<key>#<nsp>#``: broadcasts and requests of the namespace (every server);
- ``<key>#<nsp>#<room>#``: a broadcast to exactly that one room, in the
  "dynamic" subscription modes (servers subscribe to the rooms they hold);
- ``<key>#<nsp>#<uid>#``: responses to the server ``uid``.

Node's servers never answer join/leave/disconnect. Ours add a ``requestId`` to
those (Node ignores it) and our masters answer with ``{type, requestId, count}``,
so a master knows when the change is applied on our hosts. A channel only our
masters subscribe to, ``<key>-masters#<nsp>#``, tells them apart in
``PUBSUB SHARDNUMSUB``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import orjson

from sio_cluster.common.choices import SubscriptionMode
from sio_cluster.master.bus.classic_wire import (
    AckedEmit,
    AdapterFormatError,
    acked_emit,
    decode_request,
    event_data,
    pack,
)
from sio_cluster.wire.frames import Room, is_room
from sio_cluster.wire.operations import (
    ClusterOperation,
    DisconnectSockets,
    EmitWithAck,
    FetchSockets,
    JoinRooms,
    LeaveRooms,
    Selector,
    ServerEmit,
)

SOCKET_ID_LENGTH = 20  # Node's looksLikeASocketId: a string room of this length


class MessageType(IntEnum):
    """socket.io-adapter's ClusterAdapter message types."""

    INITIAL_HEARTBEAT = 1
    HEARTBEAT = 2
    BROADCAST = 3
    SOCKETS_JOIN = 4
    SOCKETS_LEAVE = 5
    DISCONNECT_SOCKETS = 6
    FETCH_SOCKETS = 7
    FETCH_SOCKETS_RESPONSE = 8
    SERVER_SIDE_EMIT = 9
    SERVER_SIDE_EMIT_RESPONSE = 10
    BROADCAST_CLIENT_COUNT = 11
    BROADCAST_ACK = 12
    ADAPTER_CLOSE = 13


RESPONSE_TYPES = frozenset(
    {
        MessageType.FETCH_SOCKETS_RESPONSE,
        MessageType.SERVER_SIDE_EMIT_RESPONSE,
        MessageType.BROADCAST_CLIENT_COUNT,
        MessageType.BROADCAST_ACK,
    }
)
BINARY_TYPES = frozenset(
    {
        MessageType.BROADCAST,
        MessageType.BROADCAST_ACK,
        MessageType.FETCH_SOCKETS_RESPONSE,
        MessageType.SERVER_SIDE_EMIT,
        MessageType.SERVER_SIDE_EMIT_RESPONSE,
    }
)


@dataclass(frozen=True)
class ShardChannels:
    """Shard channel names for one prefix (``--adapter-key``) and subscription mode."""

    key: str = "socket.io"
    mode: SubscriptionMode = "dynamic"

    def namespace(self, namespace: str) -> str:
        return f"{self.key}#{namespace}#"

    def room(self, namespace: str, room: Room) -> str:
        return f"{self.key}#{namespace}#{room}#"

    def response(self, namespace: str, uid: str) -> str:
        return f"{self.key}#{namespace}#{uid}#"

    def masters(self, namespace: str) -> str:
        """Subscribed by our masters only, never published to (see the module docstring)."""
        return f"{self.key}-masters#{namespace}#"

    def subscribes_room(self, room: Room, is_sid: bool) -> bool:
        """Whether a server holding ``room`` subscribes to its channel (Node's rule:
        public rooms in "dynamic" mode, every room in "dynamic-private")."""
        return self.mode == "dynamic-private" or (self.mode == "dynamic" and not is_sid)

    def broadcast(self, namespace: str, rooms: Sequence[Room] | None) -> str:
        """Where a broadcast (without acks) goes: Node's ``computeChannel``."""
        if rooms is not None and len(rooms) == 1:
            room = rooms[0]
            looks_like_sid = isinstance(room, str) and len(room) == SOCKET_ID_LENGTH
            if self.mode == "dynamic-private" or (self.mode == "dynamic" and not looks_like_sid):
                return self.room(namespace, room)
        return self.namespace(namespace)

    def room_of(self, channel: str) -> tuple[str, str] | None:
        """``(namespace, room or uid)`` of a room or response channel, else None."""
        head = f"{self.key}#"
        if not channel.startswith(head) or not channel.endswith("#"):
            return None
        namespace, sep, room = channel[len(head) : -1].partition("#")
        return (namespace, room) if sep and room else None


def has_binary(value: Any) -> bool:
    if isinstance(value, bytes | bytearray):
        return True
    if isinstance(value, list | tuple):
        return any(has_binary(v) for v in value)
    if isinstance(value, dict):
        return any(has_binary(v) for v in value.values())
    return False


def encode(uid: str, namespace: str, kind: MessageType, data: dict[str, Any] | None) -> bytes:
    """``{uid, nsp, type, data}``: msgpack when the data holds binary, else JSON (Node's
    choice). ``uid`` comes first so our own echo is recognised undecoded."""
    message: dict[str, Any] = {"uid": uid, "nsp": namespace, "type": int(kind)}
    if data is not None:
        message["data"] = data
    if kind in BINARY_TYPES and has_binary(data):
        return pack(message)
    return orjson.dumps(message)


def echo_prefixes(uid: str) -> tuple[bytes, bytes]:
    """How our own messages start, in JSON and in msgpack."""
    return orjson.dumps({"uid": uid})[:-1], pack("uid") + pack(uid)


@dataclass(frozen=True)
class ShardMessage:
    """A decoded message: sender, namespace, type (an int, maybe unknown) and data."""

    uid: str
    namespace: str
    kind: int
    data: dict[str, Any]

    @property
    def request_id(self) -> str | None:
        value = self.data.get("requestId")
        return None if value is None else str(value)


def decode(body: bytes) -> ShardMessage:
    """JSON when the first byte is ``{``, else msgpack; raise :class:`AdapterFormatError`."""
    value = decode_request(body)
    kind, data = value.get("type"), value.get("data")
    if type(kind) is not int:
        raise AdapterFormatError("a message needs an integer 'type'")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise AdapterFormatError("a message's data must be a map")
    namespace = value.get("nsp")
    return ShardMessage(
        str(value.get("uid")), namespace if isinstance(namespace, str) else "/", kind, data
    )


def _room_list(value: Any) -> list[Room]:
    if isinstance(value, list | tuple):
        return [v for v in value if is_room(v)]
    return []


def selector_of(data: dict[str, Any]) -> Selector:
    """The sockets ``data.opts`` selects (empty rooms: every socket of the namespace)."""
    opts = data.get("opts")
    if not isinstance(opts, dict):
        opts = {}
    rooms = _room_list(opts.get("rooms"))
    return Selector(tuple(rooms) or None, tuple(_room_list(opts.get("except"))))


def opts_of(selector: Selector, flags: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "rooms": list(selector.rooms or []),
        "except": list(selector.exclude),
        "flags": flags or {},
    }


def event_packet(namespace: str, data: list[Any]) -> dict[str, Any]:
    return {"type": 2, "data": data, "nsp": namespace}


# ---- cluster operations <-> messages: the one mapping -----------------------------

MEMBERSHIP_TYPES: dict[type, MessageType] = {
    JoinRooms: MessageType.SOCKETS_JOIN,
    LeaveRooms: MessageType.SOCKETS_LEAVE,
    DisconnectSockets: MessageType.DISCONNECT_SOCKETS,
}


def encode_operation(
    operation: ClusterOperation, request_id: str | None
) -> tuple[MessageType, dict[str, Any]]:
    """The message type and data that carry ``operation`` to the other servers."""
    data: dict[str, Any]
    match operation:
        case JoinRooms() | LeaveRooms():
            data = {"opts": opts_of(operation.selector), "rooms": list(operation.rooms)}
        case DisconnectSockets():
            data = {"opts": opts_of(operation.selector), "close": operation.close}
        case FetchSockets():
            data = {"opts": opts_of(operation.selector)}
        case EmitWithAck():
            flags = {"timeout": int(operation.timeout * 1000)}
            data = {
                "packet": event_packet(operation.namespace, operation.data),
                "opts": opts_of(Selector((operation.sid,)), flags),
            }
        case ServerEmit():
            data = {"packet": [operation.event, *operation.args]}
        case _:
            raise ValueError(f"no sharded message for {operation!r}")
    kind = {
        FetchSockets: MessageType.FETCH_SOCKETS,
        EmitWithAck: MessageType.BROADCAST,
        ServerEmit: MessageType.SERVER_SIDE_EMIT,
        **MEMBERSHIP_TYPES,
    }[type(operation)]
    if request_id is not None:
        data["requestId"] = request_id
    return kind, data


def operation_of(message: ShardMessage) -> ClusterOperation | None:
    """The operation a message asks of this server; None for broadcasts and responses."""
    namespace, data = message.namespace, message.data
    match message.kind:
        case MessageType.SOCKETS_JOIN | MessageType.SOCKETS_LEAVE:
            cls = JoinRooms if message.kind == MessageType.SOCKETS_JOIN else LeaveRooms
            return cls(namespace, selector_of(data), tuple(_room_list(data.get("rooms"))))
        case MessageType.DISCONNECT_SOCKETS:
            return DisconnectSockets(namespace, selector_of(data), bool(data.get("close")))
        case MessageType.FETCH_SOCKETS:
            return FetchSockets(namespace, selector_of(data))
        case MessageType.SERVER_SIDE_EMIT:
            packet = event_data(data.get("packet"), "a server-side emit's packet")
            return ServerEmit(namespace, packet[0], packet[1:])
    return None


def response_to(operation: ClusterOperation, result: Any) -> tuple[MessageType, dict[str, Any]]:
    """Our answer to an operation another server asked for (its requestId is added)."""
    match operation:
        case FetchSockets():
            return MessageType.FETCH_SOCKETS_RESPONSE, {"sockets": result}
        case ServerEmit():
            return MessageType.SERVER_SIDE_EMIT_RESPONSE, {"packet": None}
        case JoinRooms() | LeaveRooms() | DisconnectSockets():
            return MEMBERSHIP_TYPES[type(operation)], {"count": int(result)}
    raise ValueError(f"no response to {operation!r}")


def answer_of(operation: ClusterOperation, response: ShardMessage) -> Any:
    """What ``response`` answers to ``operation``; None if it is not an answer to it.

    A fetch is answered by its sockets, an emit with acks by the ack (as a list of
    arguments), a join/leave/disconnect (ours only) by a count. (Our server-side emits
    wait for no answer.)
    """
    kind, data = response.kind, response.data
    match operation:
        case FetchSockets() if kind == MessageType.FETCH_SOCKETS_RESPONSE:
            sockets = data.get("sockets")
            return sockets if isinstance(sockets, list) else []
        case EmitWithAck() if kind == MessageType.BROADCAST_ACK:
            args = data.get("args")
            return args if isinstance(args, list) else [data.get("packet")]
        case JoinRooms() | LeaveRooms() | DisconnectSockets():
            if kind != MEMBERSHIP_TYPES[type(operation)]:
                return None
            count = data.get("count")
            return count if type(count) is int else 0
    return None


def work_of(message: ShardMessage, default_timeout: float) -> ClusterOperation | AckedEmit | None:
    """What another server's request asks of this host (None: nothing it carries out); a
    broadcast with a requestId is an emit with acks."""
    if message.kind == MessageType.BROADCAST:
        data = message.data
        return acked_emit(message.namespace, data.get("packet"), data.get("opts"), default_timeout)
    return operation_of(message)
