"""Socket.IO 5 packets to protocol 1 (socket.io 0.9) and back: workers.v09.translate."""

from __future__ import annotations

import pytest
from socketio.base_server import BaseServer

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
    decode_packet,
)
from sio_cluster.workers.v09.translate import (
    IGNORED_EVENTS,
    NOTHING,
    Upgraded,
    downgrade,
    upgrade,
)

AUTH = {"token": "t1", "t": "17"}


@pytest.mark.parametrize(
    ("packet", "expected"),
    [
        (Event("join", ("room",)), Upgraded('2["join","room"]')),
        (Event("join", ("r",), "/chat"), Upgraded('2/chat,["join","r"]')),
        (Event("join", ("r",), "", 7, True), Upgraded('27["join","r"]')),
        (Event("join", ("r",), "/chat", 7, True), Upgraded('2/chat,7["join","r"]')),
        (Event("hi", (), "", 7), Upgraded('2["hi"]', "6:::7")),  # acknowledged on receipt
        (Event("hi", (), "/chat", 8), Upgraded('2/chat,["hi"]', "6::/chat:8")),
        (Event("ünï", ({"a": None},)), Upgraded('2["ünï",{"a":null}]')),
        (Message("text: x"), Upgraded('2["message","text: x"]')),
        (Message("x", "/chat", 3, True), Upgraded('2/chat,3["message","x"]')),
        (Json({"a": [1]}), Upgraded('2["message",{"a":[1]}]')),
        (Ack(5, (1, "two")), Upgraded('35[1,"two"]')),
        (Ack(5, (), "/chat"), Upgraded("3/chat,5[]")),
        (Connect("/chat"), Upgraded('0/chat,{"token":"t1","t":"17"}')),
        (Disconnect("/chat"), Upgraded("1/chat,")),
        (Connect(), NOTHING),  # "/" is connected at the handshake
        (Disconnect(), NOTHING),  # the whole session: the caller closes it
        (Heartbeat(), NOTHING),
        (Noop(), NOTHING),
        (Error("unauthorized"), NOTHING),
    ],
    ids=repr,
)
def test_upgrade(packet: Packet, expected: Upgraded) -> None:
    assert upgrade(packet, AUTH) == expected


@pytest.mark.parametrize("name", ["connect", "disconnect"])
def test_an_event_named_as_a_connect_or_disconnect_is_dropped_as_0_9_drops_it(name: str) -> None:
    assert upgrade(Event(name, ({},)), AUTH) == NOTHING
    assert upgrade(Event(name, (), "/chat", 4, True), AUTH) == NOTHING  # never answered
    assert upgrade(Event(name, (), "/chat", 4, False), AUTH) == Upgraded(None, "6::/chat:4")


@pytest.mark.parametrize(
    "name", ["error", "open", "close", "retry", "reconnect", "newListener", "connect_error"]
)
def test_names_0_9_does_not_blacklist_are_ordinary_events(name: str) -> None:
    assert upgrade(Event(name, (1,)), AUTH) == Upgraded(f'2["{name}",1]')


def test_the_dropped_names_are_those_python_socketio_handles_itself() -> None:
    assert frozenset(BaseServer.reserved_events) == IGNORED_EVENTS


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('0{"sid":"abc"}', "1::"),
        ('0/chat,{"sid":"abc"}', "1::/chat"),
        ("1", "0::"),
        ("1/chat,", "0::/chat"),
        ('2["tick",1]', '5:::{"name":"tick","args":[1]}'),
        ('2["tick"]', '5:::{"name":"tick"}'),
        ('2/chat,["tick","é 😀"]', '5::/chat:{"name":"tick","args":["é 😀"]}'),
        ('212["question","life?"]', '5:12+::{"name":"question","args":["life?"]}'),
        ('2/chat,12["q"]', '5:12+:/chat:{"name":"q"}'),
        ('34["done"]', '6:::4+["done"]'),
        ("34[]", "6:::4"),
        ('3/chat,4[{"a":1}]', '6::/chat:4+[{"a":1}]'),
        ('4{"message":"Unable to connect"}', "7:::2"),
        ('4/chat,{"message":"refused"}', "7::/chat:2"),
    ],
)
def test_downgrade(text: str, expected: str) -> None:
    assert downgrade(text) == expected


@pytest.mark.parametrize(
    "text",
    ['51-["f",{"_placeholder":true,"num":0}]', '61-[{"_placeholder":true,"num":0}]', "2[]", "2{}"],
)
def test_what_protocol_1_cannot_carry_is_not_sent(text: str) -> None:
    assert downgrade(text) is None


def test_a_0_9_ack_round_trip() -> None:
    """A 0.9 client's emit with a callback and python-socketio's answer to it."""
    asked = upgrade(decode_packet('5:3+::{"name":"join","args":["r"]}'), AUTH)
    assert asked == Upgraded('23["join","r"]')
    assert downgrade('33[["r"]]') == '6:::3+[["r"]]'
