"""Parsing of ch:* bodies: every accepted shape and every rejection reason."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sio_cluster.master.routing.messages import (
    Delivery,
    Rejected,
    encode_event_packet,
    event_prefix,
    parse_message,
)

NAMESPACES = frozenset({"/", "/chat"})


def parse(body: Any, channel: str = "ch:news", **kwargs: Any) -> Delivery:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    options: dict[str, Any] = {"prefix": "ch:", "max_bytes": 1024, "namespaces": NAMESPACES}
    options.update(kwargs)
    return parse_message(channel, raw, **options)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({}, Delivery("/", None, [], '2["news"]')),
        ({"data": {"a": 1}}, Delivery("/", None, [], '2["news",{"a":1}]')),
        ({"data": [1, 2]}, Delivery("/", None, [], '2["news",[1,2]]')),
        ({"data": None}, Delivery("/", None, [], '2["news",null]')),
        ({"args": [1, "b", None]}, Delivery("/", None, [], '2["news",1,"b",null]')),
        ({"args": []}, Delivery("/", None, [], '2["news"]')),
        ({"event": "other", "data": 1}, Delivery("/", None, [], '2["other",1]')),
        ({"to": "room"}, Delivery("/", ["room"], [], '2["news"]')),
        ({"to": ["a", "b"], "except": "c"}, Delivery("/", ["a", "b"], ["c"], '2["news"]')),
        ({"to": [], "except": []}, Delivery("/", [], [], '2["news"]')),
        ({"to": None, "except": None}, Delivery("/", None, [], '2["news"]')),
        ({"namespace": "/chat", "data": "é"}, Delivery("/chat", None, [], '2/chat,["news","é"]')),
    ],
)
def test_accepted_shapes(body: dict[str, Any], expected: Delivery) -> None:
    assert parse(body) == expected


def test_event_is_the_channel_suffix_after_the_patterns_literal_head() -> None:
    assert parse({}, channel="ch:a:b").packet == '2["a:b"]'
    assert parse({}, channel="app.events.x", prefix=event_prefix("app.events.*")).packet == '2["x"]'
    assert event_prefix("ch:*") == "ch:"
    assert event_prefix("a?b*") == "a"
    assert event_prefix("exact") == "exact"


def test_any_namespace_when_a_worker_accepts_all() -> None:
    assert parse({"namespace": "/anything"}, namespaces="*").namespace == "/anything"


def test_size_limit_is_inclusive() -> None:
    body = json.dumps({"data": "x" * 100}).encode()
    assert parse(body, max_bytes=len(body)).packet
    with pytest.raises(Rejected) as info:
        parse(body, max_bytes=len(body) - 1)
    assert info.value.reason == "too_large"


@pytest.mark.parametrize(
    ("body", "channel", "reason"),
    [
        (b"not json", "ch:x", "invalid_json"),
        (b"\xff\xfe", "ch:x", "invalid_json"),
        (b"", "ch:x", "invalid_json"),
        (b"[1]", "ch:x", "not_object"),
        (b'"s"', "ch:x", "not_object"),
        (b"null", "ch:x", "not_object"),
        ({"room": "r"}, "ch:x", "unknown_field"),
        ({"data": 1, "args": [1]}, "ch:x", "bad_type"),
        ({"args": {"a": 1}}, "ch:x", "bad_type"),
        ({"to": 1}, "ch:x", "bad_type"),
        ({"to": ""}, "ch:x", "bad_type"),
        ({"to": ["a", None]}, "ch:x", "bad_type"),
        ({"except": {"a": 1}}, "ch:x", "bad_type"),
        ({"namespace": 3}, "ch:x", "bad_type"),
        ({"namespace": "chat"}, "ch:x", "bad_type"),
        ({"event": ""}, "ch:x", "bad_event"),
        ({"event": ["x"]}, "ch:x", "bad_event"),
        ({}, "ch:", "bad_event"),
        ({}, "other", "bad_event"),
        ({}, "ch:connect", "reserved_event"),
        ({"event": "disconnect"}, "ch:x", "reserved_event"),
        ({"namespace": "/unknown"}, "ch:x", "unknown_namespace"),
    ],
)
def test_rejections(body: Any, channel: str, reason: str) -> None:
    with pytest.raises(Rejected) as info:
        parse(body, channel=channel)
    assert info.value.reason == reason
    assert info.value.detail


def test_packet_encoding_matches_python_socketio() -> None:
    """Same packet as python-socketio's; we write UTF-8 where it writes \\u escapes."""
    from socketio import packet

    for namespace, args in [("/", [1, {"a": [None, True]}]), ("/chat", ["é", 1.5])]:
        expected = packet.Packet(packet.EVENT, namespace=namespace, data=["ev", *args]).encode()
        ours = encode_event_packet(namespace, "ev", args)
        head = 1 if namespace == "/" else len(f"2{namespace},")
        assert ours[:head] == expected[:head]
        assert json.loads(ours[head:]) == json.loads(expected[head:])
