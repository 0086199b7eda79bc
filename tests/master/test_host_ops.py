"""Host operations on in-memory workers: who is asked, and how answers combine."""

from __future__ import annotations

import pytest

from sio_cluster.master.host_ops import HostOperations
from sio_cluster.master.routing.router import RoutingTable
from sio_cluster.wire.operations import (
    DisconnectSockets,
    EmitWithAck,
    FetchSockets,
    JoinRooms,
    LeaveRooms,
    Selector,
    ServerEmit,
)
from tests.memory_cluster import MemoryWorkers


def host_with_sockets() -> tuple[HostOperations, MemoryWorkers]:
    table = RoutingTable()
    workers = MemoryWorkers(table, 3)
    workers.connect(0, "/", "a", "red", 7)
    workers.connect(0, "/", "b", "blue")
    workers.connect(1, "/", "c", "red")
    workers.connect(1, "/chat", "d", "red")
    return HostOperations(table, workers), workers


async def test_only_workers_holding_matching_sockets_are_asked() -> None:
    host, workers = host_with_sockets()
    fetched = await host.on_host(FetchSockets("/", Selector(("red",), ("a",))))
    assert [s["id"] for s in fetched] == ["c"]
    assert [len(w.calls) for w in workers.workers.values()] == [0, 1, 0]


async def test_join_counts_add_up_and_reach_the_routing_table() -> None:
    host, workers = host_with_sockets()
    count = await host.on_host(JoinRooms("/", Selector(("red", "blue")), ("vip",)))
    assert count == 3
    assert host.table.route("/", ["vip"]) == [0, 1]
    assert workers.rooms_of(1, "/chat", "d") == {"d", "red"}  # another namespace: untouched
    assert await host.on_host(LeaveRooms("/", Selector(None, (7,)), ("vip",))) == 2
    assert host.table.route("/", ["vip"]) == [0]


async def test_integer_rooms_select_like_string_rooms() -> None:
    host, _ = host_with_sockets()
    fetched = await host.on_host(FetchSockets("/", Selector((7,))))
    assert [s["id"] for s in fetched] == ["a"]


async def test_disconnect_removes_sockets_from_routing() -> None:
    host, _ = host_with_sockets()
    assert await host.on_host(DisconnectSockets("/", Selector(("blue",)))) == 1
    assert host.table.route("/", ["b"]) == []
    assert host.table.route("/", None) == [0, 1]


async def test_emit_with_ack_goes_to_the_owner_only() -> None:
    host, workers = host_with_sockets()
    ack = await host.on_host(EmitWithAck("/", "c", ["ping", 1], 1.0))
    assert ack == ["ack", "ping"]
    assert [len(w.calls) for w in workers.workers.values()] == [0, 1, 0]
    with pytest.raises(KeyError):
        await host.on_host(EmitWithAck("/", "nobody", ["ping"], 1.0))


async def test_server_side_emit_skips_its_origin() -> None:
    host, workers = host_with_sockets()
    assert await host.on_host(ServerEmit("/", "reload", [1]), origin=1) == 2
    assert [w.server_events for w in workers.workers.values()] == [
        [("reload", [1])],
        [],
        [("reload", [1])],
    ]


async def test_a_failing_worker_is_left_out_and_the_others_still_count() -> None:
    host, workers = host_with_sockets()
    workers.workers[0].broken = True
    assert await host.on_host(JoinRooms("/", Selector(("red",)), ("vip",))) == 1
    assert host.table.route("/", ["vip"]) == [1]
