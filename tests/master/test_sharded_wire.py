"""The sharded adapter format (:mod:`master.bus.sharded_wire`): pure, checked against the shapes
Node's ``createShardedAdapter`` / socket.io-adapter's ClusterAdapter publish."""

from __future__ import annotations

import msgpack
import orjson
import pytest

from sio_cluster.master.bus.classic_wire import AdapterFormatError
from sio_cluster.master.bus.sharded_wire import (
    MessageType,
    ShardChannels,
    ShardMessage,
    answer_of,
    decode,
    echo_prefixes,
    encode,
    encode_operation,
    operation_of,
    response_to,
)
from sio_cluster.wire.operations import (
    DisconnectSockets,
    EmitWithAck,
    FetchSockets,
    JoinRooms,
    LeaveRooms,
    Selector,
    ServerEmit,
)

SID = "A" * 20  # Node's looksLikeASocketId: a 20-character string


@pytest.mark.parametrize(
    ("mode", "rooms", "channel"),
    [
        ("dynamic", ["red"], "socket.io#/chat#red#"),
        ("dynamic", [7], "socket.io#/chat#7#"),
        ("dynamic", [SID], "socket.io#/chat#"),
        ("dynamic", ["red", "blue"], "socket.io#/chat#"),
        ("dynamic", None, "socket.io#/chat#"),
        ("dynamic-private", [SID], f"socket.io#/chat#{SID}#"),
        ("static", ["red"], "socket.io#/chat#"),
    ],
)
def test_broadcast_channel_follows_nodes_compute_channel(
    mode: str, rooms: list[str | int] | None, channel: str
) -> None:
    assert ShardChannels("socket.io", mode).broadcast("/chat", rooms) == channel  # type: ignore[arg-type]


def test_which_rooms_get_their_own_subscription() -> None:
    assert ShardChannels(mode="dynamic").subscribes_room("red", is_sid=False)
    assert not ShardChannels(mode="dynamic").subscribes_room(SID, is_sid=True)
    assert ShardChannels(mode="dynamic-private").subscribes_room(SID, is_sid=True)
    assert not ShardChannels(mode="static").subscribes_room("red", is_sid=False)


def test_room_of_tells_room_and_response_channels_from_the_namespace_channel() -> None:
    channels = ShardChannels("k")
    assert channels.room_of("k#/#red#") == ("/", "red")
    assert channels.room_of("k#/chat#abc123#") == ("/chat", "abc123")
    assert channels.room_of("k#/#") is None
    assert channels.room_of("other#/#red#") is None


def test_json_unless_binary_and_uid_first_so_the_echo_is_seen_undecoded() -> None:
    as_json = encode("u1", "/", MessageType.BROADCAST, {"packet": {"data": ["e", 1]}})
    assert orjson.loads(as_json) == {
        "uid": "u1",
        "nsp": "/",
        "type": 3,
        "data": {"packet": {"data": ["e", 1]}},
    }
    as_msgpack = encode("u1", "/", MessageType.BROADCAST, {"packet": {"data": ["e", b"\x01"]}})
    assert msgpack.unpackb(as_msgpack)["data"]["packet"]["data"] == ["e", b"\x01"]
    json_echo, msgpack_echo = echo_prefixes("u1")
    assert as_json.startswith(json_echo) and as_msgpack[1:].startswith(msgpack_echo)
    # types that never carry binary stay JSON even with bytes (as Node's encode decides)
    assert encode("u", "/", MessageType.SOCKETS_JOIN, {"rooms": ["r"]})[:1] == b"{"


def test_decode_reads_both_encodings_and_refuses_what_is_not_a_message() -> None:
    message = decode(b'{"uid":"n","nsp":"/x","type":7,"data":{"requestId":"r","opts":{}}}')
    assert message == ShardMessage("n", "/x", 7, {"requestId": "r", "opts": {}})
    assert message.request_id == "r"
    packed = msgpack.packb({"uid": "n", "nsp": "/", "type": 2})
    assert decode(packed) == ShardMessage("n", "/", 2, {})
    for bad in (b"{nope", b"[1,2]", b'{"type":"3"}', b'{"type":3,"data":[1]}', b"\xc1"):
        with pytest.raises(AdapterFormatError):
            decode(bad)


def test_operations_round_trip_through_messages() -> None:
    selector = Selector(("red",), ("blue",))
    for operation in (
        JoinRooms("/", selector, ("a", 1)),
        LeaveRooms("/", selector, ("a",)),
        DisconnectSockets("/", selector, close=True),
        FetchSockets("/", selector),
        ServerEmit("/", "hello", [1, {"x": 2}]),
    ):
        kind, data = encode_operation(operation, "rid")
        message = ShardMessage("n", "/", kind, orjson.loads(orjson.dumps(data)))
        assert operation_of(message) == operation
        assert message.request_id == "rid"
    kind, data = encode_operation(EmitWithAck("/", SID, ["q", 5], 2.5), "rid")
    assert (kind, data) == (
        MessageType.BROADCAST,
        {
            "packet": {"type": 2, "data": ["q", 5], "nsp": "/"},
            "opts": {"rooms": [SID], "except": [], "flags": {"timeout": 2500}},
            "requestId": "rid",
        },
    )


def test_nodes_room_wide_requests_select_every_socket_when_rooms_are_empty() -> None:
    message = ShardMessage(
        "n", "/", MessageType.SOCKETS_JOIN, {"opts": {"rooms": [], "except": ["x"]}, "rooms": ["r"]}
    )
    assert operation_of(message) == JoinRooms("/", Selector(None, ("x",)), ("r",))
    with pytest.raises(AdapterFormatError):
        operation_of(ShardMessage("n", "/", MessageType.SERVER_SIDE_EMIT, {"packet": "x"}))
    assert operation_of(ShardMessage("n", "/", MessageType.HEARTBEAT, {})) is None


def test_answers_are_read_only_from_responses_of_the_matching_type() -> None:
    fetch = ShardMessage("n", "/", 8, {"requestId": "r", "sockets": [{"id": "s", "rooms": []}]})
    assert answer_of(FetchSockets("/", Selector()), fetch) == [{"id": "s", "rooms": []}]
    join = JoinRooms("/", Selector(), ("r",))
    assert answer_of(join, fetch) is None
    ack = ShardMessage("n", "/", 12, {"requestId": "r", "packet": "yes"})
    assert answer_of(EmitWithAck("/", SID, ["q"], 1.0), ack) == ["yes"]
    count = ShardMessage("n", "/", 11, {"requestId": "r", "clientCount": 1})
    assert answer_of(EmitWithAck("/", SID, ["q"], 1.0), count) is None
    leave = LeaveRooms("/", Selector(), ("r",))
    kind, data = response_to(leave, 3)
    assert answer_of(leave, ShardMessage("m", "/", kind, data)) == 3
    assert answer_of(join, ShardMessage("m", "/", kind, data)) is None
