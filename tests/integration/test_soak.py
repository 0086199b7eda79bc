"""The chaos soak (``bench/soak.py``): its judge on scripted histories, and a short run.

The run is the soak itself as a subprocess (real Redis, real masters, real clients, every
fault kind), judged by its own report: it must pass, with every fault injected. A fault every
1-2 s (the default is 20-40 s) puts a whole round of every kind in about 22 s; the soak keeps
the load going at least 10 s after the last fault (``AFTERMATH``), however long the round.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from bench.soak_faults import KINDS
from bench.soak_ledger import EVERYONE, OUTSIDE, Ledger, Session, Stream
from tests.cluster import REPO

R0 = 0


def sent(stream: Stream, room: int, at: float) -> int:
    n = stream.assign(room, at)
    stream.settle(n, True)
    return n


def got(ledger: Ledger, session: Session, stream: Stream, n: int) -> None:
    room = stream.room_of(n)
    name = None if room == EVERYONE else ledger.room_names[room]
    ledger.receive(session, {"s": stream.name, "n": n, "r": name})


def connected(ledger: Ledger, actor: str = "a") -> Session:
    session = ledger.new_session(actor, "A", "websocket")
    session.connected = ledger.snapshot()
    return session


def test_settled_changing_and_out_of_a_room_are_judged_apart() -> None:
    ledger = Ledger(["r0"])
    p = ledger.open_stream("p", "ch")
    s = connected(ledger)
    got(ledger, s, p, sent(p, EVERYONE, 1.0))
    got(ledger, s, p, sent(p, EVERYONE, 1.1))
    join = ledger.request(s, R0, joined=True)  # the master routed 1..2 before the join
    got(ledger, s, p, sent(p, R0, 1.2))  # sent while joining: not judged
    ledger.acknowledge(join)
    twice = sent(p, R0, 1.3)
    got(ledger, s, p, twice)
    got(ledger, s, p, twice)
    sent(p, R0, 1.4)  # settled in, never arrives, no fault: lost outside
    got(ledger, s, p, sent(p, EVERYONE, 1.5))
    leave = ledger.request(s, R0, joined=False)
    ledger.acknowledge(leave)
    got(ledger, s, p, sent(p, R0, 1.6))  # after the leave's ack, before a later beacon
    got(ledger, s, p, sent(p, EVERYONE, 1.7))

    tally = ledger.verdict()["ch"]

    assert (tally.expected, tally.delivered) == (6, 5)  # 4 beacons, 2 settled room messages
    assert tally.lost == {OUTSIDE: 1}
    assert (tally.duplicates, tally.misdelivered, tally.unjudged) == (1, 1, 1)
    assert len(ledger.examples["lost"]) == 1


def test_a_loss_is_the_faults_only_if_undelivered_when_it_began() -> None:
    ledger = Ledger(["r0"])
    p = ledger.open_stream("p", "ch")
    s = connected(ledger)
    join = ledger.request(s, R0, joined=True)
    ledger.acknowledge(join)
    sent(p, R0, 1.0)  # lost before the fault, and the socket got a later one: not the fault's
    got(ledger, s, p, sent(p, EVERYONE, 1.1))
    window = ledger.open_window("redis_kill", 2.0)
    sent(p, R0, 1.9)  # undelivered when the fault began: the fault's
    sent(p, R0, 2.5)  # inside the window: the fault's
    window.end = 3.0
    sent(p, R0, 3.5)  # after the window: outside
    got(ledger, s, p, sent(p, EVERYONE, 4.0))

    assert ledger.verdict()["ch"].lost == {OUTSIDE: 2, "redis_kill": 2}


def test_a_dropped_socket_counts_what_its_actor_misses_until_back_in_the_room() -> None:
    ledger = Ledger(["r0"])
    p = ledger.open_stream("p", "ch")
    old = connected(ledger)
    join = ledger.request(old, R0, joined=True)
    ledger.acknowledge(join)
    got(ledger, old, p, sent(p, R0, 1.0))
    window = ledger.open_window("worker_kill", 2.0)
    gaps = ledger.end_session(old, 2.1, dropped=True)
    for at in (2.2, 2.3, 2.4):
        sent(p, R0, at)
    sent(p, EVERYONE, 2.45)
    new = connected(ledger)
    assert new.connected is not None
    ledger.close_gaps(gaps, EVERYONE, new.connected)
    rejoin = ledger.request(new, R0, joined=True)
    ledger.acknowledge(rejoin)
    assert rejoin.acked is not None
    ledger.close_gaps(gaps, R0, rejoin.acked)
    got(ledger, new, p, sent(p, R0, 2.6))
    window.end = 3.0

    tally = ledger.verdict()["ch"]

    assert tally.missed_disconnected == {"worker_kill": 4}  # 3 room messages and a beacon
    assert tally.lost == {}


def test_a_socket_missing_beacons_is_a_stall() -> None:
    ledger = Ledger(["r0"])
    p = ledger.open_stream("p", "ch")
    s = connected(ledger)
    got(ledger, s, p, sent(p, EVERYONE, 1.0))
    sent(p, EVERYONE, 2.0)
    ledger.check_stalls(s, now=5.0, after=10.0)
    assert ledger.stalls == []
    ledger.check_stalls(s, now=12.5, after=10.0)
    ledger.check_stalls(s, now=13.0, after=10.0)  # the same stall is recorded once
    ledger.verdict()
    assert [(x.n, x.cause) for x in ledger.stalls] == [(2, OUTSIDE)]


def test_an_attempt_is_the_faults_if_a_window_opened_before_it_failed() -> None:
    ledger = Ledger(["r0"])
    window = ledger.open_window("worker_kill", 10.0)
    window.end = 13.0
    ledger.event("connect failed", 9.998, "a", until=10.2)  # tried just before the kill
    ledger.event("connect failed", 9.0, "b", until=9.5)  # over before it
    ledger.event("disconnected", 9.999, "c")  # a moment, not an attempt
    ledger.event("call failed", 12.0, "d", until=14.0)
    ledger.verdict()
    assert [(e.actor, e.cause) for e in ledger.events] == [
        ("a", "worker_kill"),
        ("b", OUTSIDE),
        ("c", OUTSIDE),
        ("d", "worker_kill"),
    ]


@pytest.mark.timeout(240)
def test_a_short_soak_with_a_round_of_every_fault_passes(tmp_path: Any) -> None:
    command = [
        sys.executable, "bench/soak.py", "--minutes", "0.6", "--store", "--seed", "11",
        "--rate", "100", "--clients", "12", "--fault-interval", "1,2", "--sample-every", "1",
        "--out", str(tmp_path),
    ]  # fmt: skip
    run = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=200)
    report = json.loads((tmp_path / "soak.json").read_text())
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    assert report["ok"]
    assert {kind: report["faults"][kind]["injected"] >= 1 for kind in KINDS} == dict.fromkeys(
        KINDS, True
    )
    messages = report["messages"]
    assert messages["ch"]["delivered"] > 0 and messages["emit"]["delivered"] > 0
    assert messages["ch"]["duplicates"] == messages["emit"]["duplicates"] == 0
