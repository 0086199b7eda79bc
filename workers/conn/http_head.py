"""A request's head, parsed by httptools (llhttp, as Node's own HTTP server), and what a
websocket handshake answer is.

Why httptools: it refuses what RFC 9112 refuses (bad characters, bare CRs, an oversized or
malformed line) at C speed; a head it refuses is not ours and goes to aiohttp, which answers
it as it always did. Measured on a 600-byte websocket handshake: 6.8 us with httptools, 3.5 us
with a hand split in Python, which validates nothing. The parser lives only while the head is
read; an idle connection keeps none of it.

Pure: no I/O.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import httptools

MAX_HEAD = 16 * 1024  # bytes: a longer head is not ours (aiohttp answers it)
TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # a header name (RFC 9110 section 5.1)
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class _Collect:
    """httptools' callbacks, collecting the URL and the headers."""

    __slots__ = ("url", "headers")

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))


@dataclass(slots=True)
class Head:
    """A request head: its method, path, query and headers (names lower-case; a repeated
    header's values joined by ``,``), and its raw bytes."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    raw: bytes
    keep_alive: bool = True  # HTTP/1.1 without ``Connection: close``

    def query_fields(self) -> dict[str, list[str]]:
        """The query's fields, as ``urllib.parse.parse_qs`` reads them (blank values left
        out); split by hand when nothing in it is escaped, which is every Engine.IO query
        (``parse_qs`` was 8% of a worker's CPU serving long-polling)."""
        query = self.query
        if "%" in query or "+" in query:
            return parse_qs(query)
        fields: dict[str, list[str]] = {}
        for pair in query.split("&"):
            name, _, value = pair.partition("=")
            if value:
                fields.setdefault(name, []).append(value)
        return fields


def head_end(buffer: bytes | bytearray) -> int:
    """Where the head ends in ``buffer`` (after its blank line), or -1 while incomplete."""
    end = buffer.find(b"\r\n\r\n")
    return -1 if end < 0 else end + 4


def parse(raw: bytes) -> Head | None:
    """``raw`` (a whole head, blank line included) parsed; None if httptools refuses it."""
    collect = _Collect()
    parser = httptools.HttpRequestParser(collect)
    try:
        parser.feed_data(raw)
    except httptools.HttpParserUpgrade:
        pass  # the head is complete and asks for an upgrade: what a websocket does
    except httptools.HttpParserError:
        return None
    try:
        url = httptools.parse_url(collect.url)
        version = parser.get_http_version()
        method = parser.get_method().decode("ascii")
        path = url.path.decode("latin-1")
        query = (url.query or b"").decode("latin-1")
    except (httptools.HttpParserInvalidURLError, UnicodeDecodeError, AttributeError):
        return None
    headers: dict[str, str] = {}
    for name, value in collect.headers:
        if not TOKEN.fullmatch(name):  # older llhttp lets a space or a colon through
            return None
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]},{text}" if key in headers else text
    tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    keep_alive = "keep-alive" in tokens if version == "1.0" else "close" not in tokens
    return Head(method, path, query, headers, raw, keep_alive)


def body_length(head: Head) -> int | None:
    """The length of the body that follows ``head``: its ``Content-Length`` (0 if none);
    None if it is chunked or the length is not a plain number."""
    if "transfer-encoding" in head.headers:
        return None
    value = head.headers.get("content-length")
    if value is None:
        return 0
    return int(value) if value.isdigit() and len(value) < 16 else None


def header_tokens(head: Head, name: str) -> set[str]:
    """The comma-separated tokens of header ``name``, lower-case."""
    return {token.strip().lower() for token in head.headers.get(name, "").split(",")}


def accept_key(key: str) -> str:
    """``Sec-WebSocket-Accept`` for a client's ``Sec-WebSocket-Key`` (RFC 6455 section 4.2.2)."""
    return base64.b64encode(hashlib.sha1(key.encode("latin-1") + WS_GUID).digest()).decode()


def valid_key(key: str) -> bool:
    """A ``Sec-WebSocket-Key`` is 16 random bytes in base64."""
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except ValueError:
        return False


def switching(key: str, extensions: str | None) -> bytes:
    """The ``101 Switching Protocols`` answer to a websocket handshake."""
    lines = [
        "HTTP/1.1 101 Switching Protocols",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Accept: {accept_key(key)}",
    ]
    if extensions:
        lines.append(f"Sec-WebSocket-Extensions: {extensions}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def answer(status: str, headers: list[tuple[str, str]], body: bytes, close: bool) -> bytes:
    """An HTTP/1.1 answer with ``body``; ``close``: the connection ends after it."""
    lines = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}"]
    lines.extend(f"{name}: {value}" for name, value in headers)
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def sid_cookie(option: str | dict[str, Any], sid: str) -> str:
    """The ``Set-Cookie`` value engine.io's ``cookie`` option gives a new long-polling session
    (a name, or a dict of attributes with ``name``; a callable value is called, ``True`` is
    the bare attribute), as python-engineio writes it."""
    if not isinstance(option, dict):
        option = {"name": option, "path": "/", "SameSite": "Lax"}
    parts = [f"{option.get('name', 'io')}={sid}"]
    for attribute, value in option.items():
        if attribute == "name":
            continue
        if callable(value):
            value = value()
        parts.append(attribute if value is True else f"{attribute}={value}")
    return "; ".join(parts)


def refusal(status: str, body: bytes, content_type: str = "application/json") -> bytes:
    """An HTTP answer that ends the connection (an engine.io refusal: 400, 401, 503)."""
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body
