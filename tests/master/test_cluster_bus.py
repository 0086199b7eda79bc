"""Two masters' cluster buses over an in-memory Redis: broadcasts, requests, Node peers.

Every test that is not about one wire format runs against both forms of the bus (classic
and sharded): one engine, two codecs, the same answers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import msgpack
import orjson
import pytest

from sio_cluster.master.bus import sharded_wire
from sio_cluster.master.bus.classic_wire import RequestType, decode_request, encode_broadcast
from sio_cluster.master.bus.sharded_wire import MessageType
from sio_cluster.wire.frames import Broadcast, Room
from sio_cluster.wire.operations import (
    DisconnectSockets,
    EmitWithAck,
    FetchSockets,
    JoinRooms,
    Selector,
    ServerEmit,
)
from tests.cluster import until
from tests.memory_cluster import FORMS, MemoryHost, MemoryRedis, memory_host


@pytest.fixture(params=FORMS)
def form(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def hosts(form: str) -> AsyncIterator[tuple[MemoryRedis, MemoryHost, MemoryHost]]:
    redis = MemoryRedis()
    a, b = memory_host(redis, form=form), memory_host(redis, form=form)
    a.workers.connect(0, "/", "a0", "red")
    a.workers.connect(1, "/", "a1", 42)
    b.workers.connect(0, "/", "b0", "red", 42)
    b.workers.connect(1, "/", "b1", "blue")
    try:
        yield redis, a, b
    finally:
        await a.close()
        await b.close()


def node_broadcast(form: str, data: list[Any], rooms: list[Room]) -> bytes:
    """A broadcast as a Node server of that form publishes it."""
    if form == "classic":
        return encode_broadcast("node-uid", "/", data, rooms, [])
    packet = {"type": 2, "data": data, "nsp": "/"}
    opts = {"rooms": rooms, "except": [], "flags": {}}
    return sharded_wire.encode(
        "node-uid", "/", MessageType.BROADCAST, {"packet": packet, "opts": opts}
    )


def node_server(redis: MemoryRedis, form: str, sockets: list[str]) -> list[tuple[int, Any]]:
    """Subscribe a Node server holding ``sockets`` (in namespace "/"; "" lists a socket without
    an id, unreadable), as @socket.io/redis-adapter
    8.3 behaves: it answers fetches with its matching sockets, and (classic form) a per-socket
    join/leave/disconnect of its own socket with a bare ``{requestId}``; it carries room-wide
    join/leave/disconnect out without answering. Returns the (type, rooms) of what it heard."""
    heard: list[tuple[int, Any]] = []

    def matching(opts: Any) -> list[Any]:
        rooms = (opts or {}).get("rooms") or []
        return [
            {"id": s, "rooms": [s]} if s else {"rooms": []}
            for s in sockets
            if not rooms or s in rooms
        ]

    def answer(channel: str, body: dict[str, Any]) -> None:
        asyncio.create_task(redis.publish([(channel, orjson.dumps(body))]))

    def classic(channel: str, body: bytes) -> None:
        request = decode_request(body)
        heard.append((request["type"], request.get("rooms")))
        request_id = request.get("requestId")
        if request["type"] == RequestType.REMOTE_FETCH:
            found = matching(request.get("opts"))
            answer("socket.io-response#/#", {"requestId": request_id, "sockets": found})
        elif "sid" in request and request["sid"] in sockets and request_id is not None:
            answer("socket.io-response#/#", {"requestId": request_id})

    def sharded(channel: str, body: bytes) -> None:
        message = sharded_wire.decode(body)
        heard.append((message.kind, message.data.get("rooms")))
        if message.kind == MessageType.FETCH_SOCKETS:
            found = matching(message.data.get("opts"))
            data = {"requestId": message.request_id, "sockets": found}
            reply = sharded_wire.encode("node-uid", "/", MessageType.FETCH_SOCKETS_RESPONSE, data)
            response = f"socket.io#/#{message.uid}#"
            asyncio.create_task(redis.publish([(response, reply)]))

    if form == "classic":
        redis.subscribe("socket.io-request#/#", classic)
    else:
        redis.subscribe("socket.io#/#", sharded)
    return heard


def silent_master(redis: MemoryRedis, form: str) -> None:
    """A master that is subscribed (so it is counted) but never answers, as a hung one."""
    every = "socket.io-request#/#" if form == "classic" else "socket.io#/#"
    for channel in (every, "socket.io-masters#/#"):
        redis.subscribe(channel, lambda channel, body: None)


def received(host: MemoryHost) -> dict[int, list[Broadcast]]:
    return {w: list(m.received) for w, m in host.workers.workers.items() if m.received}


async def test_a_worker_broadcast_reaches_the_other_host_once_and_not_its_own(
    hosts: tuple[MemoryRedis, MemoryHost, MemoryHost],
) -> None:
    redis, a, b = hosts
    a.bus.relay_worker_broadcast(Broadcast("/", ["red"], [], ['2["news",1]']))
    await until(lambda: received(b) != {})
    assert received(b) == {0: [Broadcast("/", ["red"], [], ['2["news",1]'])]}
    assert [channel for channel, _ in redis.published] == ["socket.io#/#red#"]
    await until(lambda: len(redis.published) == 1)
    assert received(a) == {}  # own echo dropped


async def test_an_integer_room_crosses_hosts_both_ways(
    hosts: tuple[MemoryRedis, MemoryHost, MemoryHost], form: str
) -> None:
    redis, a, b = hosts
    a.bus.relay_worker_broadcast(Broadcast("/", [42], [], ['2["n",1]']))
    await until(lambda: received(b) != {})
    assert redis.published[0][0] == "socket.io#/#42#"
    assert received(b) == {0: [Broadcast("/", [42], [], ['2["n",1]'])]}
    # as a Node server sends io.to(42).emit("n", 2): the channel names the room as text
    await redis.publish([("socket.io#/#42#", node_broadcast(form, ["n", 2], [42]))])
    await until(lambda: len(received(a)) == 1)
    assert received(a) == {1: [Broadcast("/", [42], [], ['2["n",2]'])]}


@pytest.mark.parametrize("form", ["classic"])
async def test_old_emitters_one_copy_per_room_reach_each_socket_once(
    hosts: tuple[MemoryRedis, MemoryHost, MemoryHost],
) -> None:
    redis, _, b = hosts
    b.workers.connect(1, "/", "b2", 42)
    body = msgpack.packb(
        ["emitter", {"type": 2, "data": ["e", 1], "nsp": "/"}, {"rooms": ["red", 42]}]
    )
    await redis.publish([("socket.io#/#red#", body), ("socket.io#/#42#", body)])
    await until(lambda: sum(len(v) for v in received(b).values()) == 2)
    # b0 (red and 42) only through the red copy; b2 (42 only) through the 42 copy
    assert received(b) == {
        0: [Broadcast("/", ["red"], [], ['2["e",1]'])],
        1: [Broadcast("/", [42], ["red"], ['2["e",1]'])],
    }


async def test_room_wide_join_counts_every_host(
    hosts: tuple[MemoryRedis, MemoryHost, MemoryHost],
) -> None:
    _, a, b = hosts
    count = await a.operations.handle(0, JoinRooms("/", Selector(("red",)), ("vip",)))
    assert count == 2  # a0 here, b0 there
    assert a.table.route("/", ["vip"]) == [0] and b.table.route("/", ["vip"]) == [0]


async def test_room_wide_join_counts_node_sockets_without_waiting_for_node_answers(
    hosts: tuple[MemoryRedis, MemoryHost, MemoryHost], form: str
) -> None:
    redis, a, _ = hosts
    heard = node_server(redis, form, ["n1"])
    started = time.monotonic()
    count = await a.operations.handle(0, JoinRooms("/", Selector(None, ("red", 42)), ("vip",)))
    assert time.monotonic() - started < 1.0
    assert count == 2  # b1 on our other master, n1 on the Node server
    fetch, join = (
        (RequestType.REMOTE_FETCH, RequestType.REMOTE_JOIN)
        if form == "classic"
        else (MessageType.FETCH_SOCKETS, MessageType.SOCKETS_JOIN)
    )
    assert heard == [(fetch, None), (join, ["vip"])]


async def test_per_socket_join_of_another_hosts_socket(
    hosts: tuple[MemoryRedis, MemoryHost, MemoryHost],
) -> None:
    _, a, b = hosts
    joined = await a.operations.handle(0, JoinRooms("/", Selector(("b1",)), ("x", 5), True))
    assert joined == 1
    assert b.workers.rooms_of(1, "/", "b1") == {"b1", "blue", "x", 5}


async def test_a_per_socket_join_of_a_node_servers_socket_is_confirmed_by_node(
    hosts: tuple[MemoryRedis, MemoryHost, MemoryHost], form: str
) -> None:
    """Node confirms a per-socket join of its socket with a bare ``{requestId}``: no count."""
    redis, a, _ = hosts
    node_server(redis, form, ["n1"])
    assert await a.operations.handle(0, JoinRooms("/", Selector(("n1",)), ("x",), True)) == 1
    started = time.monotonic()
    assert await a.operations.handle(0, DisconnectSockets("/", Selector(("n1",)), False, True)) == 1
    assert time.monotonic() - started < 1.0


async def test_a_per_socket_join_is_done_at_the_owners_confirmation(
    hosts: tuple[MemoryRedis, MemoryHost, MemoryHost], form: str
) -> None:
    """Node's rule: the server holding the socket confirms, and nobody else is waited for;
    a hung master does not hold the join up for the request timeout."""
    redis, a, b = hosts
    silent_master(redis, form)
    started = time.monotonic()
    assert await a.operations.handle(0, JoinRooms("/", Selector(("b1",)), ("x",), True)) == 1
    assert time.monotonic() - started < 1.0
    assert b.workers.rooms_of(1, "/", "b1") == {"b1", "blue", "x"}


async def test_a_per_socket_join_naming_no_room_confirms_nothing(
    hosts: tuple[MemoryRedis, MemoryHost, MemoryHost],
) -> None:
    """No room, no request: nobody confirms, so no socket was found (a worker's malformed
    request must not read as a join of a socket that exists nowhere)."""
    _, a, _ = hosts
    assert await a.operations.handle(0, JoinRooms("/", Selector(("nobody",)), (), True)) == 0


async def test_fetch_sockets_across_hosts_carries_handshake_and_data(
    hosts: tuple[MemoryRedis, MemoryHost, MemoryHost],
) -> None:
    _, a, _ = hosts
    sockets = await a.operations.handle(0, FetchSockets("/", Selector(("red",))))
    assert sorted((s["id"], s["handshake"]["address"], s["data"]["worker"]) for s in sockets) == [
        ("a0", "127.0.0.1", 0),
        ("b0", "127.0.0.1", 0),
    ]


async def test_an_unreadable_socket_in_a_fetch_answer_is_counted_and_left_out(
    hosts: tuple[MemoryRedis, MemoryHost, MemoryHost], form: str
) -> None:
    redis, a, _ = hosts
    node_server(redis, form, ["n1", ""])
    sockets = await a.operations.handle(0, FetchSockets("/", Selector()))
    assert sorted(s["id"] for s in sockets) == ["a0", "a1", "b0", "b1", "n1"]
    assert a.bus.metrics.rejected.labels(reason="bad_adapter_message")._value.get() == 1


async def test_emit_with_ack_to_another_hosts_socket(
    hosts: tuple[MemoryRedis, MemoryHost, MemoryHost],
) -> None:
    _, a, b = hosts
    b.workers.workers[1].acks["b1"] = ["pong"]
    assert await a.operations.handle(0, EmitWithAck("/", "b1", ["ping"], 2.0)) == [
        "pong",
        "ping",
    ]


async def test_server_side_emit_reaches_the_other_hosts_workers(
    hosts: tuple[MemoryRedis, MemoryHost, MemoryHost],
) -> None:
    _, a, b = hosts
    assert await a.operations.handle(0, ServerEmit("/", "reload", [1])) == 2
    await until(lambda: all(w.server_events for w in b.workers.workers.values()))
    assert [w.server_events for w in b.workers.workers.values()] == [[("reload", [1])]] * 2
    assert [w.server_events for w in a.workers.workers.values()] == [[], [("reload", [1])]]


@pytest.mark.parametrize("form", ["classic"])
async def test_all_rooms_requests_are_answered_with_this_hosts_rooms(
    hosts: tuple[MemoryRedis, MemoryHost, MemoryHost],
) -> None:
    redis, _, _ = hosts
    answers: list[dict[str, object]] = []
    redis.subscribe(
        "socket.io-response#/#", lambda channel, body: answers.append(orjson.loads(body))
    )
    request = {"uid": "node", "requestId": "r1", "type": RequestType.ALL_ROOMS}
    await redis.publish([("socket.io-request#/#", orjson.dumps(request))])
    await until(lambda: len(answers) == 2)
    rooms = [sorted(map(str, a["rooms"])) for a in answers]  # type: ignore[call-overload]
    assert sorted(rooms) == [["42", "a0", "a1", "red"], ["42", "b0", "b1", "blue", "red"]]
    assert {a["requestId"] for a in answers} == {"r1"}


@pytest.mark.parametrize("form", ["classic"])
async def test_unreadable_adapter_messages_are_counted_and_the_bus_goes_on(
    hosts: tuple[MemoryRedis, MemoryHost, MemoryHost],
) -> None:
    redis, a, b = hosts
    await redis.publish(
        [
            ("socket.io#/#", b"\xc1garbage"),
            ("socket.io-request#/#", b"{not json"),
            (
                "socket.io-request#/#",
                orjson.dumps({"type": RequestType.REMOTE_JOIN, "requestId": "x"}),
            ),
        ]
    )
    a.bus.relay_worker_broadcast(Broadcast("/", ["blue"], [], ['2["after",1]']))
    await until(lambda: received(b) != {})
    assert received(b) == {1: [Broadcast("/", ["blue"], [], ['2["after",1]'])]}
    metric = a.bus.metrics.rejected.labels(reason="bad_adapter_message")
    await until(lambda: metric._value.get() == 3)
