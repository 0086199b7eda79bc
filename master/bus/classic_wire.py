"""The @socket.io/redis-adapter wire format (8.x, non-sharded), pure and I/O-free.

Why: masters of different hosts talk through Redis in this format, so Node
servers and the Node/PyPI/PHP emitters are members of the same cluster.
Broadcasts are msgpack (notepack flavour) ``[uid, packet, opts]`` on
``<key>#<nsp>#`` (or ``<key>#<nsp>#<room>#`` for exactly one room); requests and
responses are JSON (or msgpack when the first byte is not ``{``) on
``<key>-request#<nsp>#`` and ``<key>-response#<nsp>#``.

Receivers must be lenient: emitters send missing, null, ``''`` or ``[]`` for
empty rooms/except/flags, notepack encodes ``undefined`` as ext type 0 and Dates
as msgpack timestamps (we turn them into JSON's ISO strings).

The mapping between our cluster operations (:mod:`wire.operations`) and the
adapter's request types lives here (:func:`encode_request`, :func:`work_of`,
:func:`answer_of`, :func:`encode_response`), and nowhere else. Requests and
responses decode into :class:`AdapterMessage`. :class:`AckedEmit` and the pieces
both forms share (msgpack, :class:`AdapterFormatError`) are used by
:mod:`master.bus.sharded_wire` too.
"""

from __future__ import annotations

import datetime
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import msgpack
import orjson

from sio_cluster.wire.frames import MSGPACK_ERRORS, Room, is_room
from sio_cluster.wire.operations import (
    ClusterOperation,
    DisconnectSockets,
    EmitWithAck,
    FetchSockets,
    JoinRooms,
    LeaveRooms,
    Operation,
    Selector,
    ServerEmit,
)


class RequestType(IntEnum):
    SOCKETS = 0
    ALL_ROOMS = 1
    REMOTE_JOIN = 2
    REMOTE_LEAVE = 3
    REMOTE_DISCONNECT = 4
    REMOTE_FETCH = 5
    SERVER_SIDE_EMIT = 6
    BROADCAST = 7
    BROADCAST_CLIENT_COUNT = 8
    BROADCAST_ACK = 9


class AdapterFormatError(ValueError):
    """A body that is not a readable adapter message."""


@dataclass(frozen=True)
class Channels:
    """Channel names for one key prefix (``--adapter-key``, default ``socket.io``)."""

    key: str = "socket.io"

    def broadcast(self, namespace: str, room: str | None = None) -> str:
        base = f"{self.key}#{namespace}#"
        return base if room is None else f"{base}{room}#"

    @property
    def broadcast_pattern(self) -> str:
        return f"{self.key}#*"

    def request(self, namespace: str) -> str:
        return f"{self.key}-request#{namespace}#"

    def response(self, namespace: str, uid: str | None = None) -> str:
        base = f"{self.key}-response#{namespace}#"
        return base if uid is None else f"{base}{uid}#"

    def masters(self, namespace: str) -> str:
        """Subscribed by our masters only: ``PUBSUB NUMSUB`` counts them apart from Node
        servers, which answer fewer request types; and requests only our masters know
        (:mod:`master.recovery.handover_wire`) go there."""
        return f"{self.key}-masters#{namespace}#"

    def parse_masters(self, channel: str) -> str | None:
        """The namespace of a masters channel, else None."""
        head = f"{self.key}-masters#"
        if not channel.startswith(head) or not channel.endswith("#"):
            return None
        return channel[len(head) : -1]

    def parse_broadcast(self, channel: str) -> tuple[str, str | None] | None:
        """``(namespace, room or None)`` of a broadcast channel, else None."""
        head = f"{self.key}#"
        if not channel.startswith(head) or not channel.endswith("#"):
            return None
        rest = channel[len(head) : -1]
        namespace, sep, room = rest.partition("#")
        if not namespace.startswith("/"):
            return None
        return namespace, (room if sep else None)

    def parse_request_or_response(self, channel: str) -> tuple[str, str] | None:
        """``("request" | "response", namespace)`` for those channels, else None."""
        for kind in ("request", "response"):
            head = f"{self.key}-{kind}#"
            if channel.startswith(head):
                namespace = channel[len(head) :].split("#", 1)[0]
                return kind, namespace
        return None


def _ext_hook(code: int, data: bytes) -> Any:
    if code == 0:
        return None  # notepack's "undefined"
    return msgpack.ExtType(code, data)


def _plain(value: Any) -> Any:
    """Make decoded values JSON-ready: datetimes as ISO strings (as JSON.stringify does)."""
    if isinstance(value, datetime.datetime):
        return (
            value.astimezone(datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        )
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, msgpack.ExtType):
        return None
    return value


def unpack(body: bytes) -> Any:
    """Decode a notepack/msgpack body leniently."""
    try:
        value = msgpack.unpackb(
            body, raw=False, ext_hook=_ext_hook, timestamp=3, strict_map_key=False
        )
    except MSGPACK_ERRORS as exc:
        raise AdapterFormatError(f"not msgpack: {exc}") from None
    return _plain(value)


def pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def _room_list(value: Any) -> list[Room]:
    if value in (None, "", []):
        return []
    if isinstance(value, list | tuple):
        return [v for v in value if is_room(v)]
    if isinstance(value, dict):  # a JS Set encoded as {} by some emitters
        return []
    return [value] if is_room(value) else []


def event_data(value: Any, what: str) -> list[Any]:
    """``value`` as ``[event, *args]``; raise :class:`AdapterFormatError` if it is not."""
    if not isinstance(value, list) or not value or not isinstance(value[0], str):
        raise AdapterFormatError(f"{what} is not [event, ...args]")
    return value


def event_of(packet: Any) -> list[Any]:
    """``[event, *args]`` of a Socket.IO packet map (the same in both forms)."""
    return event_data(packet.get("data") if isinstance(packet, dict) else None, "packet.data")


@dataclass(frozen=True)
class AdapterBroadcast:
    """A decoded broadcast: who sent it, the packet data, and the targets."""

    uid: str
    namespace: str
    data: list[Any]
    rooms: list[Room]
    exclude: list[Room]
    flags: dict[str, Any]


def decode_broadcast(body: bytes) -> AdapterBroadcast:
    """Parse ``[uid, packet, opts]``; raise :class:`AdapterFormatError` if malformed."""
    value = unpack(body)
    if not isinstance(value, list) or len(value) < 2 or not isinstance(value[1], dict):
        raise AdapterFormatError("not [uid, packet, opts]")
    uid, packet = value[0], value[1]
    opts = value[2] if len(value) > 2 and isinstance(value[2], dict) else {}
    data = event_of(packet)
    namespace = packet.get("nsp") or "/"
    flags = opts.get("flags")
    return AdapterBroadcast(
        uid=str(uid),
        namespace=namespace if isinstance(namespace, str) else "/",
        data=data,
        rooms=_room_list(opts.get("rooms")),
        exclude=_room_list(opts.get("except")),
        flags=flags if isinstance(flags, dict) else {},
    )


def encode_broadcast(
    uid: str,
    namespace: str,
    data: list[Any],
    rooms: Sequence[Room] | None,
    exclude: Sequence[Room],
) -> bytes:
    """``[uid, {type: 2, data, nsp}, {rooms, except, flags}]``, as the Node adapter sends."""
    packet = {"type": 2, "data": data, "nsp": namespace}
    opts = {"rooms": list(rooms or []), "except": list(exclude), "flags": {}}
    return pack([uid, packet, opts])


def broadcast_channel(channels: Channels, namespace: str, rooms: Sequence[Room] | None) -> str:
    """One room: that room's channel; otherwise the namespace channel (the Node rule)."""
    if rooms is not None and len(rooms) == 1:
        return channels.broadcast(namespace, str(rooms[0]))
    return channels.broadcast(namespace)


def decode_request(body: bytes) -> dict[str, Any]:
    """JSON when the first byte is ``{``, otherwise msgpack; must be an object."""
    try:
        value = orjson.loads(body) if body[:1] == b"{" else unpack(body)
    except orjson.JSONDecodeError as exc:
        raise AdapterFormatError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise AdapterFormatError("a request, response or sharded message must be a map")
    return value


def encode_json(value: dict[str, Any]) -> bytes:
    return orjson.dumps(value)


def room_matches(channel_room: str, room: Room) -> bool:
    """A channel names a room as text: ``42`` is the integer room 42 or the string "42"."""
    return room == channel_room or str(room) == channel_room


def channel_room_candidates(channel_room: str) -> list[Room]:
    """The rooms a channel's room part may stand for (Node's ``hasRoom`` does the same)."""
    digits = channel_room[1:] if channel_room[:1] == "-" else channel_room
    if not digits.isdigit() or str(int(channel_room)) != channel_room:
        return [channel_room]  # the common case, decided without an exception
    return [channel_room, int(channel_room)]


# ---- cluster operations <-> adapter requests: the one mapping ---------------------

REQUEST_TYPES: dict[Operation, RequestType] = {
    Operation.JOIN: RequestType.REMOTE_JOIN,
    Operation.LEAVE: RequestType.REMOTE_LEAVE,
    Operation.DISCONNECT: RequestType.REMOTE_DISCONNECT,
    Operation.FETCH: RequestType.REMOTE_FETCH,
    Operation.EMIT_WITH_ACK: RequestType.BROADCAST,
    Operation.SERVER_EMIT: RequestType.SERVER_SIDE_EMIT,
}


def _opts(selector: Selector) -> dict[str, Any]:
    return {"rooms": list(selector.rooms or []), "except": list(selector.exclude)}


def _request_fields(operation: ClusterOperation) -> dict[str, Any]:
    """The adapter request fields (beyond uid, type and requestId) that carry ``operation``;
    a per-socket join/leave names its one room (see :func:`master.bus.core.per_room`)."""
    match operation:
        case JoinRooms() | LeaveRooms():
            if operation.single_sid:
                sid = operation.selector.rooms[0] if operation.selector.rooms else ""
                return {"sid": sid, "room": operation.rooms[0] if operation.rooms else ""}
            return {"opts": _opts(operation.selector), "rooms": list(operation.rooms)}
        case DisconnectSockets():
            if operation.single_sid:
                sid = operation.selector.rooms[0] if operation.selector.rooms else ""
                return {"sid": sid, "close": operation.close}
            return {"opts": _opts(operation.selector), "close": operation.close}
        case FetchSockets():
            return {"opts": _opts(operation.selector)}
        case EmitWithAck():
            flags = {"timeout": int(operation.timeout * 1000)}
            return {
                "packet": {"type": 2, "data": operation.data, "nsp": operation.namespace},
                "opts": {"rooms": [operation.sid], "except": [], "flags": flags},
            }
        case ServerEmit():
            return {"data": [operation.event, *operation.args]}
    raise ValueError(f"no adapter request for {operation!r}")


def encode_request(uid: str, operation: ClusterOperation, request_id: str | None) -> bytes:
    """The request as published: JSON, or msgpack for an emit with acks (its packet may
    hold binary). ``request_id`` None: nobody answers it (Node's room-wide form)."""
    kind = REQUEST_TYPES[operation.OPERATION]
    body = {"uid": uid, "type": kind, **_request_fields(operation)}
    if request_id is not None:
        body["requestId"] = request_id
    return pack(body) if kind == RequestType.BROADCAST else encode_json(body)


def _selector(opts: dict[str, Any]) -> Selector:
    rooms = _room_list(opts.get("rooms"))
    return Selector(tuple(rooms) or None, tuple(_room_list(opts.get("except"))))


def operation_of_request(namespace: str, request: dict[str, Any]) -> ClusterOperation | None:
    """The operation an adapter request asks of this server, or None if it is not one.

    ALL_ROOMS and BROADCAST (with acks) are answered apart (:func:`work_of`, the bus).
    """
    kind = request.get("type")
    opts = request.get("opts")
    if kind in (RequestType.REMOTE_JOIN, RequestType.REMOTE_LEAVE):
        cls = JoinRooms if kind == RequestType.REMOTE_JOIN else LeaveRooms
        if isinstance(opts, dict):
            return cls(namespace, _selector(opts), tuple(_room_list(request.get("rooms"))))
        sid, room = request.get("sid"), request.get("room")
        if not isinstance(sid, str) or not is_room(room):
            raise AdapterFormatError("a per-socket join/leave needs 'sid' and 'room'")
        return cls(namespace, Selector((sid,)), (room,), single_sid=True)
    if kind == RequestType.REMOTE_DISCONNECT:
        close = bool(request.get("close"))
        if isinstance(opts, dict):
            return DisconnectSockets(namespace, _selector(opts), close)
        sid = request.get("sid")
        if not isinstance(sid, str):
            raise AdapterFormatError("a per-socket disconnect needs 'sid'")
        return DisconnectSockets(namespace, Selector((sid,)), close, single_sid=True)
    if kind == RequestType.REMOTE_FETCH:
        return FetchSockets(namespace, _selector(opts if isinstance(opts, dict) else {}))
    if kind == RequestType.SOCKETS:
        rooms = tuple(_room_list(request.get("rooms")))
        return FetchSockets(namespace, Selector(rooms or None), ids_only=True)
    if kind == RequestType.SERVER_SIDE_EMIT:
        data = event_data(request.get("data"), "a server-side emit's data")
        return ServerEmit(namespace, data[0], data[1:])
    return None


# ---- an emit with acks, in either form ----------------------------------------------


@dataclass(frozen=True)
class AckedEmit:
    """Another server's emit with acks: to whom, what, and how long to wait for each ack."""

    fetch: FetchSockets
    data: list[Any]
    timeout: float


def acked_emit(namespace: str, packet: Any, opts: Any, default_timeout: float) -> AckedEmit:
    """Read an emit with acks (its packet and opts maps, the same in both forms); raise
    :class:`AdapterFormatError` if malformed. The ack timeout is ``opts.flags.timeout`` ms."""
    data = event_of(packet)
    if opts is None:
        opts = {}
    if not isinstance(opts, dict):
        raise AdapterFormatError("a broadcast's opts must be a map")
    flags = opts.get("flags") or {}
    milliseconds = flags.get("timeout") if isinstance(flags, dict) else None
    timeout = float(milliseconds) / 1000 if milliseconds else default_timeout
    return AckedEmit(FetchSockets(namespace, _selector(opts), ids_only=True), data, timeout)


def decode_emit_request(
    namespace: str, request: dict[str, Any], default_timeout: float
) -> AckedEmit:
    """Read a BROADCAST request; raise :class:`AdapterFormatError` if malformed."""
    return acked_emit(namespace, request.get("packet") or {}, request.get("opts"), default_timeout)


# ---- requests and responses as messages ---------------------------------------------


@dataclass(frozen=True)
class AdapterMessage:
    """A request or response, read once: its type (a :class:`RequestType` value, None in
    Node's fetch and per-socket answers, or anything another server sent), the sender's
    uid (None in responses), the request id, and the map itself for the type's fields."""

    kind: Any
    uid: Any
    request_id: str | None
    fields: dict[str, Any]


def decode_message(body: bytes) -> AdapterMessage:
    """Read a request or response; raise :class:`AdapterFormatError` if malformed."""
    value = decode_request(body)
    request_id = value.get("requestId")
    return AdapterMessage(
        value.get("type"),
        value.get("uid"),
        None if request_id is None else str(request_id),
        value,
    )


def work_of(
    namespace: str, request: AdapterMessage, default_timeout: float
) -> ClusterOperation | AckedEmit | None:
    """What another server's request asks of this host (None: nothing it carries out)."""
    if request.kind == RequestType.BROADCAST:
        return decode_emit_request(namespace, request.fields, default_timeout)
    return operation_of_request(namespace, request.fields)


def answer_of(operation: ClusterOperation, response: AdapterMessage) -> Any:
    """What ``response`` answers to ``operation``; None if it is not an answer to it.

    A fetch is answered by its sockets, an emit with acks by the ack's arguments (its
    BROADCAST_CLIENT_COUNT is not waited for), a join/leave/disconnect by a count: our
    masters send one, Node's per-socket confirmation (``{requestId}``) stands for its
    one socket.
    """
    kind = response.kind
    fields = response.fields
    match operation:
        case EmitWithAck():
            if kind != RequestType.BROADCAST_ACK:
                return None
            args = fields.get("args")
            return args if isinstance(args, list) else [fields.get("packet")]
        case FetchSockets() if kind is None or kind == RequestType.REMOTE_FETCH:
            sockets = fields.get("sockets")
            return sockets if isinstance(sockets, list) else []
        case JoinRooms() | LeaveRooms() | DisconnectSockets():
            if kind is not None and kind != REQUEST_TYPES[operation.OPERATION]:
                return None
            count = fields.get("count", 1 if operation.single_sid else 0)
            return count if type(count) is int else 0
    return None


def encode_response(
    request: AdapterMessage, operation: ClusterOperation, result: Any
) -> bytes | None:
    """Our answer to another server's request, once carried out; None when we stay silent.

    Silent: requests without a requestId (fire-and-forget, as emitters and Node's
    room-wide operations send them), and per-socket requests for a socket that is
    not ours (only the owner answers).
    """
    request_id = request.request_id
    if request_id is None:
        return None
    kind = request.kind
    match operation:
        case JoinRooms() | LeaveRooms() | DisconnectSockets():
            if operation.single_sid and not result:
                return None
            return encode_json({"type": kind, "requestId": request_id, "count": result})
        case FetchSockets() if kind == RequestType.SOCKETS:
            return encode_json({"requestId": request_id, "sockets": [s["id"] for s in result]})
        case FetchSockets():
            return encode_json({"requestId": request_id, "sockets": result})
        case ServerEmit():
            return encode_json({"type": kind, "requestId": request_id, "data": None})
    return None


def encode_all_rooms_response(request: AdapterMessage, rooms: Sequence[Hashable]) -> bytes | None:
    if request.request_id is None:
        return None
    return encode_json({"requestId": request.request_id, "rooms": list(rooms)})


def encode_client_count(request: AdapterMessage, count: int) -> bytes:
    return encode_json(
        {
            "type": RequestType.BROADCAST_CLIENT_COUNT,
            "requestId": request.fields.get("requestId"),
            "clientCount": count,
        }
    )


def encode_ack(request: AdapterMessage, args: list[Any]) -> bytes:
    return pack(
        {
            "type": RequestType.BROADCAST_ACK,
            "requestId": request.fields.get("requestId"),
            "packet": args[0] if args else None,
            "args": args,
        }
    )
