"""The connection layer's pure parts: websocket frames, permessage-deflate, request heads.

Frames are checked against frames built by hand from RFC 6455 and its rules for what a server
must refuse (real clients read and write them in tests/integration/test_own_layer.py).
"""

from __future__ import annotations

import struct
import zlib

import pytest
from engineio import packet as eio_packet
from hypothesis import given
from hypothesis import strategies as st

from sio_cluster.workers.conn import deflate, http_head, payload, ws_frames
from sio_cluster.workers.conn.ws_frames import FrameError
from tests.raw_ws import client_frame


@given(st.binary(max_size=70_000), st.sampled_from([ws_frames.TEXT, ws_frames.BINARY]))
def test_a_client_frame_of_any_size_reads_back_whole(payload: bytes, opcode: int) -> None:
    data = client_frame(payload, opcode)
    parsed = ws_frames.parse(data, 1 << 20)
    assert parsed is not None
    frame, used = parsed
    assert (frame.fin, frame.rsv1, frame.opcode, frame.payload, used) == (
        True,
        False,
        opcode,
        payload,
        len(data),
    )


@given(st.binary(min_size=1, max_size=300), st.integers(min_value=1))
def test_an_incomplete_frame_is_waited_for(payload: bytes, cut: int) -> None:
    data = client_frame(payload, ws_frames.BINARY)
    assert ws_frames.parse(data[: cut % len(data)], 1 << 20) is None


def test_what_a_server_must_refuse() -> None:
    limit = 1000
    cases = {
        "unmasked": (client_frame(b"x", ws_frames.TEXT, masked=False), 1002),
        "rsv2": (client_frame(b"x", ws_frames.TEXT, rsv=0x20), 1002),
        "opcode 3": (client_frame(b"x", 0x3), 1002),
        "long ping": (client_frame(b"p" * 126, ws_frames.PING), 1002),
        "fragmented close": (client_frame(b"", ws_frames.CLOSE, fin=False), 1002),
        "over the limit": (client_frame(b"x" * 1001, ws_frames.BINARY), 1009),
    }
    for name, (data, code) in cases.items():
        with pytest.raises(FrameError) as caught:
            ws_frames.parse(data, limit)
        assert caught.value.code == code, name


def test_an_oversized_frame_is_refused_from_its_header_alone() -> None:
    header = struct.pack("!BBQ", 0x82, 0x80 | 127, 1 << 40)
    with pytest.raises(FrameError) as caught:
        ws_frames.parse(header, 1_000_000)
    assert caught.value.code == ws_frames.TOO_BIG


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"", None),
        (struct.pack("!H", 1000), 1000),
        (struct.pack("!H", 4000) + b"bye", 4000),
    ],
)
def test_close_codes_a_client_may_send(payload: bytes, expected: int | None) -> None:
    assert ws_frames.close_code(payload) == expected


@pytest.mark.parametrize(
    "payload", [b"\x03", struct.pack("!H", 1005), struct.pack("!H", 999), b"\x03\xe8\xff\xfe"]
)
def test_close_frames_a_client_may_not_send(payload: bytes) -> None:
    with pytest.raises(FrameError):
        ws_frames.close_code(payload)


def test_deflate_offers() -> None:
    # neither side keeps a context, whatever the client offered (RFC 7692 allows the server
    # to say so): no compressor nor decompressor is kept per connection
    both = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
    agreed = deflate.negotiate("permessage-deflate; client_max_window_bits")
    assert agreed == deflate.Agreement(both, 15)
    agreed = deflate.negotiate(
        "x-webkit-deflate-frame, permessage-deflate; client_no_context_takeover;"
        " server_max_window_bits=10"
    )
    assert agreed is not None
    assert agreed == deflate.Agreement(both + "; server_max_window_bits=10", 10)
    # declined: a window zlib cannot use, an unknown parameter, a repeated one, nothing offered
    for offer in (
        "permessage-deflate; server_max_window_bits=8",
        "permessage-deflate; mystery",
        "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
        "",
        None,
    ):
        assert deflate.negotiate(offer) is None, offer
    # the second offer is taken when the first cannot be
    agreed = deflate.negotiate(
        "permessage-deflate; server_max_window_bits=8, permessage-deflate; client_max_window_bits"
    )
    assert agreed is not None and agreed.window_bits == 15


@given(st.binary(max_size=20_000))
def test_deflated_messages_inflate_back(payload: bytes) -> None:
    compressed = deflate.compress(payload, 15)
    assert deflate.inflate(deflate.new_inflater(), compressed, len(payload) + 1) == payload
    # what a client sends: its own compressor, each message alone
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert deflate.inflate(deflate.new_inflater(), data[:-4], 1 << 20) == payload


@given(st.binary(min_size=2, max_size=70_000))
def test_a_frame_s_size_is_known_from_its_header(payload: bytes) -> None:
    data = client_frame(payload, ws_frames.BINARY)
    assert ws_frames.needed(data) == len(data)
    for cut in (1, 3, 9):
        if cut < len(data):
            assert ws_frames.needed(data[:cut]) > cut


def test_a_zip_bomb_stops_at_the_limit() -> None:
    bomb = deflate.compress(b"\0" * 10_000_000, 15)
    assert len(bomb) < 20_000
    with pytest.raises(deflate.TooBig):
        deflate.inflate(deflate.new_inflater(), bomb, 1_000_000)


HANDSHAKE = (
    b"GET /socket.io/?EIO=4&transport=websocket&t=x HTTP/1.1\r\n"
    b"Host: 127.0.0.1:8000\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n"
    b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Cookie: a=1\r\nCookie: b=2\r\n\r\n"
)


def test_a_handshake_head() -> None:
    assert http_head.head_end(HANDSHAKE) == len(HANDSHAKE)
    assert http_head.head_end(HANDSHAKE[:-1]) == -1
    head = http_head.parse(HANDSHAKE)
    assert head is not None
    assert (head.method, head.path, head.query) == (
        "GET",
        "/socket.io/",
        "EIO=4&transport=websocket&t=x",
    )
    assert head.headers["cookie"] == "a=1,b=2"
    assert http_head.header_tokens(head, "connection") == {"keep-alive", "upgrade"}
    # RFC 6455 section 1.3's example
    assert http_head.accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert http_head.valid_key("dGhlIHNhbXBsZSBub25jZQ==")
    assert not http_head.valid_key("short")


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /socket.io/ HTTP/1.1\r\nHost: a\rb\r\n\r\n",  # a bare CR
        b"GET /socket.io/ HTTP/1.1\r\nBad Header: x\r\n\r\n",  # a space in a name
        b"NOT HTTP AT ALL\r\n\r\n",
    ],
)
def test_heads_httptools_refuses_are_not_ours(raw: bytes) -> None:
    assert http_head.parse(raw) is None


@pytest.mark.parametrize(
    ("raw", "keep_alive", "length"),
    [
        (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", True, 0),
        (b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", False, 0),
        (b"GET / HTTP/1.0\r\nHost: a\r\n\r\n", False, 0),
        (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", True, 0),
        (b"POST / HTTP/1.1\r\nContent-Length: 12\r\n\r\n", True, 12),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", True, None),
    ],
)
def test_keep_alive_and_body_length(raw: bytes, keep_alive: bool, length: int | None) -> None:
    head = http_head.parse(raw)
    assert head is not None
    assert (head.keep_alive, http_head.body_length(head)) == (keep_alive, length)


def test_a_payload_reads_back() -> None:
    packets = [
        eio_packet.Packet(eio_packet.MESSAGE, "hé"),
        eio_packet.Packet(eio_packet.MESSAGE, b"\x00\xff"),
        eio_packet.Packet(eio_packet.PING),
    ]
    body = payload.encode(packets)
    assert body == "4hé\x1ebAP8=\x1e2".encode()
    assert payload.decode(body) == ["4hé", b"\x00\xff", "2"]
    assert payload.decode(b"") == []  # an empty POST: nothing, as python-engineio reads it


@pytest.mark.parametrize("body", [b"4a\x1e", b"\xff", b"b!!", b"4a\x1e\x1e4b"])
def test_payloads_engine_io_4_refuses(body: bytes) -> None:
    with pytest.raises(payload.PayloadError):
        payload.decode(body)


@given(st.lists(st.tuples(st.text("abEIO=_-.0123456789", max_size=6), st.booleans()), max_size=6))
def test_a_query_reads_as_parse_qs_reads_it(pairs: list[tuple[str, bool]]) -> None:
    from urllib.parse import parse_qs

    query = "&".join(text if equals else text.replace("=", "") for text, equals in pairs)
    for escaped in (query, query + "&x=a%20b", query + "&y=a+b"):
        head = http_head.Head("GET", "/", escaped, {}, b"")
        assert head.query_fields() == parse_qs(escaped)


def test_engine_io_s_sid_cookie() -> None:
    assert http_head.sid_cookie("io", "abc") == "io=abc; path=/; SameSite=Lax"
    option = {"name": "sticky", "Secure": True, "Max-Age": lambda: "60"}
    assert http_head.sid_cookie(option, "abc") == "sticky=abc; Secure; Max-Age=60"
