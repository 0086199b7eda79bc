"""The first request line of a connection, read without consuming it: which session it names.

Pure: bytes in (what ``recv(MSG_PEEK)`` saw so far), a decision out. Only the request line is
needed: engine.io carries its session id in the query string (``?EIO=4&transport=polling&
sid=…``) of every request of a session, the websocket upgrade included. Anything else (a
line that is not HTTP, a request without a sid, a line longer than the peek) is a new
session as far as routing goes: the worker it reaches answers it as it would any request.

socket.io 0.9 clients (protocol 1, ``--allow-v09``) carry their session id in the PATH
instead: ``/socket.io/1/<transport>/<sid>[/]``, and ``/socket.io/1//<sid>/?disconnect=1`` for
the synchronous disconnect of a page being unloaded. That path shape is read first: an
engine.io request never has it, while a 0.9 client appends the application's own ``query``
(which may well hold a ``sid=`` of its own) to every transport URL.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs


@dataclass(frozen=True, slots=True)
class Incomplete:
    """The request line has not fully arrived yet: peek again later."""


@dataclass(frozen=True, slots=True)
class FirstRequest:
    """The request line is here; ``sid`` is the engine.io session it names, if any."""

    sid: str | None


INCOMPLETE = Incomplete()
NEW_SESSION = FirstRequest(None)


def first_request(peeked: bytes, limit: int) -> Incomplete | FirstRequest:
    """Decide from the first ``peeked`` bytes of a connection; ``limit`` is how many bytes
    the peek may return at most (a line that fills them is decided on what is there)."""
    end = peeked.find(b"\n")
    if end < 0:
        return INCOMPLETE if len(peeked) < limit else NEW_SESSION
    parts = peeked[:end].rstrip(b"\r").split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
        return NEW_SESSION
    path, question, query = parts[1].partition(b"?")
    v09 = _v09_session(path)
    if v09 is not NEW_SESSION:
        return v09
    if question:
        try:
            values = parse_qs(query.decode("ascii"), max_num_fields=64).get("sid")
        except (UnicodeDecodeError, ValueError):
            return NEW_SESSION
        if values:
            return FirstRequest(values[0])
    return NEW_SESSION


V09_TRANSPORTS = (b"websocket", b"xhr-polling", b"jsonp-polling", b"flashsocket", b"htmlfile", b"")


def _v09_session(path: bytes) -> FirstRequest:
    """The sid in a protocol 1 path (``…/1/<transport>/<sid>``), if it is one."""
    segments = path.rstrip(b"/").split(b"/")
    if len(segments) < 4 or segments[-3] != b"1" or segments[-2] not in V09_TRANSPORTS:
        return NEW_SESSION
    sid = segments[-1]
    if not sid or not sid.isascii():
        return NEW_SESSION
    return FirstRequest(sid.decode("ascii"))
