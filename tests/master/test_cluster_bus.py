"""Two masters' cluster buses over an in-memory Redis: broadcasts, requests, Node peers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import msgpack
import orjson
import pytest

from sio_cluster.master.bus.classic_wire import RequestType, encode_broadcast
from sio_cluster.wire.frames import Broadcast
from sio_cluster.wire.operations import EmitWithAck, FetchSockets, JoinRooms, Selector, ServerEmit
from tests.cluster import until
from tests.memory_cluster import MemoryHost, MemoryRedis, memory_host


@pytest.fixture
async def hosts() -> AsyncIterator[tuple[MemoryRedis, MemoryHost, MemoryHost]]:
    redis = MemoryRedis()
    a, b = memory_host(redis), memory_host(redis)
    a.workers.connect(0, "/", "a0", "red")
    a.workers.connect(1, "/", "a1", 42)
    b.workers.connect(0, "/", "b0", "red", 42)
    b.workers.connect(1, "/", "b1", "blue")
    try:
        yield redis, a, b
    finally:
        await a.close()
        await b.close()


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
    hosts: tuple[MemoryRedis, MemoryHost, MemoryHost],
) -> None:
    redis, a, b = hosts
    a.bus.relay_worker_broadcast(Broadcast("/", [42], [], ['2["n",1]']))
    await until(lambda: received(b) != {})
    assert redis.published[0][0] == "socket.io#/#42#"
    assert received(b) == {0: [Broadcast("/", [42], [], ['2["n",1]'])]}
    # as a Node server sends io.to(42).emit("n", 2): the channel names the room as text
    node = encode_broadcast("node-uid", "/", ["n", 2], [42], [])
    await redis.publish([("socket.io#/#42#", node)])
    await until(lambda: len(received(a)) == 1)
    assert received(a) == {1: [Broadcast("/", [42], [], ['2["n",2]'])]}


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
    hosts: tuple[MemoryRedis, MemoryHost, MemoryHost],
) -> None:
    redis, a, _ = hosts
    heard: list[dict[str, Any]] = []

    def node_server(channel: str, body: bytes) -> None:
        """As a Node server does: answer fetches, carry joins out without answering."""
        request = orjson.loads(body)
        heard.append(request)
        if request["type"] == RequestType.REMOTE_FETCH:
            answer = {"requestId": request["requestId"], "sockets": [{"id": "n1", "rooms": []}]}
            asyncio.create_task(redis.publish([("socket.io-response#/#", orjson.dumps(answer))]))

    redis.subscribe("socket.io-request#/#", node_server)
    started = time.monotonic()
    count = await a.operations.handle(0, JoinRooms("/", Selector(("blue",)), ("vip",)))
    assert time.monotonic() - started < 1.0
    assert count == 2  # b1 on our other master, n1 on the Node server
    assert [(m["type"], m.get("rooms")) for m in heard] == [
        (RequestType.REMOTE_FETCH, None),
        (RequestType.REMOTE_JOIN, ["vip"]),
    ]


async def test_per_socket_join_of_another_hosts_socket(
    hosts: tuple[MemoryRedis, MemoryHost, MemoryHost],
) -> None:
    _, a, b = hosts
    joined = await a.operations.handle(0, JoinRooms("/", Selector(("b1",)), ("x", 5), True))
    assert joined == 1
    assert b.workers.rooms_of(1, "/", "b1") == {"b1", "blue", "x", 5}


async def test_fetch_sockets_across_hosts_carries_handshake_and_data(
    hosts: tuple[MemoryRedis, MemoryHost, MemoryHost],
) -> None:
    _, a, _ = hosts
    sockets = await a.operations.handle(0, FetchSockets("/", Selector(("red",))))
    assert sorted((s["id"], s["handshake"]["address"], s["data"]["worker"]) for s in sockets) == [
        ("a0", "127.0.0.1", 0),
        ("b0", "127.0.0.1", 0),
    ]


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
