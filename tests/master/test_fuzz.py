"""Fuzzing with hypothesis (bounded examples, no database): whatever another host, a backend or
a worker sends, the decoders answer with a value or their own error, never anything else.

Derandomized, so every run tries the same examples and the suite stays deterministic; the
cases a random run found are kept as explicit examples (``@example``)."""

from __future__ import annotations

import asyncio
from typing import Any

import msgpack
import orjson
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sio_cluster.master.bus.classic_wire import (
    AdapterFormatError,
    decode_broadcast,
    decode_emit_request,
    decode_request,
    operation_of_request,
)
from sio_cluster.master.bus.sharded_wire import decode as decode_shard
from sio_cluster.master.bus.sharded_wire import operation_of
from sio_cluster.master.pubsub.resp import SubscriberProtocol, command
from sio_cluster.master.routing.messages import Rejected, parse_message
from sio_cluster.wire.frames import FrameDecoder, FrameError, Join, Leave, decode_body
from sio_cluster.wire.operations import OperationError

FUZZ = settings(
    max_examples=300,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)  # fmt: skip
adapter_maps = st.dictionaries(
    st.sampled_from(["type", "uid", "requestId", "opts", "rooms", "sid", "room", "close", "data",
                     "packet", "nsp", "flags", "except"]),
    json_values,
    max_size=6,
)  # fmt: skip


@FUZZ
@given(st.binary(max_size=200) | json_values.map(orjson.dumps) | adapter_maps.map(orjson.dumps))
def test_ch_messages_are_delivered_or_rejected(body: bytes) -> None:
    try:
        parse_message("ch:x", body, "ch:", 10_000, "*")
    except Rejected:
        pass


@FUZZ
@given(st.binary(max_size=200) | json_values.map(msgpack.packb) | adapter_maps.map(msgpack.packb))
@example(b"\x81\x90\x00")  # a map keyed by a list, from another host
def test_adapter_broadcasts_decode_or_raise_their_error(body: bytes) -> None:
    try:
        decode_broadcast(body)
    except AdapterFormatError:
        pass


@FUZZ
@given(adapter_maps, st.sampled_from(["json", "msgpack"]))
def test_adapter_requests_read_or_raise_their_error(request: dict[str, Any], form: str) -> None:
    body = orjson.dumps(request) if form == "json" else msgpack.packb(request)
    try:
        decoded = decode_request(body)
        operation_of_request("/", decoded)
        if decoded.get("type") == 7:
            decode_emit_request("/", decoded, 5.0)
    except (AdapterFormatError, OperationError):
        pass


@FUZZ
@given(adapter_maps | st.binary(max_size=100))
def test_sharded_messages_read_or_raise_their_error(value: Any) -> None:
    body = value if isinstance(value, bytes) else orjson.dumps(value)
    try:
        operation_of(decode_shard(body))
    except (AdapterFormatError, OperationError):
        pass


@FUZZ
@given(st.binary(max_size=300))
@example(b"\x81\x90\x00")  # a map keyed by a list: msgpack raised TypeError
def test_frame_bodies_decode_or_raise_frame_error(body: bytes) -> None:
    try:
        decode_body(body)
    except FrameError:
        pass


@FUZZ
@given(st.lists(st.integers(1, 40), min_size=1, max_size=30), st.integers(0, 5))
def test_a_frame_stream_splits_the_same_however_it_is_chunked(cuts: list[int], extra: int) -> None:
    frames = [Join("/", f"s{i}", f"room{i}").encode() for i in range(extra + 3)]
    frames.append(Leave("/chat", "s0", None).encode())
    stream = b"".join(frames)
    decoder, bodies, offset = FrameDecoder(), [], 0
    for cut in cuts * (len(stream) // sum(cuts) + 1):
        bodies += decoder.feed(stream[offset : offset + cut])
        offset += cut
        if offset >= len(stream):
            break
    assert [encode_frame_of(b) for b in bodies] == frames


def encode_frame_of(body: bytes) -> bytes:
    return decode_body(body).encode()


@FUZZ
@given(st.lists(st.integers(1, 30), min_size=1, max_size=20), st.binary(max_size=60))
def test_the_resp_subscriber_reads_any_chunking_and_survives_garbage(
    cuts: list[int], garbage: bytes
) -> None:
    messages = [(b"ch:*", b"ch:%d" % i, b"body %d" % i) for i in range(5)]
    stream = b"".join(command("pmessage", *m) for m in messages)
    got: list[tuple[bytes | None, bytes, bytes]] = []

    async def run() -> None:
        protocol = SubscriberProtocol(lambda p, c, b: got.append((p, c, b)))
        offset = 0
        for cut in cuts * (len(stream) // sum(cuts) + 1):
            protocol.data_received(stream[offset : offset + cut])
            offset += cut
            if offset >= len(stream):
                break
        protocol.data_received(garbage)  # never raises: garbage closes the connection

    asyncio.run(run())
    assert got[: len(messages)] == messages
