"""The rules of connection state recovery, on the pure parts: offsets written into encoded
packets (wire.offsets) and the host's sessions and packet log (master.recovery.log)."""

from __future__ import annotations

import json

import pytest

from sio_cluster.master.bus import classic_wire as adapter_wire
from sio_cluster.master.recovery import handover_wire
from sio_cluster.master.recovery.log import (
    MAX_REPLAY_BYTES,
    Outcome,
    RecoveryLog,
    Restoration,
    Session,
)
from sio_cluster.wire.offsets import stamped, takes_offset


@pytest.mark.parametrize(
    ("text", "takes"),
    [
        ('2["news",1]', True),
        ('2/chat,["news",1]', True),
        ('51-["bin",{"_placeholder":true,"num":0}]', True),
        ('51-/chat,["bin",{"_placeholder":true,"num":0}]', True),
        ('212["ask",1]', False),  # an ack id: no offset, as in Node
        ('2/chat,7["ask"]', False),
        ('3["ack"]', False),
        ('0{"sid":"x"}', False),
        ('5x-["bin"]', False),
        ("", False),
    ],
)
def test_only_events_without_an_ack_take_an_offset(text: str, takes: bool) -> None:
    assert takes_offset(text) is takes


def test_the_offset_becomes_the_events_last_argument() -> None:
    assert stamped(['2/chat,["news",{"a":[1]}]'], "ab.1f") == ['2/chat,["news",{"a":[1]},"ab.1f"]']
    binary = stamped(['51-["bin",{"_placeholder":true,"num":0}]', b"\x00"], "ab.2")
    assert binary == ['51-["bin",{"_placeholder":true,"num":0},"ab.2"]', b"\x00"]
    assert json.loads(stamped(['2["only"]'], "x.1")[0][1:]) == ["only", "x.1"]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def log_with(window: float = 120.0, cap: int = 10_000_000) -> tuple[RecoveryLog, Clock]:
    clock = Clock()
    return RecoveryLog(window, cap, tag="h1", clock=clock), clock


def event(name: str, *args: object) -> list[str | bytes]:
    return ["2" + json.dumps([name, *args], separators=(",", ":"))]


def offset_of(parts: list[str | bytes]) -> str:
    text = parts[0]
    assert isinstance(text, str)
    last: str = json.loads(text[1:])[-1]
    return last


def test_a_kept_session_gets_back_its_rooms_data_and_exactly_what_it_missed() -> None:
    log, _ = log_with()
    log.connected("/", "sid1", "pid1")
    log.saved_data("/", "sid1", b"\x81\xa1k\x01")
    seen = offset_of(log.stamp("/", ["room"], [], event("m", 1)))
    log.keep("/", "sid1", ["sid1", "room"])
    log.stamp("/", ["room"], [], event("m", 2))  # missed
    log.stamp("/", ["other"], [], event("m", 3))  # not for it
    log.stamp("/", None, ["room"], event("m", 4))  # everyone except its room
    log.stamp("/", ["sid1"], [], event("m", 5))  # to its sid: missed
    log.stamp("/chat", None, [], event("m", 6))  # another namespace
    log.stamp("/", None, [], event("m", 7))  # everyone: missed
    result = log.restore("/", "pid1", seen)
    assert isinstance(result, Restoration)
    assert (result.session.sid, result.session.rooms, result.session.data) == (
        "sid1",
        ("sid1", "room"),
        b"\x81\xa1k\x01",
    )
    assert [json.loads(str(p[0])[1:])[1] for p in result.missed] == [2, 5, 7]
    assert log.restore("/", "pid1", seen) is Outcome.UNKNOWN  # used once
    assert log.is_live("/", "sid1")
    assert log.outcomes == {Outcome.RECOVERED: 1, Outcome.UNKNOWN: 1}


def test_a_socket_disconnected_on_purpose_keeps_nothing() -> None:
    log, _ = log_with()
    log.connected("/", "sid1", "pid1")
    seen = offset_of(log.stamp("/", None, [], event("m", 1)))
    log.gone("/", "sid1")
    log.keep("/", "sid1", ["sid1"])  # too late: nothing to keep
    assert log.restore("/", "pid1", seen) is Outcome.UNKNOWN
    assert log.sessions == 0


def test_sessions_and_packets_expire_with_the_window() -> None:
    log, clock = log_with(window=10)
    log.connected("/", "a", "pa")
    log.connected("/", "b", "pb")
    seen = offset_of(log.stamp("/", None, [], event("m", 1)))
    log.keep("/", "a", ["a"])
    clock.now += 2
    log.stamp("/", None, [], event("m", 2))  # b is still there
    clock.now += 6
    log.keep("/", "b", ["b"])  # b never got packet 2 through
    clock.now += 5  # a's session is 13 s old, b's 5 s; packet 2 is 11 s old
    assert log.restore("/", "pa", seen) is Outcome.UNKNOWN  # expired and swept
    assert log.restore("/", "pb", seen) is Outcome.EXPIRED  # what it missed is gone
    assert log.log_packets == 0 and log.sessions == 0


def test_nothing_missed_is_a_recovery_even_after_the_packets_expired() -> None:
    """Node wants the client's last offset still in its log; here only what came after it
    matters, so a quiet socket recovers too."""
    log, clock = log_with(window=10)
    log.connected("/", "a", "pa")
    seen = offset_of(log.stamp("/", None, [], event("m", 1)))
    clock.now += 8
    log.keep("/", "a", ["a"])
    clock.now += 5  # packet 1 is gone, the session is 5 s old
    result = log.restore("/", "pa", seen)
    assert isinstance(result, Restoration) and result.missed == []


def test_the_byte_cap_pushes_out_the_oldest_and_says_overflowed() -> None:
    log, _ = log_with(cap=1_000)
    log.connected("/", "a", "pa")
    seen = offset_of(log.stamp("/", None, [], event("m", "x" * 100)))
    log.keep("/", "a", ["a"])
    for n in range(20):
        log.stamp("/", None, [], event("m", "y" * 100, n))
    assert log.log_bytes <= 1_000
    assert log.restore("/", "pa", seen) is Outcome.OVERFLOWED


def test_a_replay_too_big_for_one_frame_is_refused() -> None:
    log, _ = log_with(cap=4 * MAX_REPLAY_BYTES)
    log.connected("/", "a", "pa")
    seen = offset_of(log.stamp("/", None, [], event("m", 0)))
    log.keep("/", "a", ["a"])
    chunk = "z" * (1024 * 1024)
    for n in range(MAX_REPLAY_BYTES // len(chunk) + 1):
        log.stamp("/", None, [], event("m", chunk, n))
    assert log.restore("/", "pa", seen) is Outcome.OVERFLOWED


@pytest.mark.parametrize("offset", ["other.1", "h1.zz", "h1.", "h1.ffffffff", "", "h1.-1"])
def test_an_offset_this_host_never_gave_is_unknown(offset: str) -> None:
    log, _ = log_with()
    log.connected("/", "a", "pa")
    log.stamp("/", None, [], event("m", 1))
    log.keep("/", "a", ["a"])
    assert log.restore("/", "pa", offset) is Outcome.UNKNOWN


def test_a_session_is_only_restored_in_its_own_namespace() -> None:
    log, _ = log_with()
    log.connected("/chat", "a", "pa")
    seen = offset_of(log.stamp("/chat", None, [], event("m", 1)))
    log.keep("/chat", "a", ["a"])
    assert log.restore("/", "pa", seen) is Outcome.UNKNOWN


def test_packets_are_logged_only_for_someone() -> None:
    """The fanout asks ``wanted`` when no socket here receives a packet: only a kept
    session whose rooms meet the packet's makes it worth logging."""
    log, _ = log_with()
    assert not log.wanted("/", None)
    log.connected("/", "a", "pa")
    log.keep("/", "a", ["a", "room"])
    assert log.wanted("/", None)
    assert log.wanted("/", ["room", "x"])
    assert not log.wanted("/", ["x"])
    assert not log.wanted("/chat", None)


def test_a_handover_answers_up_to_the_request_and_leaves_out_own_unechoed_broadcasts() -> None:
    """Host A answers at the request's place in Redis's order: its own broadcasts that Redis
    has not given back yet come after that place, and host B replays those itself."""
    a, _ = log_with()
    a.connected("/", "s", "p")
    seen = offset_of(a.stamp("/", None, [], event("m", 0)))
    a.keep("/", "s", ["s", "room"])
    a.stamp("/", ["room"], [], event("redis", 1))  # read from Redis
    first_own = a.stamp("/", ["room"], [], event("own", 2), own=True)
    a.published(a.last_seq, b"body-2")
    a.stamp("/", ["room"], [], event("own", 3), own=True)
    a.published(a.last_seq, b"body-3")
    a.echoed(b"body-2")  # 2 came back before the request, 3 did not
    result = a.restore("/", "p", seen, here=False)
    assert isinstance(result, Restoration)
    assert [offset_of(p) for p in result.missed][1] == offset_of(first_own)
    assert [json.loads(str(p[0])[1:])[1] for p in result.missed] == [1, 2]
    assert not a.is_live("/", "s")  # it lives on the other host now
    assert a.outcomes == {}  # counted where the client came back


def test_an_own_broadcast_never_published_does_not_hold_back_the_next() -> None:
    log, _ = log_with()
    log.stamp("/", None, [], event("own", 1), own=True)
    log.published(log.last_seq, b"dropped in an outage")
    log.stamp("/", None, [], event("own", 2), own=True)
    log.published(log.last_seq, b"body-2")
    log.echoed(b"body-2")
    log.connected("/", "s", "p")
    log.keep("/", "s", ["s"])
    result = log.restore("/", "p", f"{log.tag}.0", here=False)
    assert isinstance(result, Restoration) and len(result.missed) == 2


def test_the_host_taking_a_client_over_replays_what_came_after_the_request() -> None:
    """Host B: its own broadcasts from the moment it published the request, and what it
    read from Redis from the moment the request came back."""
    b, _ = log_with()
    b.open_capture("/")
    assert b.wanted("/", ["any"])  # every packet of the namespace is logged meanwhile
    own_from = b.mark()
    b.stamp("/", ["room"], [], event("own-before-echo", 1), own=True)
    b.stamp("/", ["room"], [], event("redis-before-echo", 2))  # A has this one
    redis_from = b.mark()
    b.stamp("/", ["room"], [], event("redis-after-echo", 3))
    b.stamp("/", ["other"], [], event("not-its-room", 4))
    b.stamp("/", ["room"], [], event("own-after-echo", 5), own=True)
    session = Session("/", "s", "p", ("s", "room"), None, 0.0)
    captured = b.captured(session, own_from, redis_from)
    assert captured is not None
    assert [json.loads(str(p[0])[1:])[1] for p in captured] == [1, 3, 5]
    b.close_capture("/")
    assert not b.wanted("/", ["any"])
    b.adopt(session)
    assert b.is_live("/", "s")


def test_handover_messages_from_redis_are_checked_field_by_field() -> None:
    request = handover_wire.read_request(
        adapter_wire.unpack(handover_wire.encode_request("uid", "r1", "pid", "h1.5"))
    )
    assert request == handover_wire.HandoverRequest("uid", "r1", "pid", "h1.5")
    assert handover_wire.read_request({"type": handover_wire.HANDOVER, "uid": 1}) is None
    assert handover_wire.read_request(["not", "a", "map"]) is None
    session = Session("/", "s", "p", ("s", "room", 7), b"\x80", 0.0)
    found = Restoration(session, [['2["m",1,"h1.2"]'], ['51-["b",{}]', b"\x00"]])
    body = handover_wire.encode_answer("r1", Outcome.RECOVERED, found)
    answer = handover_wire.read_answer("/", adapter_wire.unpack(body))
    assert answer is not None and answer.session is not None
    assert (answer.outcome, answer.session.rooms, answer.missed) == (
        Outcome.RECOVERED,
        ("s", "room", 7),
        found.missed,
    )
    none = handover_wire.read_answer(
        "/", adapter_wire.unpack(handover_wire.encode_answer("r", None, None))
    )
    assert none == handover_wire.HandoverAnswer(None)
    bad = {"type": handover_wire.HANDOVER, "outcome": "recovered", "sid": "s", "pid": "p",
           "rooms": [[1]], "data": None, "missed": []}  # fmt: skip
    assert handover_wire.read_answer("/", bad) is None
    assert handover_wire.read_answer("/", {**bad, "outcome": "nonsense"}) is None
