"""The protocol 1 codec: round trips, strictness, and agreement with socket.io 0.9's own parsers.

The reference checks run ``tests/node/sio09_parsers.js`` once, which feeds every case to the
server's (socket.io 0.9.19) and the client's (socket.io-client 0.9.16) parser.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from sio_cluster.wire.sio09.packets import (
    Ack,
    Connect,
    Disconnect,
    Error,
    Event,
    Heartbeat,
    Json,
    Message,
    Noop,
    Packet,
    PacketError,
    decode_packet,
    decode_payload,
    encode_packet,
    encode_payload,
    js_length,
)
from tests.node_peer import NODE_DIR, ensure_node_modules, missing_tools

CASES: list[tuple[Packet, str]] = [
    (Disconnect(), "0::"),
    (Disconnect("/chat"), "0::/chat"),
    (Connect(), "1::"),
    (Connect("/chat"), "1::/chat"),
    (Connect("/chat", "?token=a&b=c"), "1::/chat:?token=a&b=c"),
    (Heartbeat(), "2::"),
    (Message("hello"), "3:::hello"),
    (Message(""), "3::"),
    (Message("a:b:c\nd"), "3:::a:b:c\nd"),
    (Message("x", "/chat", 7), "3:7:/chat:x"),
    (Message("x", "", 8, data_ack=True), "3:8+::x"),
    (Json({"a": [1, 2.5, None, True]}), '4:::{"a":[1,2.5,null,true]}'),
    (Json("text", "/n", 1, True), '4:1+:/n:"text"'),
    (Json(None), "4:::null"),
    (Event("ev"), '5:::{"name":"ev"}'),
    (Event("ev", (1, "two", {"3": [4]})), '5:::{"name":"ev","args":[1,"two",{"3":[4]}]}'),
    (Event("ev", ("é 😀",), "/chat", 12, True), '5:12+:/chat:{"name":"ev","args":["é 😀"]}'),
    (Event("ev", (), "", 3), '5:3::{"name":"ev"}'),
    (Ack(4), "6:::4"),
    (Ack(4, (1, "a")), '6:::4+[1,"a"]'),
    (Ack(5, ([],), "/chat"), "6::/chat:5+[[]]"),
    (Error(), "7::"),
    (Error("unauthorized"), "7:::2"),
    (Error("client not handshaken", "reconnect"), "7:::1+0"),
    (Error("", "reconnect", "/x"), "7::/x:+0"),
    (Error("transport not supported", "", "/x"), "7::/x:0"),
    (Noop(), "8::"),
]


@pytest.mark.parametrize(("packet", "text"), CASES, ids=[text for _, text in CASES])
def test_encode_and_decode(packet: Packet, text: str) -> None:
    assert encode_packet(packet) == text
    assert decode_packet(text) == packet


@pytest.mark.parametrize(
    ("text", "packet"),
    [
        ("3:::", Message("")),
        ("2:::", Heartbeat()),
        ("0:::", Disconnect()),
        ("1::/chat:", Connect("/chat")),
        ('5:::{"name":"e","args":[]}', Event("e")),
        ("6:::4+[]", Ack(4)),
        ('4:::{ "spaced" : 1 }', Json({"spaced": 1})),
        ("7:::", Error()),
    ],
)
def test_equivalent_spellings(text: str, packet: Packet) -> None:
    assert decode_packet(text) == packet


@pytest.mark.parametrize(
    "text",
    [
        "",
        "2",
        "2:",
        "9::",
        "x::",
        "22::",
        "-1::",
        ":::",
        "3:a::x",
        "3:+::x",
        "3:1x::x",
        "3:1234567890123456::x",
        "3:١::x",
        "2:1::",
        "6:1::4",
        "0:1::",
        "2:::x",
        "0:::x",
        "8:::x",
        "4::",
        "4:::",
        "4:::{",
        "4:::NaN",
        "4:::[Infinity]",
        "5::",
        "5:::",
        "5:::[]",
        '5:::{"args":[]}',
        '5:::{"name":1}',
        '5:::{"name":"e","args":{}}',
        '5:::{"name":"e","args":"x"}',
        "5:::" + "[" * 100_000,
        "6::",
        "6:::",
        "6:::x",
        "6:::4+",
        "6:::4+{}",
        "6:::4+[",
        "6:::4x",
        "6:::1234567890123456",
        "7:::3",
        "7:::0+1",
        "7:::x",
    ],
)
def test_rejects(text: str) -> None:
    with pytest.raises(PacketError):
        decode_packet(text)


@pytest.mark.parametrize(
    "packet",
    [
        Message("x", "/a:b"),
        Message("x", data_ack=True),
        Message("x", "", -1),
        Ack(-1),
        Json(float("nan")),
        Json(object()),
        Event("e", (b"bytes",)),
        Error("no such reason"),
    ],
    ids=repr,
)
def test_refuses_to_encode(packet: Packet) -> None:
    with pytest.raises(ValueError):
        encode_packet(packet)


def test_payloads() -> None:
    assert encode_payload(["2::"]) == "2::"
    assert encode_payload([]) == ""
    framed = encode_payload(["2::", "3:::😀é", "3::"])
    assert framed == "\ufffd3\ufffd2::\ufffd7\ufffd3:::😀é\ufffd3\ufffd3::"
    assert decode_payload(framed) == ["2::", "3:::😀é", "3::"]
    assert decode_payload("3:::\ufffd") == ["3:::\ufffd"]
    assert decode_payload(encode_payload(["3:::\ufffd1\ufffd", "8::"])) == [
        "3:::\ufffd1\ufffd",
        "8::",
    ]
    assert js_length("a😀é") == 4


@pytest.mark.parametrize(
    "body",
    [
        "\ufffd",
        "\ufffd3",
        "\ufffd\ufffd2::",
        "\ufffdx\ufffd2::",
        "\ufffd4\ufffd2::",
        "\ufffd3\ufffd2::x",
        "\ufffd3\ufffd2::\ufffd",
        "\ufffd5\ufffd3:::😀",
        "\ufffd-1\ufffd",
        "\ufffd" + "9" * 16 + "\ufffd",
    ],
)
def test_rejects_payloads(body: str) -> None:
    with pytest.raises(PacketError):
        decode_payload(body)


def as_js_input(packet: Packet) -> dict[str, Any]:
    """The packet as the object 0.9's ``encodePacket`` takes."""
    js: dict[str, Any] = {"endpoint": packet.endpoint}
    match packet:
        case Message() | Json() | Event():
            if packet.id is not None:
                js["id"] = packet.id
                js["ack"] = "data" if packet.data_ack else True
            match packet:
                case Message():
                    js.update(type="message", data=packet.data)
                case Json():
                    js.update(type="json", data=packet.data)
                case Event():
                    js.update(type="event", name=packet.name, args=list(packet.args))
        case Connect():
            js.update(type="connect", qs=packet.query)
        case Ack():
            js.update(type="ack", ackId=packet.ack_id, args=list(packet.args))
        case Error():
            js.update(type="error", reason=packet.reason, advice=packet.advice)
        case Disconnect():
            js["type"] = "disconnect"
        case Heartbeat():
            js["type"] = "heartbeat"
        case Noop():
            js["type"] = "noop"
    return js


def as_js_decoded(packet: Packet) -> dict[str, Any]:
    """What 0.9's ``decodePacket`` makes of the packet's encoding."""
    js = as_js_input(packet)
    if "id" in js:
        js["id"] = str(js["id"])
    if isinstance(packet, Ack):
        js["ackId"] = str(packet.ack_id)
    if isinstance(packet, Message | Json | Event) and packet.id is not None:
        js["ack"] = "data" if packet.data_ack else True
    return js


PAYLOADS = [["2::"], ["2::", "3:::😀é:x", '5:1+::{"name":"e"}'], ["3:::\ufffd2\ufffd", "8::"]]


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    reason = missing_tools()
    if reason:
        pytest.skip(reason)
    ensure_node_modules()
    request = {
        "encode": [as_js_input(packet) for packet, _ in CASES],
        "decode": [text for _, text in CASES],
        "encodePayload": PAYLOADS,
        "decodePayload": [encode_payload(payload) for payload in PAYLOADS],
    }
    done = subprocess.run(
        ["node", str(NODE_DIR / "sio09_parsers.js")],
        input=json.dumps(request, ensure_ascii=False),
        capture_output=True,
        text=True,
        encoding="utf-8",
        check=True,
        timeout=60,
    )
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


@pytest.mark.parametrize("side", ["server", "client"])
def test_reference_parsers_agree(reference: dict[str, Any], side: str) -> None:
    parser = reference[side]
    assert parser["encode"] == [text for _, text in CASES]
    assert parser["decode"] == [as_js_decoded(packet) for packet, _ in CASES]
    assert parser["encodePayload"] == [encode_payload(payload) for payload in PAYLOADS]
    assert parser["decodePayload"] == [
        [as_js_decoded(decode_packet(text)) for text in payload] for payload in PAYLOADS
    ]
