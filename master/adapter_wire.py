"""The @socket.io/redis-adapter wire format (8.x, non-sharded), pure and I/O-free.

Why: masters of different hosts talk through Redis in this format so that, in a
later step, Node servers and the Node/PyPI/PHP emitters can join the same
cluster. Broadcasts are msgpack (notepack flavour) ``[uid, packet, opts]`` on
``<key>#<nsp>#`` (or ``<key>#<nsp>#<room>#`` for exactly one room); requests and
responses are JSON (or msgpack when the first byte is not ``{``) on
``<key>-request#<nsp>#`` and ``<key>-response#<nsp>#``.

Receivers must be lenient: emitters send missing, null, ``''`` or ``[]`` for
empty rooms/except/flags, notepack encodes ``undefined`` as ext type 0 and Dates
as msgpack timestamps (we turn them into JSON's ISO strings).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import msgpack
import orjson

from master.router import Room


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
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise AdapterFormatError(f"not msgpack: {exc}") from None
    return _plain(value)


def pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def _room_list(value: Any) -> list[Room]:
    if value in (None, "", []):
        return []
    if isinstance(value, list | tuple):
        return [v for v in value if isinstance(v, str | int)]
    if isinstance(value, dict):  # a JS Set encoded as {} by some emitters
        return []
    return [value] if isinstance(value, str | int) else []


@dataclass(frozen=True)
class Broadcast:
    """A decoded broadcast: who sent it, the packet data, and the targets."""

    uid: str
    namespace: str
    data: list[Any]
    rooms: list[Room]
    exclude: list[Room]
    flags: dict[str, Any]


def decode_broadcast(body: bytes) -> Broadcast:
    """Parse ``[uid, packet, opts]``; raise :class:`AdapterFormatError` if malformed."""
    value = unpack(body)
    if not isinstance(value, list) or len(value) < 2 or not isinstance(value[1], dict):
        raise AdapterFormatError("not [uid, packet, opts]")
    uid, packet = value[0], value[1]
    opts = value[2] if len(value) > 2 and isinstance(value[2], dict) else {}
    data = packet.get("data")
    if not isinstance(data, list) or not data or not isinstance(data[0], str):
        raise AdapterFormatError("packet.data is not [event, ...args]")
    namespace = packet.get("nsp") or "/"
    flags = opts.get("flags")
    return Broadcast(
        uid=str(uid),
        namespace=namespace if isinstance(namespace, str) else "/",
        data=data,
        rooms=_room_list(opts.get("rooms")),
        exclude=_room_list(opts.get("except")),
        flags=flags if isinstance(flags, dict) else {},
    )


def encode_broadcast(
    uid: str, namespace: str, data: list[Any], rooms: list[Room] | None, exclude: list[Room]
) -> bytes:
    """``[uid, {type: 2, data, nsp}, {rooms, except, flags}]``, as the Node adapter sends."""
    packet = {"type": 2, "data": data, "nsp": namespace}
    opts = {"rooms": list(rooms or []), "except": list(exclude), "flags": {}}
    return pack([uid, packet, opts])


def broadcast_channel(channels: Channels, namespace: str, rooms: list[Room] | None) -> str:
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
        raise AdapterFormatError("a request or response must be an object")
    return value


def encode_json(value: dict[str, Any]) -> bytes:
    return orjson.dumps(value)
