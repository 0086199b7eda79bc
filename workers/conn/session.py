"""What every Engine.IO session of the layer is to engine.io, python-socketio and the worker,
whatever its transport: the socket interface, the heartbeat, and the handlers run in order.

Why a base: a websocket (:class:`~workers.conn.eio_conn.EioConnection`) and a long-polling
session (:class:`~workers.conn.polling.PollingSession`) differ only in how packets reach the
client and come from it. What python-engineio's server, python-socketio and the worker
(delivery, shutdown, cluster operations) call on a socket in ``eio.sockets`` (``sid``,
``server``, ``session``, ``send``, ``close``, ``queue``, ``closed``, ``closing``,
``connected``, ``upgraded``, ``check_ping_timeout``), the PING every ping interval with a ping
timeout for the PONG, and the order in which the client's messages and its leaving reach the
handlers are the same for both, and written once here.

An Engine.IO 3 client (``--allow-eio3``: socket.io-client 1.x and 2.x) is a session with
``eio3`` set: it pings and the server answers (no PING from the server; a client silent for
the ping interval, grace and timeout is closed with ``ping timeout``, as Node allows), and it
may send a binary message as base64 text (``b4...``). How its packets are framed or encoded
is its transport's (:mod:`workers.eio3.codec`); the Socket.IO side of the translation stays
with :mod:`workers.eio3.translate`.

A transport says how to send a packet (:meth:`EioSession.send_packet`), how to ping
(:meth:`EioSession.ping`), how to say the session is closed (:meth:`EioSession.say_close`),
how its connection ends (:meth:`EioSession.finish`), and how to hold the client back while its
messages wait (:meth:`EioSession.pause`, :meth:`EioSession.resume`).
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Any

from engineio import packet as eio_packet

if TYPE_CHECKING:
    from sio_cluster.workers.conn.layer import Layer

# the heartbeat's states
WAIT_PING, WAIT_PONG, PONGED = 0, 1, 2
PAUSE_AT = 64  # messages waiting for the handler: the client is held back


class UnknownPacket(ValueError):
    """The client sent a packet its Engine.IO version does not have."""


class _Close:
    """In a session's sequence of messages: the session ends here, for ``reason``."""

    __slots__ = ("reason", "abort")

    def __init__(self, reason: str, abort: bool) -> None:
        self.reason = reason
        self.abort = abort  # False: the client is sent a CLOSE packet


class EioSession:
    """An Engine.IO session of the layer (see the module docstring)."""

    __slots__ = (
        "sid",
        "layer",
        "closing",
        "closed",
        "_session",
        "_beat",
        "_pong_at",
        "_ending",
        "_pending",
        "eio3",
        "heir",
        "_paused",
        "_holds_heir",
    )

    connected = True  # engine.io's flag: the session's handshake is done
    upgraded = True  # engine.io's flag: on its final transport (a websocket)
    upgrading = False

    def __init__(self, layer: Layer, sid: str, eio3: bool = False) -> None:
        self.eio3 = eio3  # an Engine.IO 3 client (the delivery path frames for it too)
        self.sid = sid
        self.layer = layer
        self.closing = False
        self.closed = False
        self._session: dict[str, Any] | None = None
        self._beat = WAIT_PING
        self._pong_at = 0.0  # the last PONG (an Engine.IO 3 client: its last PING)
        self._ending = False  # the transport is ending: nothing more is sent
        self._pending: list[str | bytes | _Close] | None = None  # None: no handler running
        self.heir: EioSession | None = None  # the websocket this session was upgraded to
        self._paused = False  # the client is held back (PAUSE_AT messages wait)
        self._holds_heir = False  # the heir's messages wait for this session's handlers

    # ---- what a transport provides ---------------------------------------------------

    def send_packet(self, pkt: Any) -> None:
        """Send engine.io packet ``pkt`` to the client."""
        raise NotImplementedError

    def ping(self) -> None:
        """Send the client a PING."""
        raise NotImplementedError

    def say_close(self) -> None:
        """Send the client a CLOSE packet (the server ends the session)."""
        raise NotImplementedError

    def finish(self) -> None:
        """The session is over: end what carries it, after what is queued for the client."""
        raise NotImplementedError

    def pause(self) -> None:
        """:data:`PAUSE_AT` messages wait for the handlers: read no more from the client."""

    def resume(self) -> None:
        """The handlers caught up: read the client again."""

    # ---- engine.io's socket interface ------------------------------------------------

    @property
    def server(self) -> Any:
        return self.layer.eio

    @property
    def session(self) -> dict[str, Any]:
        """engine.io's per-socket session dict (python-socketio keeps its sessions in it),
        made on first use: most connections never have one."""
        if self._session is None:
            self._session = {}
        return self._session

    @session.setter
    def session(self, value: dict[str, Any]) -> None:  # engine.io's save_session
        self._session = value

    @property
    def queue(self) -> EioSession:
        """What the worker puts packets on (``put_nowait``, ``qsize``): this session."""
        return self

    def put_nowait(self, pkt: Any) -> None:
        """An engine.io packet to send now; None ends the transport (shutdown)."""
        if pkt is None:
            self.finish()
        else:
            self.send_packet(pkt)

    def qsize(self) -> int:
        return 0  # nothing waits for a writer task: packets are encoded when given

    async def send(self, pkt: Any) -> None:
        self.send_packet(pkt)

    async def check_ping_timeout(self) -> bool:
        """engine.io's service task asks; the layer's wheel enforces the timeout."""
        return not self.closed

    async def close(
        self, wait: bool = True, abort: bool = False, reason: str | None = None
    ) -> None:
        """End the session as engine.io does: the ``disconnect`` handler runs, then (unless
        ``abort``) the client gets a CLOSE packet; the transport then ends."""
        if self.closed or self.closing:
            return
        self.closing = True
        layer = self.layer
        # the socket stays in engine.io's table meanwhile: a disconnect handler may read
        # its session, as under engine.io
        await layer.trigger_disconnect(self.sid, reason or layer.eio.reason.SERVER_DISCONNECT)
        if not abort:
            self.say_close()
        self.closed = True
        layer.forget(self)
        self._session = None
        self.finish()

    # ---- the heartbeat -----------------------------------------------------------------

    def start_heartbeat(self) -> None:
        """The first PING goes a ping interval from now (an Engine.IO 3 client's is awaited
        within the deadline)."""
        layer = self.layer
        if self.eio3:
            self._pong_at = layer.loop.time()
            layer.wheel.add(self, layer.client_ping_deadline)
            return
        self._beat = WAIT_PING
        layer.wheel.add(self, layer.ping_interval)

    def due(self, now: float) -> bool:
        """The wheel's call: a PING due, or a PONG overdue (an Engine.IO 3 client's PING)."""
        if self.closed or self._ending:
            return False
        layer = self.layer
        if self.eio3:
            left = self._pong_at + layer.client_ping_deadline - now
            if left > 0:
                layer.wheel.add(self, left)
                return True
        elif self._beat == WAIT_PING:
            self.ping()
            self._beat = WAIT_PONG
            layer.wheel.add(self, layer.ping_timeout)
            return True
        elif self._beat == PONGED:
            self._beat = WAIT_PING
            layer.wheel.add(self, max(0.0, self._pong_at + layer.ping_interval - now))
            return True
        # timed out: closed beside any handler still running, as engine.io's service task does
        layer.spawn(self.close(wait=False, abort=False, reason=layer.eio.reason.PING_TIMEOUT))
        return False

    # ---- what the client sends ---------------------------------------------------------

    def on_packet(self, message: str) -> None:
        """A text packet from the client (not empty). Raises :class:`UnknownPacket`."""
        kind = message[0]
        if kind == "4":
            self.layer.on_message(self, message[1:])
        elif kind == "3":
            if self._beat == WAIT_PONG and not self.eio3:
                self._beat = PONGED
                self._pong_at = self.layer.loop.time()
        elif kind == "1":
            self.end_session(self.layer.eio.reason.CLIENT_DISCONNECT)
        elif kind == "2" and self.eio3:  # answered at once, with what it carried ("probe")
            self._pong_at = self.layer.loop.time()
            self.send_packet(eio_packet.Packet(eio_packet.PONG, message[1:] or None))
        elif kind == "b" and self.eio3 and message[1:2] == "4":  # a base64 binary message
            try:
                self.layer.on_message(self, base64.b64decode(message[2:], validate=True))
            except binascii.Error:
                raise UnknownPacket("a base64 message that is not base64") from None
        elif kind not in "0256":  # OPEN, PING, UPGRADE and NOOP from a client are ignored
            raise UnknownPacket(f"an unknown Engine.IO packet type {kind}")

    # ---- the handlers, in order ---------------------------------------------------------

    def in_order(self, item: str | bytes | _Close) -> None:
        """Hand ``item`` (a message, or the session's end) to the handlers after everything
        before it: one task drains what arrives while a handler runs; from
        :data:`PAUSE_AT` waiting, the client is held back until fewer wait."""
        pending = self._pending
        if pending is None:
            self._pending = []
            self.layer.spawn(self._drain(item))
            return
        pending.append(item)
        if len(pending) >= PAUSE_AT and not self._paused and not self._ending:
            self._paused = True
            self.pause()

    def _taken(self, pending: list[str | bytes | _Close]) -> str | bytes | _Close:
        """The next waiting item, the client read again once few enough wait."""
        item = pending.pop(0)
        if self._paused and len(pending) < PAUSE_AT:
            self._paused = False
            if not self._ending:
                self.resume()
        return item

    def hold(self) -> None:
        """What arrives waits until :meth:`release` (the ``connect`` handler is running, or
        the session this websocket upgraded is still handling what came before)."""
        self._pending = []

    def release(self) -> None:
        """Hand what waited to the handlers, in order."""
        pending = self._pending
        if pending:
            self.layer.spawn(self._drain(self._taken(pending)))
        else:
            self._pending = None

    def paused(self) -> bool:
        """True while the client is held back (see :meth:`in_order`)."""
        return self._paused

    async def _drain(self, item: str | bytes | _Close) -> None:
        """Hand the waiting items to the handlers, one after the other. Once the session is
        upgraded (``heir``), what was waiting still goes, in order, and the heir's own
        messages wait for it (:meth:`pass_on`)."""
        layer = self.layer
        try:
            while True:
                owner = self.heir or self
                if isinstance(item, _Close):
                    await owner.close(wait=False, abort=item.abort, reason=item.reason)
                elif not owner.closed:  # a closed session's last messages are dropped
                    await layer.trigger("message", self.sid, item)
                pending = self._pending
                if not pending:
                    break
                item = self._taken(pending)
        finally:
            pending, self._pending = self._pending, None
            # cancelled (a handler raised CancelledError): the session's end is not lost
            ends = [i for i in pending or () if isinstance(i, _Close)]
            owner = self.heir or self
            if ends and not owner.closed:
                layer.spawn(owner.close(wait=False, abort=ends[0].abort, reason=ends[0].reason))
            if self._holds_heir and self.heir is not None:
                self._holds_heir = False
                self.heir.release()

    def pass_on(self, heir: EioSession) -> None:
        """``heir`` (the websocket of an upgrade) is this session from now on. What the
        client sent before waits for no one; what it sends on the websocket waits until the
        handlers have had that (:meth:`_drain` releases it)."""
        self.heir = heir
        if self._pending is not None:
            self._holds_heir = True
            heir.hold()

    def end_session(self, reason: str, abort: bool = True) -> None:
        """End the session for ``reason`` once what came before is handled (engine.io's
        ``close``: the ``disconnect`` handler, then, unless ``abort``, a CLOSE packet)."""
        if self.layer.eio.async_handlers:
            self.layer.spawn(self.close(wait=False, abort=abort, reason=reason))
        else:
            self.in_order(_Close(reason, abort))
