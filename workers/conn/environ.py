"""The environ python-socketio keeps for each connection, built from the head when read.

Why lazy: python-socketio keeps every connection's environ for the connection's life, and a
full WSGI-style dict of a browser's handshake is 1.4-2.8 KiB. Here it is the raw head (a few
hundred bytes) and the peer; each read parses it again (a few microseconds: handlers read it
at connect, rarely after). What it holds is what engine.io's aiohttp driver gives, keys and
values alike, with the real client address, plus:

- ``aiohttp.request``: a :class:`HandshakeRequest`, which answers what handlers read of
  aiohttp's request (``remote``, ``headers``, ``query``, ``path``, ``cookies``, ``app``,
  ``url``...): the connection is not aiohttp's, so there is no aiohttp request to give;
- ``asgi.scope`` for an ASGI app: the scope uvicorn would have given the request.

Writes (a handler may set keys) go to a small dict of their own.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping, MutableMapping
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qsl

from multidict import CIMultiDict, CIMultiDictProxy, MultiDict, MultiDictProxy
from yarl import URL

from sio_cluster.workers.conn import http_head

ASGI_VERSION = {"version": "3.0", "spec_version": "2.3"}


class Shared:
    """What every connection's environ of one worker refers to: the aiohttp application (a
    request's ``app``) and an ASGI app's lifespan state (its scope's ``state``)."""

    __slots__ = ("app", "asgi_state")

    def __init__(self, app: Any, asgi_state: dict[str, Any] | None) -> None:
        self.app = app
        self.asgi_state = asgi_state


class HandshakeRequest(Mapping[str, Any]):
    """What a handler reads of the handshake request, by aiohttp's ``Request`` names; as a
    mapping, the request's own storage (empty: no middleware ran for it)."""

    def __init__(self, head: http_head.Head, remote: str, app: Any) -> None:
        self.method = head.method
        self.path = head.path
        self.query_string = head.query
        self.path_qs = f"{head.path}?{head.query}" if head.query else head.path
        self.remote = remote
        self.scheme = "http"  # as aiohttp's, which believes no X-Forwarded-Proto by itself
        self.secure = False
        self.host = head.headers.get("host", "")
        self.version = (1, 1)
        self.transport = None  # the connection is the worker's own, not aiohttp's
        self.app = app
        self.match_info: dict[str, str] = {}
        self.rel_url = URL(self.path_qs)
        self.url = URL.build(scheme="http", authority=self.host or "localhost").join(self.rel_url)
        raw = CIMultiDict[str]()
        for name, value in _header_pairs(head.raw):
            raw.add(name, value)
        self.headers = CIMultiDictProxy(raw)
        self.query = MultiDictProxy(MultiDict(parse_qsl(head.query, keep_blank_values=True)))

    def __getitem__(self, key: str) -> Any:
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0

    @property
    def cookies(self) -> dict[str, str]:
        cookie = SimpleCookie(self.headers.get("Cookie", ""))
        return {name: morsel.value for name, morsel in cookie.items()}


def _header_pairs(raw: bytes) -> Iterator[tuple[str, str]]:
    """Each header of a head parsed already (so well formed), in order, names as sent."""
    for line in raw.split(b"\r\n")[1:]:
        if line:
            name, _, value = line.partition(b":")
            yield name.decode("latin-1"), value.strip().decode("latin-1")


class HandshakeEnviron(MutableMapping[str, Any]):
    """A connection's environ (see the module docstring)."""

    __slots__ = ("_raw", "_remote", "_peer_port", "_sockname", "_shared", "_written")

    def __init__(
        self,
        raw: bytes,
        remote: str,
        peer_port: int,
        sockname: tuple[str, int] | None,
        shared: Shared,
    ) -> None:
        self._raw = raw
        self._remote = remote
        self._peer_port = peer_port
        self._sockname = sockname
        self._shared = shared
        self._written: dict[str, Any] | None = None

    def head(self) -> http_head.Head:
        head = http_head.parse(self._raw)
        assert head is not None  # parsed once already, when it arrived
        return head

    def build(self) -> dict[str, Any]:
        """The whole environ, as a dict (what each read is answered from)."""
        head = self.head()
        environ: dict[str, Any] = {
            "wsgi.errors": sys.stderr,
            "wsgi.version": (1, 0),
            "wsgi.async": True,
            "wsgi.multithread": False,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
            "SERVER_SOFTWARE": "sio-cluster",
            "REQUEST_METHOD": head.method,
            "QUERY_STRING": head.query,
            "RAW_URI": f"{head.path}?{head.query}" if head.query else head.path,
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": self._remote,
            "REMOTE_PORT": str(self._peer_port),
            "SERVER_NAME": self._sockname[0] if self._sockname else "",
            "SERVER_PORT": str(self._sockname[1]) if self._sockname else "0",
            "PATH_INFO": head.path,
            "SCRIPT_NAME": "",
        }
        for name, value in _header_pairs(self._raw):
            upper = name.upper()
            if upper == "CONTENT-TYPE":
                environ["CONTENT_TYPE"] = value
                continue
            if upper == "CONTENT-LENGTH":
                environ["CONTENT_LENGTH"] = value
                continue
            key = "HTTP_" + upper.replace("-", "_")
            environ[key] = f"{environ[key]},{value}" if key in environ else value
        environ["wsgi.url_scheme"] = environ.get("HTTP_X_FORWARDED_PROTO", "http")
        environ["aiohttp.request"] = HandshakeRequest(head, self._remote, self._shared.app)
        if self._shared.asgi_state is not None:
            environ["asgi.scope"] = self._scope(head, self._shared.asgi_state)
        if self._written:
            environ.update(self._written)
        return environ

    def _scope(self, head: http_head.Head, state: dict[str, Any]) -> dict[str, Any]:
        """The scope uvicorn would give the request: a websocket's, or (a long-polling
        handshake) an HTTP request's."""
        websocket = "websocket" in http_head.header_tokens(head, "upgrade")
        scope: dict[str, Any] = {
            "type": "websocket" if websocket else "http",
            "asgi": dict(ASGI_VERSION),
            "http_version": "1.1",
            "scheme": "ws" if websocket else "http",
            "path": head.path,
            "raw_path": head.path.encode("latin-1"),
            "query_string": head.query.encode("latin-1"),
            "root_path": "",
            "headers": [
                (name.lower().encode("latin-1"), value.encode("latin-1"))
                for name, value in _header_pairs(self._raw)
            ],
            "client": (self._remote, self._peer_port),
            "server": self._sockname,
            "state": dict(state),
        }
        if websocket:
            offered = head.headers.get("sec-websocket-protocol", "")
            scope["subprotocols"] = [p.strip() for p in offered.split(",") if p.strip()]
        else:
            scope["method"] = head.method
        return scope

    def __getitem__(self, key: str) -> Any:
        if self._written is not None and key in self._written:
            return self._written[key]
        return self.build()[key]

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def __setitem__(self, key: str, value: Any) -> None:
        if self._written is None:
            self._written = {}
        self._written[key] = value

    def __delitem__(self, key: str) -> None:
        """Only what was written can be deleted: the request's own keys stay."""
        if self._written is None or key not in self._written:
            raise KeyError(key)
        del self._written[key]

    def copy(self) -> dict[str, Any]:
        return self.build()

    def __iter__(self) -> Iterator[str]:
        return iter(self.build())

    def __len__(self) -> int:
        return len(self.build())

    def __repr__(self) -> str:
        return f"HandshakeEnviron({self.build()!r})"
