"""The PROXY protocol header (HAProxy's, versions 1 and 2) before a connection's first request.

Pure: the peeked bytes in, a decision out. The master reads it from a trusted balancer
(``--proxy-protocol``, ``--forwarded-allow-ips``), consumes exactly its bytes, and passes the
client's address to the worker with the connection. Spec:
https://www.haproxy.org/download/2.8/doc/proxy-protocol.txt
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

V1_PREFIX = b"PROXY "
V1_MAX = 107  # the longest v1 line, CRLF included
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED = 16  # signature, version/command, family/protocol, length


@dataclass(frozen=True, slots=True)
class NeedMore:
    """The header has not fully arrived."""


@dataclass(frozen=True, slots=True)
class Invalid:
    """Not a PROXY header (a trusted peer must send one): ``reason`` says what is wrong."""

    reason: str


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """A whole header of ``length`` bytes; ``source`` is the client's (host, port), or None
    when the balancer speaks for itself (v2 LOCAL, v1 UNKNOWN, a non-IP family)."""

    length: int
    source: tuple[str, int] | None


NEED_MORE = NeedMore()


def parse(data: bytes) -> NeedMore | Invalid | ProxyHeader:
    """Decide on the first bytes of a connection."""
    if data.startswith(V2_SIGNATURE):
        return _v2(data)
    if data.startswith(V1_PREFIX):
        return _v1(data)
    if V2_SIGNATURE.startswith(data) or V1_PREFIX.startswith(data):
        return NEED_MORE
    return Invalid("no PROXY header")


def _v1(data: bytes) -> NeedMore | Invalid | ProxyHeader:
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        return NEED_MORE if len(data) < V1_MAX else Invalid("a v1 line longer than 107 bytes")
    fields = data[:end].split(b" ")
    length = end + 2
    if fields[1:2] == [b"UNKNOWN"]:
        return ProxyHeader(length, None)
    if len(fields) != 6 or fields[1] not in (b"TCP4", b"TCP6"):
        return Invalid("a malformed v1 line")
    try:
        source = ipaddress.ip_address(fields[2].decode("ascii"))
        ipaddress.ip_address(fields[3].decode("ascii"))
        port = int(fields[4])
        if not (0 <= port <= 65535 and 0 <= int(fields[5]) <= 65535):
            raise ValueError("port")
    except (UnicodeDecodeError, ValueError):
        return Invalid("a malformed v1 line")
    if (source.version == 4) != (fields[1] == b"TCP4"):
        return Invalid("a v1 address of the wrong family")
    return ProxyHeader(length, (str(source), port))


def _v2(data: bytes) -> NeedMore | Invalid | ProxyHeader:
    if len(data) < V2_FIXED:
        return NEED_MORE
    version, command = data[12] >> 4, data[12] & 0x0F
    if version != 2 or command > 1:
        return Invalid("a v2 header of an unknown version or command")
    length = V2_FIXED + int.from_bytes(data[14:16], "big")
    if len(data) < length:
        return NEED_MORE
    family, body = data[13], data[V2_FIXED:length]
    if command == 0:  # LOCAL: the balancer's own connection (a health check)
        return ProxyHeader(length, None)
    if family == 0x11 and len(body) >= 12:  # TCP over IPv4
        host = str(ipaddress.IPv4Address(body[0:4]))
        return ProxyHeader(length, (host, int.from_bytes(body[8:10], "big")))
    if family == 0x21 and len(body) >= 36:  # TCP over IPv6
        host = str(ipaddress.IPv6Address(body[0:16]))
        return ProxyHeader(length, (host, int.from_bytes(body[32:34], "big")))
    if family in (0x11, 0x21):
        return Invalid("a v2 address block too short")
    return ProxyHeader(length, None)  # UNSPEC, UDP or Unix: no client address to give
