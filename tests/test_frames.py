"""The pipe frame format: round trips, any chunking, and corruption handling."""

from __future__ import annotations

import random

import msgpack
import pytest

from wire.frames import (
    HEADER,
    MAX_FRAME_BYTES,
    FrameDecoder,
    FrameError,
    Kind,
    decode_body,
    encode_frame,
)

FRAMES = [
    (Kind.HELLO, [0, 1234, ["/", "/chat"]]),
    (Kind.HELLO, [1, 99, "*"]),
    (Kind.READY, [8000]),
    (Kind.JOIN, ["/", "sid1", None]),
    (Kind.JOIN, ["/chat", "sid2", "room é"]),
    (Kind.LEAVE, ["/", "sid1", 7]),
    (Kind.BROADCAST, ["/", None, [], ['2["ev",1]']]),
    (
        Kind.BROADCAST,
        ["/", ["r1", "r2"], ["s"], ['451-["ev",{"_placeholder":true,"num":0}]', b"\x00\xff"]],
    ),
    (Kind.PING, [3]),
    (Kind.PONG, [3]),
    (Kind.STOP, []),
    (Kind.SYNC, [10]),
    (Kind.SYNCED, [10]),
]


@pytest.mark.parametrize(("kind", "fields"), FRAMES)
def test_round_trip(kind: Kind, fields: list[object]) -> None:
    frame = encode_frame(kind, *fields)
    (length,) = HEADER.unpack_from(frame)
    assert length == len(frame) - HEADER.size
    bodies = FrameDecoder().feed(frame)
    assert len(bodies) == 1
    assert decode_body(bodies[0]) == (kind, fields)


def test_any_chunking_yields_the_same_frames_in_order() -> None:
    stream = b"".join(encode_frame(k, *f) for k, f in FRAMES * 20)
    expected = [(k, f) for k, f in FRAMES * 20]
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
    frame = encode_frame(Kind.READY, 1)
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
        encode_frame(Kind.BROADCAST, "/", None, [], ["x" * (MAX_FRAME_BYTES + 1)])


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
