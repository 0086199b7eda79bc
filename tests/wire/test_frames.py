"""The pipe frame format: round trips, any chunking, and corruption handling."""

from __future__ import annotations

import random

import msgpack
import pytest

from sio_cluster.wire.frames import (
    HEADER,
    MAX_FRAME_BYTES,
    Broadcast,
    Failed,
    Frame,
    FrameDecoder,
    FrameError,
    Hello,
    Join,
    Kind,
    Leave,
    Ping,
    Pong,
    Ready,
    Request,
    Response,
    Sync,
    Synced,
    decode_body,
    encode_frame,
    is_room,
)

FRAMES: list[Frame] = [
    Hello(0, 1234, ("/", "/chat")),
    Hello(1, 99, "*"),
    Ready(8000),
    Failed("cannot import 'app' for --app 'app:setup': No module named 'app'"),
    Join("/", "sid1", None),
    Join("/chat", "sid2", "room é"),
    Leave("/", "sid1", 7),
    Broadcast("/", None, [], ['2["ev",1]']),
    Broadcast("/", ["r1", 2], ["s"], ['451-["ev",{"_placeholder":true,"num":0}]', b"\x00\xff"]),
    Ping(3),
    Pong(3, {"slow_clients_dropped": 1}),
    Sync(10),
    Synced(10),
    Request(5, 4, ["/", None, []]),
    Response(5, None, [{"id": "a"}]),
    Response(6, "KeyError: 'x'", None),
]


@pytest.mark.parametrize("frame", FRAMES, ids=lambda f: type(f).__name__)
def test_round_trip(frame: Frame) -> None:
    data = frame.encode()
    (length,) = HEADER.unpack_from(data)
    assert length == len(data) - HEADER.size
    bodies = FrameDecoder().feed(data)
    assert len(bodies) == 1
    assert decode_body(bodies[0]) == frame


def test_any_chunking_yields_the_same_frames_in_order() -> None:
    stream = b"".join(f.encode() for f in FRAMES * 20)
    expected = FRAMES * 20
    rng = random.Random(7)
    for _ in range(50):
        decoder = FrameDecoder()
        got = []
        pos = 0
        while pos < len(stream):
            step = rng.choice([1, 2, 3, 5, 64, 1000, 100000])
            got += [decode_body(b) for b in decoder.feed(stream[pos : pos + step])]
            pos += step
        assert got == expected
        assert decoder.pending_bytes == 0


def test_partial_frame_waits_for_the_rest() -> None:
    frame = Ready(1).encode()
    decoder = FrameDecoder()
    assert decoder.feed(frame[:-1]) == []
    assert decoder.pending_bytes == len(frame) - 1
    assert len(decoder.feed(frame[-1:])) == 1


def test_oversized_header_is_an_error_before_buffering() -> None:
    decoder = FrameDecoder(max_frame_bytes=100)
    with pytest.raises(FrameError, match="announces 101 bytes"):
        decoder.feed(HEADER.pack(101))


def test_encoding_refuses_frames_over_the_limit() -> None:
    with pytest.raises(FrameError, match="exceeds"):
        Broadcast("/", None, [], ["x" * (MAX_FRAME_BYTES + 1)]).encode()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"\xc1", "not msgpack"),
        (msgpack.packb({"a": 1}), "not an array"),
        (msgpack.packb([]), "not an array"),
        (msgpack.packb(["x"]), "not an array"),
        (msgpack.packb([99]), "unknown frame kind 99"),
        (msgpack.packb([1]) + b"\x01", "not msgpack"),
    ],
)
def test_malformed_bodies_raise_frame_error(body: bytes, message: str) -> None:
    with pytest.raises(FrameError, match=message):
        decode_body(body)


@pytest.mark.parametrize(
    ("kind", "fields"),
    [
        (Kind.HELLO, [0, 1]),  # too few fields
        (Kind.HELLO, [0, 1, "?"]),  # namespaces neither "*" nor a list
        (Kind.READY, ["8000"]),
        (Kind.READY, [True]),  # a bool is not a port
        (Kind.FAILED, [None]),  # a reason is text
        (Kind.JOIN, ["/", "sid", 1.5]),  # rooms are str, int or None
        (Kind.JOIN, ["/", None, "room"]),
        (Kind.LEAVE, ["/", "sid", ["room"]]),
        (Kind.BROADCAST, ["/", "room", [], ["2[]"]]),  # rooms must be a list
        (Kind.BROADCAST, ["/", None, [None], ["2[]"]]),  # None is not a room to exclude
        (Kind.BROADCAST, ["/", None, [], []]),  # no packet
        (Kind.BROADCAST, ["/", None, [], [b"bin"]]),  # the packet head must be text
        (Kind.PONG, [1, [1]]),
        (Kind.SYNC, ["1"]),
        (Kind.REQUEST, ["1", 4, []]),
        (Kind.RESPONSE, [1, 5, None]),  # an error is text or None
    ],
)
def test_fields_of_the_wrong_shape_raise_frame_error(kind: Kind, fields: list[object]) -> None:
    with pytest.raises(FrameError, match="malformed"):
        decode_body(encode_frame(kind, *fields)[HEADER.size :])


@pytest.mark.parametrize(
    ("value", "room"), [("r", True), (7, True), (True, False), (1.0, False), (None, False)]
)
def test_rooms_are_str_or_int_and_never_bool(value: object, room: bool) -> None:
    """python-socketio's room table keys True and 1 alike: a bool room cannot cross."""
    assert is_room(value) is room
