"""Engine.IO 3 clients (socket.io-client 1.x and 2.x) on a worker, beside current ones.

Why: teams moving a legacy deployment cannot upgrade every client at once; Node's socket.io
serves both with ``allowEIO3``, python-engineio refuses ``EIO=3``. With ``--allow-eio3``,
python-engineio and python-socketio see an Engine.IO 4 client and this module translates at
the edges, per session (the rules are in :mod:`workers.eio3.codec`):

- each request's ``EIO=3`` is read as ``EIO=4``, and the request is marked (a context
  variable) with the session it belongs to; a handshake starts a new one;
- long-poll answers are encoded as v3 payloads (engine.io's ``_ok``) and POST bodies decoded
  from them (engine.io's ``handle_post_request``); websocket frames are translated by
  :class:`workers.transport.fast_ws.CoalescingWebSocket`, which asks :meth:`Eio3Clients.current`;
- heartbeat: a v3 client pings and gets its PONG at once. engine.io's own PING to it is not
  sent; it is answered on the client's behalf if the client pinged within the time Node
  allows (interval + timeout), so a silent client is closed by engine.io's ping timeout;
- Socket.IO: the client is put in ``/`` at its handshake, as socket.io 4 does; a namespace
  CONNECT's query string is its auth; CONNECT/DISCONNECT/CONNECT_ERROR are sent as 2.x reads
  them; a socket's id is its engine.io id (``/nsp#`` + it outside ``/``), which is what a
  2.x client believes its ``socket.id`` is.

The rest of the worker (rooms, routing, the master, ``--store``) sees ordinary sockets. A
broadcast is encoded once: text frames are the same for both protocols, and binary ones are
framed once more for v3 clients (see ``workers.delivery``).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from engineio import exceptions as eio_exceptions
from engineio import packet as eio_packet

from sio_cluster.workers.eio3 import codec as eio3_codec
from sio_cluster.workers.patches import engineio as eio_patches
from sio_cluster.workers.patches import socketio as sio_patches

log = logging.getLogger(__name__)

ENVIRON_KEY = "sio_cluster.eio3"  # a handshake's new session, until engine.io names it
_EIO3 = re.compile(r"(^|&)EIO=3(?=&|$)")


@dataclass(eq=False)
class Eio3Session:
    """What a v3 client's session needs beyond engine.io's: how it takes binary (said once,
    at its handshake) and when it last pinged."""

    supports_binary: bool
    sid: str = ""  # engine.io's sid, once it has one
    last_ping: float = field(default_factory=time.monotonic)


_request: ContextVar[Eio3Session | None] = ContextVar("eio3_request", default=None)


class Eio3Clients:
    """The v3 sessions of one python-socketio server, and the hooks that serve them."""

    def __init__(self, sio: Any, bad_client: Callable[[str], None]) -> None:
        self.sio = sio
        self.eio = sio.eio
        self.sessions: dict[str, Eio3Session] = {}
        self._bad_client = bad_client  # counts and logs a client being closed for garbage
        self._jsonp_refusals = 0

    def install(self) -> None:
        """Hook into engine.io and python-socketio; call after the worker's other hooks, so
        that these see each packet first."""
        eio = self.eio
        eio_patches.translate_requests(eio, self._read_request)
        eio_patches.encode_polls(eio, self._encode_poll)
        eio_patches.take_posts(eio, lambda _: _request.get() is not None, self._take_post)
        eio_patches.wrap_eio_event(eio, "connect", self._connect)
        eio_patches.wrap_eio_event(eio, "message", self._message)
        eio_patches.observe_eio_event(eio, "disconnect", self._forget)
        sio_patches.translate_sent_packets(self.sio, self._downgrade)

    @staticmethod
    def current() -> Eio3Session | None:
        """The v3 session of the request being served; None for a v4 client."""
        return _request.get()

    def sid_for(self, eio_sid: str, namespace: str) -> str | None:
        """The socket id Node's socket.io gives a v3 client in ``namespace``; None for v4."""
        if eio_sid not in self.sessions:
            return None
        return eio_sid if namespace == "/" else f"{namespace}#{eio_sid}"

    def pinged(self, session: Eio3Session) -> None:
        """A v3 client's PING arrived (its PONG is the caller's to send)."""
        session.last_ping = time.monotonic()

    def server_pinged(self, session: Eio3Session) -> None:
        """engine.io sent its PING to a v3 client, which does not answer those: answered here
        if the client pinged recently enough."""
        if time.monotonic() - session.last_ping > eio_patches.client_ping_deadline(self.eio):
            return  # engine.io's ping timeout closes the session
        eio_socket = self.eio.sockets.get(session.sid)
        if eio_socket is not None:
            eio_patches.pong_received(eio_socket)

    def _read_request(self, environ: dict[str, Any]) -> None:
        query = environ.get("QUERY_STRING", "")
        if "EIO=3" not in query:
            _request.set(None)
            return
        fields = parse_qs(query)
        if fields.get("EIO") != ["3"] or "j" in fields:
            if "j" in fields:  # engine.io refuses the EIO=3 it is then left with
                self._refuse_jsonp()
            _request.set(None)
            return
        sid = fields.get("sid", [None])[0]
        if sid is None:
            session: Eio3Session | None = Eio3Session(supports_binary="b64" not in fields)
            environ[ENVIRON_KEY] = session
        else:
            session = self.sessions.get(sid)  # None: engine.io answers "Invalid session"
        environ["QUERY_STRING"] = _EIO3.sub(r"\1EIO=4", query)
        _request.set(session)

    def _refuse_jsonp(self) -> None:
        self._jsonp_refusals += 1
        if self._jsonp_refusals == 1:
            log.warning("refused an Engine.IO 3 client polling by JSONP (not supported)")

    def _encode_poll(self, packets: list[eio_packet.Packet]) -> eio_patches.Answer | None:
        session = _request.get()
        if session is None:
            return None
        kept = []
        for pkt in packets:
            if pkt.packet_type == eio_packet.PING:
                self.server_pinged(session)
            else:
                kept.append(pkt)
        return eio3_codec.encode_payload(
            kept or [eio_packet.Packet(eio_packet.NOOP)], session.supports_binary
        )

    async def _take_post(self, eio_socket: Any, environ: Mapping[str, Any], body: bytes) -> None:
        session = _request.get()
        assert session is not None  # take_posts asks only for v3 requests
        try:
            packets = eio3_codec.decode_payload(body, environ.get("CONTENT_TYPE", ""))
        except eio3_codec.PayloadError as exc:
            self._bad_client(f"an undecodable Engine.IO 3 payload ({exc})")
            raise eio_exceptions.EngineIOError(str(exc)) from None  # closed, answered 400
        for pkt in packets:
            if pkt.packet_type == eio_packet.PING:
                self.pinged(session)
                await eio_socket.send(eio_packet.Packet(eio_packet.PONG, pkt.data))
            elif pkt.packet_type != eio_packet.PONG:  # a v3 client has no PING to answer
                await eio_socket.receive(pkt)

    async def _connect(
        self, handler: Callable[..., Awaitable[Any]], sid: str, environ: Any, *args: Any
    ) -> Any:
        session = environ.get(ENVIRON_KEY)
        if session is None:
            return await handler(sid, environ, *args)
        session.sid = sid
        self.sessions[sid] = session
        accepted = await handler(sid, environ, *args)
        if accepted is not None and accepted is not True:
            self.sessions.pop(sid, None)
            return accepted
        await self.eio.handlers["message"](sid, "0")  # in "/" at once, as socket.io 4 does
        return accepted

    async def _message(self, handler: Callable[..., Awaitable[Any]], sid: str, data: Any) -> Any:
        if isinstance(data, str) and data.startswith("0") and sid in self.sessions:
            data = eio3_codec.connect_request(data)
        return await handler(sid, data)

    def _forget(self, sid: str, *_: Any) -> None:
        self.sessions.pop(sid, None)

    def _downgrade(self, eio_sid: str, pkt: Any) -> Any:
        return eio3_codec.downgrade_reply(pkt) if eio_sid in self.sessions else pkt
