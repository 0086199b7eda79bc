"""The one-port acceptor's pure decisions: what a request line names, which worker takes it."""

from __future__ import annotations

import pytest

from sio_cluster.master.acceptor.balance import Balancer, Report
from sio_cluster.master.acceptor.request_line import (
    INCOMPLETE,
    NEW_SESSION,
    FirstRequest,
    first_request,
)
from sio_cluster.wire.handoff import key_of_sid, sid_prefix

LIMIT = 8192


@pytest.mark.parametrize(
    ("peeked", "expected"),
    [
        (b"GET /socket.io/?EIO=4&transport=polling&sid=3.abc HTTP/1.1\r\nHost: x\r\n", "3.abc"),
        (b"POST /socket.io/?EIO=4&transport=polling&sid=3.abc HTTP/1.1\r\n", "3.abc"),
        (b"GET /socket.io/?sid=12.Zz-_&EIO=4&transport=websocket HTTP/1.1\n", "12.Zz-_"),
        (b"GET /socket.io/?EIO=4&transport=polling&sid=7.a%2Bb HTTP/1.1\r\n", "7.a+b"),
        (b"GET /socket.io/?EIO=4&sid=1.a&sid=2.b HTTP/1.1\r\n", "1.a"),  # the first, as engine.io
        # socket.io 0.9 (protocol 1): the sid is in the path
        (b"GET /socket.io/1/websocket/3.abc HTTP/1.1\r\n", "3.abc"),
        (b"GET /socket.io/1/xhr-polling/3.abc?t=1700000000000 HTTP/1.1\r\n", "3.abc"),
        (b"POST /socket.io/1/xhr-polling/3.abc?t=17&token=x HTTP/1.1\r\n", "3.abc"),
        (b"GET /socket.io/1//3.abc/?disconnect=1 HTTP/1.1\r\n", "3.abc"),
        (b"GET /socket.io/1/jsonp-polling/3.abc?t=1&i=0 HTTP/1.1\r\n", "3.abc"),
        (b"GET /app/socket.io/1/websocket/3.abc/ HTTP/1.1\r\n", "3.abc"),
        # the application's own query rides along on every 0.9 transport URL: the path decides
        (b"GET /socket.io/1/websocket/3.abc?sid=9.x HTTP/1.1\r\n", "3.abc"),
        (b"GET /socket.io/1/xhr-polling/AbC123?sid=usercookie&t=17 HTTP/1.1\r\n", "AbC123"),
        (b"POST /socket.io/1/xhr-polling/3.abc?t=17&sid=x HTTP/1.1\r\n", "3.abc"),
    ],
)
def test_a_request_of_a_session_names_its_sid(peeked: bytes, expected: str) -> None:
    assert first_request(peeked, LIMIT) == FirstRequest(expected)


@pytest.mark.parametrize(
    "peeked",
    [
        b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\n",  # a handshake
        b"GET /socket.io/?EIO=4&transport=polling&t=Nx HTTP/1.1\r\n",
        b"GET /healthz HTTP/1.1\r\n",
        b"GET /?sid= HTTP/1.1\r\n",  # empty: parse_qs drops it
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n",  # TLS, not HTTP
        b"GET /socket.io/?sid=1.a\r\n",  # no version: not an HTTP/1 request line
        b"GET /socket.io/?sid=\xff HTTP/1.1\r\n",  # not ASCII
        b"GET /socket.io/1/?t=1700000000000 HTTP/1.1\r\n",  # a 0.9 handshake
        b"GET /socket.io/1/ HTTP/1.1\r\n",
        b"GET /socket.io/1/bogus/3.abc HTTP/1.1\r\n",  # no such transport
        b"GET /socket.io/1/websocket/\xff HTTP/1.1\r\n",  # not ASCII
        b"GET /socket.io/2/websocket/3.abc HTTP/1.1\r\n",  # not protocol 1
        b"\r\n",
        b"A" * LIMIT,  # a line longer than the peek: decided on what is there
    ],
)
def test_anything_else_is_a_new_session(peeked: bytes) -> None:
    assert first_request(peeked, LIMIT) == NEW_SESSION


@pytest.mark.parametrize("peeked", [b"", b"G", b"GET /socket.io/?EIO=4&sid=3.a", b"A" * 100])
def test_a_line_not_yet_ended_waits(peeked: bytes) -> None:
    assert first_request(peeked, LIMIT) == INCOMPLETE


@pytest.mark.parametrize("key", [0, 1, 42, 999_999_999])
def test_a_sid_names_the_key_it_was_made_with(key: int) -> None:
    assert key_of_sid(sid_prefix(key) + "GZcWPtmEsNQaIwdXAAAA") == key


@pytest.mark.parametrize(
    "sid", ["GZcWPtmEsNQaIwdXAAAA", ".abc", "x.abc", "-1.abc", "1_000.a", "٣.abc", "1" * 10 + ".a"]
)
def test_a_sid_not_made_here_names_no_key(sid: str) -> None:
    assert key_of_sid(sid) is None


def test_a_session_goes_to_its_worker_whatever_the_loads() -> None:
    reports = {1: Report(), 2: Report(clients=500), 3: Report()}
    assert Balancer().target("2.abc", [1, 2, 3], reports) == 2


@pytest.mark.parametrize("sid", ["9.abc", "nonsense", None])
def test_a_session_of_no_serving_worker_goes_to_the_least_loaded(sid: str | None) -> None:
    reports = {1: Report(clients=5), 2: Report(clients=3), 3: Report(clients=4)}
    assert Balancer().target(sid, [1, 2, 3], reports) == 2


def test_no_serving_worker_means_wait() -> None:
    assert Balancer().target(None, [], {}) is None
    assert Balancer().target("1.abc", [], {}) is None


def test_a_burst_of_new_sessions_is_spread_before_anyone_reports() -> None:
    balancer = Balancer()
    chosen = [balancer.target(None, [4, 5, 6], {}) for _ in range(30)]
    assert {key: chosen.count(key) for key in (4, 5, 6)} == {4: 10, 5: 10, 6: 10}


def test_a_hand_off_counts_until_its_worker_reports_it_taken_however_long() -> None:
    balancer = Balancer()
    assert [balancer.target(None, [1, 2], {}) for _ in range(4)] == [1, 2, 1, 2]
    # worker 1 took its two and serves them; worker 2, lagging, has taken none of its two
    reports = {1: Report(clients=2, taken=2), 2: Report(clients=0, taken=0)}
    assert balancer.target(None, [1, 2], reports) == 1  # 2 + 0 against 0 + 2: a tie
    assert balancer.target(None, [1, 2], reports) == 2  # 2 + 1 against 0 + 2
    assert balancer.target(None, [1, 2], reports) == 1  # 2 + 1 against 0 + 3
    # worker 2 took its three; one of them was a client that left at once
    reports = {1: Report(clients=2, taken=2), 2: Report(clients=2, taken=3)}
    assert balancer.target(None, [1, 2], reports) == 2  # 2 + 2 against 2 + 0


def test_hand_offs_to_a_session_wait_until_taken_too() -> None:
    balancer = Balancer()
    for _ in range(5):
        assert balancer.target("1.abc", [1, 2], {}) == 1  # five long-polls of one session
    assert balancer.target(None, [1, 2], {1: Report(clients=1, taken=0)}) == 2
    reports = {1: Report(clients=1, taken=5), 2: Report(clients=3, taken=1)}
    assert balancer.target(None, [1, 2], reports) == 1  # 1 + 0 against 3 + 0


def test_after_a_storm_only_what_each_worker_serves_counts() -> None:
    """Every client dropped at once: 2,500 hand-offs taken by each worker, none served any
    more; new sessions alternate, whatever any routing table still lists."""
    balancer = Balancer()
    for key in (1, 2):
        for _ in range(2500):
            balancer.target(f"{key}.abc", [1, 2], {})
    reports = {1: Report(clients=0, taken=2500), 2: Report(clients=0, taken=2500)}
    chosen = [balancer.target(None, [1, 2], reports) for _ in range(20)]
    assert chosen.count(1) == 10 and chosen.count(2) == 10


def test_a_forgotten_worker_leaves_no_count() -> None:
    balancer = Balancer()
    for _ in range(3):
        balancer.target(None, [1], {})
    balancer.forget(1)
    assert balancer.target(None, [1, 2], {2: Report(clients=1, taken=0)}) == 1
