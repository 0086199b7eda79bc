"""The pure routing function, exhaustively: every combination of targets on a small table."""

from __future__ import annotations

import itertools

import pytest

from sio_cluster.master.routing.router import RoutingTable

# worker -> sid -> rooms; every sid is also in its own room and in None
LAYOUT = {
    0: {"a": ["red"], "b": ["red", "blue"], "c": []},
    1: {"d": ["blue"], "e": ["green"]},
    2: {"f": ["red", "green"]},
}
ROOMS = ["red", "blue", "green", "empty", "a", "b", "c", "d", "e", "f"]


def build(namespace: str = "/") -> RoutingTable:
    table = RoutingTable()
    for worker, sids in LAYOUT.items():
        for sid, rooms in sids.items():
            for room in [None, sid, *rooms]:
                table.join(worker, namespace, sid, room)
    return table


def members(room: str | None) -> set[str]:
    return {
        sid
        for sids in LAYOUT.values()
        for sid, rooms in sids.items()
        if room is None or room == sid or room in rooms
    }


def owner(sid: str) -> int:
    return next(w for w, sids in LAYOUT.items() if sid in sids)


def expected(to: list[str] | None, exclude: list[str], skip: int | None) -> list[int]:
    recipients = set().union(*(members(r) for r in to)) if to is not None else members(None)
    for room in exclude:
        recipients -= members(room)
    return sorted({owner(s) for s in recipients} - {skip})


SUBSETS = [list(c) for n in range(3) for c in itertools.combinations(ROOMS, n)]


@pytest.mark.parametrize("skip", [None, 0, 1])
def test_route_matches_set_semantics_for_every_small_combination(skip: int | None) -> None:
    table = build()
    for to in [None, *SUBSETS]:
        for exclude in SUBSETS:
            assert table.route("/", to, exclude, skip_worker=skip) == expected(to, exclude, skip), (
                to,
                exclude,
            )


def test_unknown_namespace_and_unknown_rooms_route_nowhere() -> None:
    table = build()
    assert table.route("/other", None) == []
    assert table.route("/", ["nobody-here"]) == []
    assert table.route("/", []) == []


def test_namespaces_are_independent() -> None:
    table = build("/")
    table.join(5, "/chat", "z", None)
    table.join(5, "/chat", "z", "red")
    assert table.route("/chat", ["red"]) == [5]
    assert 5 not in table.route("/", ["red"])


def test_leave_removes_membership_and_empty_rooms_vanish() -> None:
    table = build()
    table.leave(2, "/", "f", "green")
    assert table.route("/", ["green"]) == [1]
    table.leave(1, "/", "e", "green")
    assert table.route("/", ["green"]) == []
    assert "green" not in table._rooms["/"]
    table.leave(1, "/", "e", "green")  # twice is harmless
    table.leave(9, "/nope", "x", "y")


def test_disconnect_is_leaving_every_room_including_none() -> None:
    table = build()
    for room in [None, "f", "red", "green"]:
        table.leave(2, "/", "f", room)
    assert 2 not in table.route("/", None)
    assert table.sockets_per_worker() == {0: 3, 1: 2}


def test_drop_worker_forgets_everything_it_held() -> None:
    table = build()
    table.join(0, "/chat", "q", None)
    table.join(0, "/chat", "q", "q")
    dropped, emptied = table.drop_worker(0)
    assert sorted(dropped) == [("/", "a"), ("/", "b"), ("/", "c"), ("/chat", "q")]
    assert sorted(emptied, key=str) == [
        ("/", "a"),
        ("/", "b"),
        ("/", "c"),
        ("/chat", "q"),
        ("/chat", None),
    ]
    assert table.route("/", None) == [1, 2]
    assert table.route("/", ["a", "b"]) == []
    assert table.route("/chat", None) == []
    assert table.sockets_per_worker() == {1: 2, 2: 1}
    assert table.drop_worker(0) == ([], [])


def test_join_and_leave_tell_when_a_room_opens_and_closes_on_this_host() -> None:
    table = RoutingTable()
    assert table.join(0, "/", "a", "red") is True
    assert table.join(1, "/", "b", "red") is False
    assert table.join(0, "/", "c", "red") is False
    assert table.leave(0, "/", "a", "red") is False
    assert table.leave(0, "/", "c", "red") is False
    assert table.leave(1, "/", "b", "red") is True
    assert table.leave(1, "/", "b", "red") is False
    assert table.route("/", ["red"]) == []


def test_sockets_lists_each_socket_with_its_rooms() -> None:
    table = build()
    table.join(7, "/chat", "z", None)
    got = {(ns, sid): sorted(map(str, rooms)) for ns, sid, rooms in table.sockets()}
    assert got == {
        **{("/", sid): sorted(rooms) for sids in LAYOUT.values() for sid, rooms in sids.items()},
        ("/chat", "z"): [],
    }


def test_except_of_every_target_on_a_worker_skips_that_worker() -> None:
    table = build()
    assert table.route("/", ["red"], ["a", "b"]) == [2]
    assert table.route("/", None, ["red", "blue", "green", "c"]) == []
    assert table.route("/", None, ["red", "blue", "green"]) == [0]


def test_int_rooms_are_rooms_too() -> None:
    table = RoutingTable()
    table.join(3, "/", "s", 42)
    assert table.route("/", [42]) == [3]
    assert table.route("/", ["42"]) == []
