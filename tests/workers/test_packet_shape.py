"""Which Socket.IO packets python-socketio would raise on (pure): events and acks by shape."""

from __future__ import annotations

import pytest

from sio_cluster.workers.packet_shape import shape_problem


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ("2", "an event without a payload array"),
        ("2[]", "an event without a name"),
        ("2[ ]", "an event without a name"),
        ("2{}", "an event without a payload array"),
        ('2"x"', "an event without a payload array"),
        ("2/chat,", "an event without a payload array"),
        ("2/chat", "an event without a payload array"),
        ("2/chat,12", "an event without a payload array"),
        ("212[]", "an event without a name"),
        ("51-", "an event without a payload array"),
        ("51-[]", "an event without a name"),
        ("3", "an ack without args"),
        ("3/chat,4", "an ack without args"),
        ("61-", "an ack without args"),
    ],
)
def test_a_packet_python_socketio_would_raise_on_is_named(data: str, problem: str) -> None:
    assert shape_problem(data) == problem


@pytest.mark.parametrize(
    "data",
    [
        '2["x"]',
        '2 ["x", 1]',
        '2/chat,["x"]',
        '2/chat,7["x",{"a":1}]',
        "2[1]",  # a number as the name: python-socketio's own business, as in Node
        '51-["up",{"_placeholder":true,"num":0}]',
        '5/chat,1-3["up",{"_placeholder":true,"num":0}]',
        "3[]",
        '3/chat,4["ok"]',
        '61-[{"_placeholder":true,"num":0}]',
        "0",
        '0{"token":1}',
        "1",
        "1/chat,",
        "4x",  # not an event: the decoder refuses it (a ValueError)
        "5",  # no attachment count: the decoder refuses it
        "",
    ],
)
def test_valid_packets_and_other_kinds_pass(data: str) -> None:
    assert shape_problem(data) is None
