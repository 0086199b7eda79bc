"""The Engine.IO 3 / Socket.IO 4 translation rules (``workers.eio3.codec``), checked on their
own and against engine.io 6's own v3 parser (what Node's socket.io serves v3 clients with):
what one encodes the other must decode to the same packets, both ways."""

from __future__ import annotations

import base64
import random
from collections.abc import Iterator
from typing import Any

import pytest
from engineio import packet as eio_packet
from socketio import packet as sio_packet

from sio_cluster.workers.eio3 import codec as eio3_codec
from sio_cluster.workers.eio3.codec import PayloadError
from tests.node_peer import LegacyClients, ensure_node_modules, missing_tools

NAMES = {2: "ping", 3: "pong", 4: "message", 6: "noop", 1: "close"}
TEXT = "ab€😀\u00e9 ,:0123456789\"'{}[]\n"


def random_packets(rng: random.Random) -> list[eio_packet.Packet]:
    packets = []
    for _ in range(rng.randint(1, 6)):
        kind = rng.choice([4, 4, 4, 2, 3, 6])
        if kind == 4 and rng.random() < 0.3:
            packets.append(eio_packet.Packet(4, rng.randbytes(rng.randint(0, 40))))
        elif kind in (2, 3, 6) and rng.random() < 0.5:
            packets.append(eio_packet.Packet(kind))
        else:
            text = "".join(rng.choice(TEXT) for _ in range(rng.randint(1, 30)))
            packets.append(eio_packet.Packet(kind, "x" + text))  # "x": never read as JSON
    return packets


def as_node(pkt: eio_packet.Packet) -> dict[str, Any]:
    node: dict[str, Any] = {"type": NAMES[pkt.packet_type]}
    if pkt.data is not None:
        node["data"] = pkt.data
    return node


def from_node(node: dict[str, Any]) -> tuple[int, Any]:
    kind = {name: number for number, name in NAMES.items()}[node["type"]]
    return kind, node.get("data")


def plain(pkt: eio_packet.Packet) -> tuple[int, Any]:
    """(type, data); python-engineio reads a bare "3" with data "", the same on the wire."""
    return pkt.packet_type, None if pkt.data == "" else pkt.data


@pytest.fixture(scope="module")
def node() -> Iterator[LegacyClients]:
    if missing_tools() is not None:
        pytest.skip(f"engine.io's parser is an npm package: {missing_tools()}")
    ensure_node_modules()
    script = LegacyClients().start()
    try:
        yield script
    finally:
        script.close()


@pytest.mark.parametrize("supports_binary", [True, False])
async def test_payloads_we_encode_node_decodes(node: LegacyClients, supports_binary: bool) -> None:
    rng = random.Random(20261122 + supports_binary)
    for _ in range(150):
        packets = random_packets(rng)
        body, content_type = eio3_codec.encode_payload(packets, supports_binary)
        binary = content_type == eio3_codec.BINARY_CONTENT_TYPE
        assert binary == (supports_binary and any(p.binary for p in packets))
        decoded = await node.cmd(
            "decodePayload", base64=base64.b64encode(body).decode(), binary=binary
        )
        assert decoded is not None, body
        assert [from_node(p) for p in decoded] == [plain(p) for p in packets], body


@pytest.mark.parametrize("supports_binary", [True, False])
async def test_payloads_node_encodes_we_decode(node: LegacyClients, supports_binary: bool) -> None:
    rng = random.Random(11222026 + supports_binary)
    for _ in range(150):
        packets = random_packets(rng)
        encoded = await node.cmd(
            "encodePayload", packets=[as_node(p) for p in packets], supportsBinary=supports_binary
        )
        body = base64.b64decode(encoded["base64"])
        content_type = (
            eio3_codec.BINARY_CONTENT_TYPE if encoded["binary"] else eio3_codec.TEXT_CONTENT_TYPE
        )
        ours = eio3_codec.encode_payload(packets, supports_binary)
        assert ours == (body, content_type)  # byte for byte what Node's server sends
        decoded = eio3_codec.decode_payload(body, content_type)
        assert [plain(p) for p in decoded] == [plain(p) for p in packets], body


def test_text_lengths_count_utf16_code_units() -> None:
    assert eio3_codec.js_length("abc") == 3
    assert eio3_codec.js_length("€") == 1
    assert eio3_codec.js_length("😀") == 2  # a surrogate pair in JavaScript
    body, _ = eio3_codec.encode_payload([eio_packet.Packet(4, "😀")], False)
    assert body.decode() == "3:4😀"
    assert [p.data for p in eio3_codec.decode_payload("3:4😀2:4a".encode(), "text/plain")] == [
        "😀",
        "a",
    ]


def test_an_empty_answer_is_an_empty_record_list() -> None:
    assert eio3_codec.encode_payload([], True) == (b"0:", eio3_codec.TEXT_CONTENT_TYPE)


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"", "text/plain"),
        (b"4hello", "text/plain"),  # no length
        (b"9:4short", "text/plain"),  # shorter than said
        (b"x:4a", "text/plain"),
        (b"2:9a", "text/plain"),  # no packet type 9
        (b"3:b2AA", "text/plain"),  # base64 packets are messages only
        (b"6:b4!!!!", "text/plain"),  # not base64
        (b"\xff\xfe", "text/plain; charset=UTF-8"),  # not UTF-8
        (b"\x00\x05\xff4a", "application/octet-stream"),  # shorter than said
        (b"\x02\x01\xff4", "application/octet-stream"),  # record kind 2
        (b"\x00\x0a\xff4", "application/octet-stream"),  # a length digit of 10
        (b"\x00\x01", "application/octet-stream"),  # no end of length
        (b"\x01\x02\xff\x02x", "application/octet-stream"),  # binary ping
    ],
)
def test_malformed_payloads_are_refused(body: bytes, content_type: str) -> None:
    with pytest.raises(PayloadError):
        eio3_codec.decode_payload(body, content_type)


def test_websocket_frames() -> None:
    assert eio3_codec.websocket_binary(b"\x01") == b"\x04\x01"
    assert eio3_codec.websocket_message(b"\x04\x01\x02") == b"\x01\x02"
    assert eio3_codec.websocket_message("b4AQI=") == "bAQI="  # base64, as engine.io 4 reads it
    assert eio3_codec.websocket_message('42["a"]') == '42["a"]'
    with pytest.raises(PayloadError):
        eio3_codec.websocket_message(b"\x02ping")


@pytest.mark.parametrize(
    ("v3", "v5"),
    [
        ("0/chat", "0/chat"),
        ("0/chat,", "0/chat,"),
        ("0/chat?token=x,", '0/chat,{"token":"x"}'),
        ("0/chat?token=x", '0/chat,{"token":"x"}'),
        ("0/chat?a=1&a=2&b=&c=%20d,", '0/chat,{"a":["1","2"],"b":"","c":" d"}'),
        ("0/?token=x,", '0{"token":"x"}'),
        ('2/chat,["ev","?x"]', '2/chat,["ev","?x"]'),
        ("0", "0"),
    ],
)
def test_a_connect_query_becomes_the_auth(v3: str, v5: str) -> None:
    assert eio3_codec.connect_request(v3) == v5


def test_replies_are_downgraded() -> None:
    def sent(pkt: sio_packet.Packet) -> Any:
        return eio3_codec.downgrade_reply(pkt).encode()

    assert sent(sio_packet.Packet(sio_packet.CONNECT, {"sid": "x"}, namespace="/")) == "0"
    assert sent(sio_packet.Packet(sio_packet.CONNECT, {"sid": "x"}, namespace="/chat")) == "0/chat,"
    assert sent(sio_packet.Packet(sio_packet.DISCONNECT, {"message": "m"})) == "1"
    refused = {"message": "refused", "data": {"reason": "r"}}
    assert sent(sio_packet.Packet(sio_packet.CONNECT_ERROR, refused)) == '4{"reason":"r"}'
    assert sent(sio_packet.Packet(sio_packet.CONNECT_ERROR, {"message": "no"})) == '4"no"'
    assert sent(sio_packet.Packet(sio_packet.CONNECT_ERROR, "Unable to connect")) == (
        '4"Unable to connect"'
    )
    event = sio_packet.Packet(sio_packet.EVENT, ["ev", 1], namespace="/chat", id=3)
    assert eio3_codec.downgrade_reply(event) is event
