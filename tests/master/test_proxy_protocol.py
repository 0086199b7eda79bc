"""The PROXY protocol header, the trusted peers, X-Forwarded-For, the hand-off message: pure."""

from __future__ import annotations

import pytest

from sio_cluster.common.forwarded import TrustedHosts, forwarded_client
from sio_cluster.master.acceptor.proxy_protocol import (
    NEED_MORE,
    V2_SIGNATURE,
    Invalid,
    ProxyHeader,
    parse,
)
from sio_cluster.wire.handoff import CONNECTION, connection_message, source_of

REQUEST = b"GET / HTTP/1.1\r\n"


def v2(command: int, family: int, body: bytes) -> bytes:
    return V2_SIGNATURE + bytes([0x20 | command, family]) + len(body).to_bytes(2, "big") + body


V2_TCP4 = v2(1, 0x11, bytes([203, 0, 113, 7, 10, 0, 0, 1]) + (51000).to_bytes(2, "big") + b"\0P")
V2_TCP6 = v2(1, 0x21, bytes(15) + b"\x01" + bytes(16) + (4242).to_bytes(2, "big") + b"\0P")


@pytest.mark.parametrize(
    ("header", "source"),
    [
        (b"PROXY TCP4 203.0.113.7 10.0.0.1 51000 80\r\n", ("203.0.113.7", 51000)),
        (b"PROXY TCP6 2001:db8::1 ::1 4242 443\r\n", ("2001:db8::1", 4242)),
        (b"PROXY UNKNOWN\r\n", None),
        (b"PROXY UNKNOWN 1.2.3.4 5.6.7.8 1 2\r\n", None),
        (V2_TCP4, ("203.0.113.7", 51000)),
        (V2_TCP6, ("::1", 4242)),
        (v2(0, 0x11, bytes(12)), None),  # LOCAL: the balancer's health check
        (v2(1, 0x00, b""), None),  # UNSPEC
        (v2(1, 0x31, bytes(216)), None),  # a Unix socket
        (v2(1, 0x11, bytes(12) + b"\x03\x00\x01x"), ("0.0.0.0", 0)),  # TLVs after: skipped
    ],
)
def test_a_whole_header_gives_its_length_and_the_client(
    header: bytes, source: tuple[str, int] | None
) -> None:
    assert parse(header + REQUEST) == ProxyHeader(len(header), source)


@pytest.mark.parametrize(
    "data",
    [b"", b"P", b"PROXY", b"PROXY TCP4 1.2.3.4", V2_SIGNATURE[:5], V2_SIGNATURE, V2_TCP4[:-1]],
)
def test_a_header_in_part_waits(data: bytes) -> None:
    assert parse(data) == NEED_MORE


@pytest.mark.parametrize(
    "data",
    [
        REQUEST,
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
        b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3.400 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 x 2\r\n",
        b"PROXY " + b"1" * 200,
        V2_SIGNATURE + bytes([0x11, 0x11, 0, 0]),  # version 1 in a v2 header
        V2_SIGNATURE + bytes([0x22, 0x11, 0, 0]),  # command 2
        v2(1, 0x11, bytes(4)),
    ],
)
def test_anything_else_is_refused(data: bytes) -> None:
    assert isinstance(parse(data), Invalid)


def test_trusted_hosts_as_uvicorn_reads_them() -> None:
    trusted = TrustedHosts("127.0.0.1, 10.0.0.0/8,::1")
    assert "127.0.0.1" in trusted and "10.2.3.4" in trusted and "::1" in trusted
    assert "127.0.0.2" not in trusted and "not-an-ip" not in trusted
    assert "203.0.113.7" in TrustedHosts("*")
    with pytest.raises(ValueError, match="not an address"):
        TrustedHosts("127.0.0.1,localhost")


@pytest.mark.parametrize(
    ("header", "client"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("198.51.100.1, 203.0.113.7", "203.0.113.7"),  # the rightmost untrusted
        ("203.0.113.7, 10.0.0.5", "203.0.113.7"),  # a trusted proxy skipped
        ("10.0.0.5, 10.0.0.6", "10.0.0.5"),  # all trusted: the leftmost
        ("", None),
    ],
)
def test_the_forwarded_client(header: str, client: str | None) -> None:
    assert forwarded_client(header, TrustedHosts("10.0.0.0/8")) == client


@pytest.mark.parametrize("source", [None, ("203.0.113.7", 51000), ("2001:db8::1", 1)])
def test_a_hand_off_message_carries_the_client(source: tuple[str, int] | None) -> None:
    message = connection_message(source)
    assert message.startswith(CONNECTION) and source_of(message) == source


@pytest.mark.parametrize("message", [b"c", b"c1.2.3.4", b"c1.2.3.4 x", b"c 80", b"c\xff 1"])
def test_a_message_without_a_readable_client_carries_none(message: bytes) -> None:
    assert source_of(message) is None
