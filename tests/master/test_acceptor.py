"""The one-port acceptor's pure decisions: what a request line names, which worker takes it."""

from __future__ import annotations

import pytest

from sio_cluster.master.acceptor.balance import RECENT_SECONDS, Balancer
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
        (b"GET /socket.io/1/websocket/3.abc?sid=9.x HTTP/1.1\r\n", "9.x"),  # the query first
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
    balancer = Balancer()
    assert balancer.target("2.abc", [1, 2, 3], {1: 0, 2: 500, 3: 0}, 0.0) == 2


@pytest.mark.parametrize("sid", ["9.abc", "nonsense", None])
def test_a_session_of_no_serving_worker_goes_to_the_least_loaded(sid: str | None) -> None:
    balancer = Balancer()
    assert balancer.target(sid, [1, 2, 3], {1: 5, 2: 3, 3: 4}, 0.0) == 2


def test_no_serving_worker_means_wait() -> None:
    assert Balancer().target(None, [], {}, 0.0) is None
    assert Balancer().target("1.abc", [], {}, 0.0) is None


def test_a_burst_of_new_sessions_is_spread_before_the_table_knows() -> None:
    balancer = Balancer()
    chosen = [balancer.target(None, [4, 5, 6], {}, 0.0) for _ in range(30)]
    assert {key: chosen.count(key) for key in (4, 5, 6)} == {4: 10, 5: 10, 6: 10}


def test_recent_hand_offs_stop_counting_after_a_while() -> None:
    balancer = Balancer()
    assert balancer.target(None, [1, 2], {}, 0.0) == 1
    assert balancer.target(None, [1, 2], {2: 2}, 0.1) == 1  # 1 recent (and now 2) vs 2
    # later the table holds what was recent: only the table counts (2 vs 3, not 4 vs 3)
    assert balancer.target(None, [1, 2], {1: 2, 2: 3}, RECENT_SECONDS + 1) == 1


def test_a_forgotten_worker_leaves_no_count() -> None:
    balancer = Balancer()
    for _ in range(3):
        balancer.target(None, [1], {}, 0.0)
    balancer.forget(1)
    assert balancer.target(None, [1, 2], {2: 1}, 0.1) == 1
