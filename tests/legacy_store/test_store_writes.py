"""The net effect of a batch on a Redis Cluster (:func:`legacy_store.writes.slot_plan`), pure.

Checked against a model of the transactional form (the changes one after the other, a
disconnect as the Lua script does it), and for the property the per-key form relies on:
its commands may be sent again, in part and in any order, with the same result.
"""

from __future__ import annotations

import random

from sio_cluster.legacy_store.schema import Schema
from sio_cluster.legacy_store.writes import Op, SlotPlan, slot_plan

SCHEMA = Schema("P")
State = dict[str, set[str]]  # key -> members; the owners hash under "owners"


def test_the_last_change_of_each_member_wins() -> None:
    plan = slot_plan(
        [
            ("connect", "/", "a", None),
            ("join", "/", "a", "r1"),
            ("join", "/", "a", "r2"),
            ("leave", "/", "a", "r2"),
            ("leave", "/chat", "b", 7),
            ("join", "/chat", "b", 7),
        ],
        SCHEMA,
    )
    assert plan == SlotPlan(
        connected={"P#a"},
        added={"P#a": {"a", "r1"}, "P#r1": {"a"}, "P#/chat#7": {"b"}, "P#/chat#b": {"7"}},
        removed={"P#r2": {"a"}, "P#a": {"r2"}},
        gone=[],
    )


def test_a_disconnect_drops_its_pending_changes_and_reads_what_was_written_before() -> None:
    plan = slot_plan(
        [
            ("connect", "/", "new", None),
            ("join", "/", "new", "r"),
            ("join", "/", "old", "r"),
            ("join", "/", "kept", "r"),
            ("disconnect", "/", "new", None),
            ("leave", "/", "old", "x"),
            ("disconnect", "/chat", "old", None),
            ("disconnect", "/", "old", None),
        ],
        SCHEMA,
    )
    assert plan == SlotPlan(
        connected=set(),
        added={"P#r": {"kept"}, "P#kept": {"r"}},
        removed={},
        gone=[("P#new", "new", "P#"), ("P#/chat#old", "old", "P#/chat#"), ("P#old", "old", "P#")],
    )


def sequential(state: State, ops: list[Op]) -> None:
    """The transactional form: each change in turn; a disconnect as the Lua script."""
    for kind, namespace, sid, room in ops:
        socket_key = SCHEMA.socket_key(namespace, sid)
        room_key = SCHEMA.room_key(namespace, str(room))
        if kind == "connect":
            state.setdefault(socket_key, set()).add(sid)
            state.setdefault("owners", set()).add(socket_key)
        elif kind == "join":
            state.setdefault(room_key, set()).add(sid)
            state.setdefault(socket_key, set()).add(str(room))
        elif kind == "leave":
            state.get(room_key, set()).discard(sid)
            state.get(socket_key, set()).discard(str(room))
        else:
            for member in state.pop(socket_key, set()) - {sid}:
                state.get(SCHEMA.room_prefix(namespace) + member, set()).discard(sid)
            state.get("owners", set()).discard(socket_key)
        for key in [k for k, members in state.items() if not members]:
            del state[key]  # Redis deletes an empty set


def per_key(state: State, plan: SlotPlan, rng: random.Random, replays: int) -> None:
    """The phases of :class:`legacy_store.writes.SlotWrites`; phase B's commands shuffled
    and ``replays`` of them sent again, as a redis-py pipeline retry may."""
    state.setdefault("owners", set()).update(plan.connected)
    commands = [(True, k, m) for k, ms in plan.added.items() for m in ms]
    commands += [(False, k, m) for k, ms in plan.removed.items() for m in ms]
    rng.shuffle(commands)
    commands += rng.sample(commands, min(replays, len(commands)))
    for add, key, member in commands:
        if add:
            state.setdefault(key, set()).add(member)
        else:
            state.get(key, set()).discard(member)
    read = [set(state.get(key, set())) for key, _, _ in plan.gone]
    for (key, sid, prefix), members in zip(plan.gone, read, strict=True):
        for member in members - {sid}:
            state.get(prefix + member, set()).discard(sid)
        state.pop(key, None)
        state.get("owners", set()).discard(key)
    for key in [k for k, members in state.items() if not members]:
        del state[key]


def random_batches(rng: random.Random, batches: int, size: int) -> list[list[Op]]:
    """Valid change streams of one master: unique sids, joins and leaves of connected ones."""
    connected: dict[tuple[str, str], set[str]] = {}
    made = 0
    result = []
    for _ in range(batches):
        ops: list[Op] = []
        for _ in range(size):
            choice = rng.random()
            if not connected or choice < 0.2:
                made += 1
                socket = (rng.choice(["/", "/chat"]), f"s{made}")
                connected[socket] = set()
                ops.append(("connect", *socket, None))
                continue
            socket = rng.choice(sorted(connected))
            rooms = connected[socket]
            if choice < 0.3:
                del connected[socket]
                ops.append(("disconnect", *socket, None))
            elif rooms and choice < 0.6:
                room = rng.choice(sorted(rooms))
                rooms.discard(room)
                ops.append(("leave", *socket, room))
            else:
                room = f"r{rng.randrange(6)}"
                rooms.add(room)
                ops.append(("join", *socket, room))
        result.append(ops)
    return result


def test_the_per_key_form_ends_as_the_transactional_one_even_with_replays() -> None:
    rng = random.Random(20261122)
    for _ in range(300):
        expected: State = {}
        got: State = {}
        for ops in random_batches(rng, batches=4, size=rng.randrange(1, 25)):
            sequential(expected, ops)
            per_key(got, slot_plan(ops, SCHEMA), rng, replays=rng.randrange(4))
            assert got == expected, ops
