"""socket.io 0.9 RedisStore messages (master.store09.wire), the view of the 0.9 fleet
(master.store09.view) and what the bridge publishes for our emits (master.store09.bridge).

The bodies here are the ones socket.io 0.9.19 publishes (captured from a real server on
RedisStore: ``{"nodeId":..,"args":[..]}``, ``undefined`` written as ``null``)."""

from __future__ import annotations

import json
from typing import Any, cast

import pytest

from sio_cluster.master.metrics import Metrics
from sio_cluster.master.routing.fanout import Fanout
from sio_cluster.master.store09.bridge import LegacyFleet
from sio_cluster.master.store09.view import FleetView
from sio_cluster.master.store09.wire import (
    DirectDispatch,
    Dispatch,
    StoreFormatError,
    StoreMessage,
    decode_message,
    encode_message,
    event_packet,
    read_client,
    read_direct,
    read_dispatch,
    read_membership,
    room_names,
)
from sio_cluster.wire.frames import Broadcast
from sio_cluster.wire.sio09.packets import endpoint_of, namespace_of


def message(*args: Any, node: str | int = 1309040544) -> StoreMessage:
    return decode_message(json.dumps({"nodeId": node, "args": list(args)}).encode())


# ---- wire ---------------------------------------------------------------------------------


def test_a_body_as_0_9_writes_it() -> None:
    body = encode_message("sio-cluster:x", "/r", '5:::{"name":"a"}', None, [])
    assert body == b'{"nodeId":"sio-cluster:x","args":["/r","5:::{\\"name\\":\\"a\\"}",null,[]]}'
    decoded = decode_message(body)
    assert decoded.ours and decoded.args == ["/r", '5:::{"name":"a"}', None, []]
    assert not message("x").ours


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1]",
        b'{"nodeId": 1}',
        b'{"nodeId": true, "args": []}',
        b"\xff",
        b'{"args":[]}',
    ],
)
def test_unreadable_bodies(body: bytes) -> None:
    with pytest.raises(StoreFormatError):
        decode_message(body)


@pytest.mark.parametrize(
    ("namespace", "room", "endpoint"),
    [("/", None, ""), ("/", "r", "/r"), ("/chat", None, "/chat"), ("/chat", "a/b", "/chat/a/b")],
)
def test_endpoints_both_ways(namespace: str, room: str | None, endpoint: str) -> None:
    assert endpoint_of(namespace, room) == endpoint
    if room is None:
        assert namespace_of(endpoint) == namespace


def test_room_names_of_a_namespace() -> None:
    endpoints = ["", "/r", "/chat", "/chat/a", "/chatty/b"]
    assert room_names("/", endpoints) == ["r", "chat", "chat/a", "chatty/b"]
    assert room_names("/chat", endpoints) == ["a"]


def test_a_dispatch_to_a_room_and_to_a_namespace() -> None:
    to_room = read_dispatch(message("/r", '5:::{"name":"n","args":[1,{"k":"v"}]}', None, ["x"]))
    assert to_room == Dispatch("/", "r", ["n", 1, {"k": "v"}], ("x",))
    to_chat = read_dispatch(message("/chat", '5::/chat:{"name":"n"}', True, []))
    assert to_chat == Dispatch("/chat", None, ["n"], ())  # volatile: not kept
    sent = read_dispatch(message("/chat/r", "3::/chat:hello"))
    assert sent == Dispatch("/chat", "r", ["message", "hello"], ())
    assert read_dispatch(message("", "4:::[1,2]")) == Dispatch("/", None, ["message", [1, 2]], ())
    assert read_dispatch(message("", "1::/chat")) is None  # no message: nothing to deliver


@pytest.mark.parametrize(
    "args",
    [
        ["/r"],
        [7, '5:::{"name":"n"}'],
        ["/r", '5:::{"name":"n"}', None, "x"],
        ["/r", '5:::{"name":"n"}', None, [None]],
        ["/r", "9:::"],
        ["/r", 5],
        ["/r", '5::/chat:{"name":"n"}'],  # the room is not in the packet's namespace
        ["/r", '5:::{"args":[]}'],  # an event without a name
    ],
)
def test_unreadable_dispatches(args: list[Any]) -> None:
    with pytest.raises(StoreFormatError):
        read_dispatch(message(*args))


def test_memberships_and_direct_emits() -> None:
    assert read_membership(message("TH3p2mp3vw5pDRITLKZA", "/chat/r")) == (
        "TH3p2mp3vw5pDRITLKZA",
        "/chat/r",
    )
    assert read_client(message("id1", "booted")) == "id1"
    direct = read_direct(message("id1", '5::/chat:{"name":"d","args":[2]}', None))
    assert direct == DirectDispatch("id1", "/chat", ["d", 2])
    for bad in (["id1"], ["", "/r"], [["id"], "/r"], ["id", 3]):
        with pytest.raises(StoreFormatError):
            read_membership(message(*bad))


def test_our_events_as_0_9_packets() -> None:
    assert event_packet("/", ["news", 1, "ü"]) == '5:::{"name":"news","args":[1,"ü"]}'
    assert event_packet("/chat", ["ping"]) == '5::/chat:{"name":"ping"}'
    with pytest.raises(ValueError):
        event_packet("/", ["bin", b"\x00"])


# ---- view ---------------------------------------------------------------------------------


def test_the_view_follows_joins_leaves_and_lost_servers() -> None:
    view = FleetView()
    view.join(1, "a", "")
    view.join(1, "a", "/r")
    view.join(2, "b", "/r")
    view.heard_from(1, 0.0)
    view.heard_from(2, 5.0)
    assert view.ids_in(["/r"]) == {"a", "b"}
    view.leave("a", "/r")
    assert view.ids_in(["/r"]) == {"b"} and view.ids_in([""]) == {"a"}
    assert view.silent(now=6.0, timeout=2.0) == [1]
    assert view.drop_node(1) == ["a"]
    assert "a" not in view.clients and view.ids_in([""]) == set() and 1 not in view.heard
    assert view.drop("b") and not view.drop("b")
    assert view.members == {}


# ---- what the bridge publishes ------------------------------------------------------------


def fleet() -> tuple[LegacyFleet, list[tuple[str, list[Any]]]]:
    published: list[tuple[str, list[Any]]] = []

    def publish(channel: str, body: bytes) -> None:
        published.append((channel, json.loads(body)["args"]))

    bridge = LegacyFleet(
        publish, cast(Any, None), cast(Any, None), cast(Fanout, None), Metrics(), 1.0
    )
    bridge.view.join(9, "v1", "")
    bridge.view.join(9, "v1", "/r1")
    bridge.view.join(9, "v1", "/r2")
    bridge.view.join(9, "v2", "/r2")
    return bridge, published


def broadcast(
    rooms: list[str] | None, exclude: tuple[str, ...] = (), namespace: str = "/"
) -> Broadcast:
    nsp = "" if namespace == "/" else namespace + ","
    return Broadcast(namespace, rooms, list(exclude), [f'2{nsp}["news",1]'])


def test_a_broadcast_to_everyone_and_to_several_rooms() -> None:
    bridge, published = fleet()
    bridge.relay_broadcast(broadcast(None, exclude=("r1",)))
    bridge.relay_broadcast(broadcast(["r1", "r2"]))
    packet = '5:::{"name":"news","args":[1]}'
    assert published == [
        ("dispatch", ["", packet, None, ["r1", "v1"]]),
        ("dispatch", ["/r1", packet, None, []]),
        ("dispatch", ["/r2", packet, None, ["v1"]]),  # v1 had it from r1
    ]


def test_an_emit_to_a_0_9_client_and_to_one_of_ours() -> None:
    bridge, published = fleet()
    bridge.our_join("/chat", "ours1", None)
    bridge.relay_broadcast(broadcast(["v2"], namespace="/chat"))
    bridge.relay_broadcast(broadcast(["ours1"], namespace="/chat"))
    bridge.relay_broadcast(broadcast(["v2"], exclude=("r2",)))
    assert published == [
        ("join", ["ours1", "/chat"]),
        ("dispatch-remote", ["v2", '5::/chat:{"name":"news","args":[1]}', None]),
    ]


def test_our_memberships() -> None:
    bridge, published = fleet()
    bridge.our_join("/", "s1", None)
    bridge.our_join("/", "s1", "s1")  # its own room: no 0.9 room
    bridge.our_join("/", "s1", "room")
    bridge.our_leave("/", "s1", "room")
    bridge.our_leave("/", "s1", None)
    assert published == [
        ("join", ["s1", ""]),
        ("join", ["s1", "/room"]),
        ("leave", ["s1", "/room"]),
        ("disconnect", ["s1"]),
    ]


def test_a_0_9_client_of_ours_leaving_one_of_its_namespaces() -> None:
    """A 0.9 client on our workers (--allow-v09) has one sid in all its namespaces: leaving
    ``/chat`` is a ``leave`` of ``/chat`` (as 0.9 publishes it), the last one a ``disconnect``;
    until then an emit to its sid stays ours."""
    bridge, published = fleet()
    bridge.our_join("/", "s1", None)
    bridge.our_join("/chat", "s1", None)
    bridge.our_leave("/chat", "s1", None)
    bridge.relay_broadcast(broadcast(["s1"]))
    assert bridge.is_ours("s1")
    bridge.our_leave("/", "s1", None)
    assert not bridge.is_ours("s1")
    assert published == [
        ("join", ["s1", ""]),
        ("join", ["s1", "/chat"]),
        ("leave", ["s1", "/chat"]),
        ("disconnect", ["s1"]),
    ]


def test_silence_is_judged_only_while_this_master_hears_itself() -> None:
    """A round whose own roll call did not come back, or that ran late, loses nobody and
    restarts everyone's silence; a server silent 2.5 rounds that this master heard is lost."""
    bridge, published = fleet()  # roll call: 1 s; 0.9 server 9 holds v1 and v2
    bridge.view.heard_from(9, 0.0)
    bridge._judge(now=10.0, round_time=1.0)  # deaf: no echo this round
    bridge._echoed = True
    bridge._judge(now=20.0, round_time=10.0)  # late: this master was paused
    assert published == [] and bridge.view.heard == {9: 20.0}
    bridge._judge(now=22.0, round_time=1.0)
    assert published == [] and "v1" in bridge.view.clients
    bridge._judge(now=22.6, round_time=1.0)
    assert published == [("disconnect", ["v1"]), ("disconnect", ["v2"])]
    assert bridge.view.clients == {} and bridge.view.heard == {}


def test_binary_is_not_sent() -> None:
    bridge, published = fleet()
    bridge.relay_broadcast(
        Broadcast("/", None, [], ['51-["bin",{"_placeholder":true,"num":0}]', b"\x01"])
    )
    assert published == []
