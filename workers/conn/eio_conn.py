"""One Engine.IO websocket connection (version 4, or 3 with ``--allow-eio3``): the asyncio
protocol, and the engine.io socket python-socketio sees, in one slotted object.

Why one object, and no task: an idle connection is this object, its transport, its lazy
environ (kept by python-socketio) and a place in the heartbeat wheel; nothing else. Frames
are read in ``data_received`` as they come; what the client sends is handed to engine.io's
``message`` handler (python-socketio's, behind the worker's guards) as engine.io does, a task
per message when ``async_handlers`` (engine.io's default); frames to write are joined per loop
tick and written in one ``transport.write`` (one scheduled callback for every connection
written in that tick).

The engine.io socket interface, the heartbeat and the order of the handlers are every
session's (:class:`~workers.conn.session.EioSession`); this module is the websocket transport.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from engineio import packet as eio_packet

from sio_cluster.workers.conn import deflate, ws_frames
from sio_cluster.workers.conn.session import EioSession, UnknownPacket
from sio_cluster.workers.conn.ws_frames import FrameError
from sio_cluster.workers.eio3 import codec as eio3_codec
from sio_cluster.workers.transport import fast_ws
from sio_cluster.workers.transport.fast_ws import Counters
from sio_cluster.workers.transport.ticks import TickWrites

if TYPE_CHECKING:
    from sio_cluster.workers.conn.layer import Layer

log = logging.getLogger(__name__)

PING_FRAME = ws_frames.frame(b"2", ws_frames.TEXT)
CLOSE_PACKET_FRAME = ws_frames.frame(b"1", ws_frames.TEXT)
PROBE_ANSWER_FRAME = ws_frames.frame(b"3probe", ws_frames.TEXT)

CLOSE_WAIT = 2.0  # seconds a closed connection waits for the client to close its side


_ticks: TickWrites[EioConnection] = TickWrites(lambda conn: conn.flush(), "a websocket")


class EioConnection(EioSession, asyncio.Protocol):
    """A websocket client of Engine.IO (see the module docstring)."""

    __slots__ = (
        "transport",
        "opened",
        "_out",
        "_inbox",
        "_need",
        "_parts",
        "_parts_size",
        "_parts_text",
        "_parts_compressed",
        "_deflate",
        "_probing",
    )

    def __init__(
        self,
        layer: Layer,
        sid: str,
        transport: asyncio.Transport,
        agreement: deflate.Agreement | None,
        eio3: bool = False,
    ) -> None:
        super().__init__(layer, sid, eio3)
        self.transport = transport
        self.opened = False  # the 101 answer is written: frames may go
        self._out: list[bytes] | None = None
        self._inbox: bytes | bytearray = b""  # the start of a frame still arriving
        self._need = 0  # the bytes that frame needs in all (a parse waits until they came)
        self._parts: list[bytes] | None = None
        self._parts_size = 0
        self._parts_text = False
        self._parts_compressed = False
        self._deflate = agreement
        # while upgrading a long-polling session: its PollingSession, the probe deadline, and
        # whether the client has probed
        self._probing: list[Any] | None = None

    # ---- engine.io's socket interface ------------------------------------------------

    async def handle_get_request(self, environ: Any) -> list[Any]:
        """A long-poll GET for this websocket session (engine.io refuses those before this)."""
        return []

    async def handle_post_request(self, environ: Any) -> None:
        from engineio import exceptions

        raise exceptions.EngineIOError("a websocket session takes no POST")

    # ---- the transport -----------------------------------------------------------------

    def ping(self) -> None:
        self.write(PING_FRAME)

    def say_close(self) -> None:
        if self.opened:
            self.write(CLOSE_PACKET_FRAME)

    def finish(self) -> None:
        self.end(ws_frames.NORMAL)

    def pause(self) -> None:
        self.transport.pause_reading()  # resumed when drained, or when ending

    def resume(self) -> None:
        self.transport.resume_reading()

    @property
    def deflate_window(self) -> int:
        """The compression window agreed with the client (permessage-deflate); 0: none."""
        agreement = self._deflate
        return 0 if agreement is None else agreement.window_bits

    # ---- writing ---------------------------------------------------------------------

    def idle(self) -> bool:
        """True if a delivery's frames may be written to this connection now."""
        return not self._ending and not self.closed and not self.transport.is_closing()

    def write(self, frames: bytes) -> None:
        """Frames for this tick's write (none once the connection is ending)."""
        if self._ending:
            return
        out = self._out
        if out is None:
            self._out = [frames]
            if self.opened:
                _ticks.add(self, self.layer.loop)
        else:
            out.append(frames)

    def send_packet(self, pkt: Any) -> None:
        """An engine.io packet, framed (compressed if large and the client agreed)."""
        if self.closed or self._ending:
            return
        encoded = pkt.encode()
        if isinstance(encoded, str):
            payload, opcode = encoded.encode(), ws_frames.TEXT
        else:  # an Engine.IO 3 client's binary frame starts with its packet type
            payload = eio3_codec.websocket_binary(encoded) if self.eio3 else encoded
            opcode = ws_frames.BINARY
        agreement = self._deflate
        if agreement is not None and len(payload) >= deflate.THRESHOLD:
            compressed = deflate.compress(payload, agreement.window_bits)
            self.write(ws_frames.frame(compressed, opcode, compressed=True))
        else:
            self.write(ws_frames.frame(payload, opcode))

    def flush(self) -> None:
        """Write what this tick gave, in one write; abort a client that does not read."""
        out, self._out = self._out, None
        transport = self.transport
        if not out or transport.is_closing():
            return
        fast_ws.write_tick(transport, out)

    def open(self, answer: bytes, open_frame: bytes) -> None:
        """Write the 101 answer and the OPEN packet, then what was sent meanwhile."""
        self.opened = True
        queued, self._out = self._out, None
        self.transport.write(answer + open_frame + b"".join(queued or ()))
        self.start_heartbeat()
        if self._inbox:
            inbox, self._inbox = self._inbox, b""
            self.data_received(bytes(inbox))

    # ---- the upgrade of a long-polling session ---------------------------------------

    def probe(self, old: Any, answer: bytes) -> None:
        """Write the 101 answer and wait for the client's probe of this websocket, at most a
        ping interval plus timeout, as engine.io waits."""
        self.opened = True
        self.transport.write(answer)
        layer = self.layer
        deadline = layer.loop.call_later(layer.ping_interval + layer.ping_timeout, self._no_probe)
        self._probing = [old, deadline, False]

    def _on_probe(self, message: str) -> None:
        """engine.io's upgrade: ``2probe`` answered ``3probe`` (and a NOOP ends the pending
        poll), then ``5`` completes it; anything else, or a session that ended meanwhile,
        gives it up, as engine.io does."""
        assert self._probing is not None
        old, deadline, probed = self._probing
        if not self.layer.still_upgradable(self.sid, old):
            self.give_up_upgrade()
        elif message == "2probe" and not probed:
            self._probing[2] = True
            self.write(PROBE_ANSWER_FRAME)
            old.queue.put_nowait(eio_packet.Packet(eio_packet.NOOP))  # ends the pending poll
        elif message == "5" and probed:
            deadline.cancel()
            self._probing = None
            self.layer.upgraded(self, old)
            self.start_heartbeat()
        else:
            self.give_up_upgrade()

    def _no_probe(self) -> None:
        if self._probing is not None:
            self.give_up_upgrade()

    def give_up_upgrade(self) -> None:
        """The upgrade failed: engine.io's socket keeps the session; this websocket ends."""
        if self._probing is None:
            return
        old, deadline, _ = self._probing
        deadline.cancel()
        self._probing = None
        self.layer.not_probing(self)
        old.upgrading = False
        self.closed = True  # no session of its own to close
        self.end(ws_frames.NORMAL)

    def end(self, code: int, answering: bool = False) -> None:
        """Flush, write a close frame with ``code``, and end the connection; nothing is
        written after.

        ``answering`` a client's close frame, the server closes the TCP connection at once
        (RFC 6455 section 7.1.1). Otherwise the server sends its end of stream and reads on,
        discarding, until the client closes: closing a socket with unread bytes in it makes
        the kernel reset the connection, and the client would lose the close frame (and the
        reason in its code). Either way the connection is aborted :data:`CLOSE_WAIT` seconds
        later if it is still there (a client that reads nothing would hold it forever)."""
        if self._ending:
            return
        transport = self.transport
        if self.opened:
            self.flush()
        self._ending = True
        if self.opened and not transport.is_closing():
            transport.write(ws_frames.close_frame(code))
        self._inbox = b""
        self._parts = None
        if self.paused():
            transport.resume_reading()
        if answering or not self.opened or not transport.can_write_eof():
            transport.close()
        else:
            transport.write_eof()
        self.layer.loop.call_later(CLOSE_WAIT, transport.abort)

    # ---- reading -----------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._ending:
            return  # a closing connection reads only to let the client finish
        if not self.opened:
            self._inbox += data  # the handshake is being answered: read once it is
            return
        inbox = self._inbox
        if inbox:
            if isinstance(inbox, bytes):
                inbox = self._inbox = bytearray(inbox)
            inbox += data  # a large frame arriving in many reads is joined once
            if len(inbox) < self._need:
                return
            buffer = bytes(inbox)
        else:
            buffer = data
        view = memoryview(buffer)
        limit = self.layer.max_payload
        pos = 0
        try:
            while not self._ending:
                parsed = ws_frames.parse(view[pos:], limit)
                if parsed is None:
                    break
                frame, used = parsed
                pos += used
                self._on_frame(frame, limit)
        except FrameError as exc:
            self._refuse(exc)
            return
        if self._ending or pos == len(buffer):
            self._inbox = b""
        else:
            self._inbox = buffer[pos:]
            self._need = ws_frames.needed(view[pos:])

    def _on_frame(self, frame: ws_frames.Frame, limit: int) -> None:
        opcode = frame.opcode
        if opcode >= ws_frames.CONTROL:
            if frame.rsv1:
                raise FrameError(ws_frames.PROTOCOL_ERROR, "a compressed control frame")
            if opcode == ws_frames.PING:
                self.write(ws_frames.frame(frame.payload, ws_frames.PONG))
            elif opcode == ws_frames.CLOSE:
                code = ws_frames.close_code(frame.payload)
                self.end(ws_frames.NORMAL if code is None else code, answering=True)
                if not self.closed and not self.closing:
                    self.end_session(self.layer.eio.reason.TRANSPORT_CLOSE)
            return
        if opcode == ws_frames.CONTINUATION:
            if self._parts is None:
                raise FrameError(ws_frames.PROTOCOL_ERROR, "a continuation of nothing")
            if frame.rsv1:
                raise FrameError(ws_frames.PROTOCOL_ERROR, "RSV1 on a continuation")
        else:
            if self._parts is not None:
                raise FrameError(ws_frames.PROTOCOL_ERROR, "a new message inside another")
            if frame.rsv1 and self._deflate is None:
                raise FrameError(ws_frames.PROTOCOL_ERROR, "RSV1 without permessage-deflate")
            if frame.fin:
                self._on_message(frame.payload, opcode == ws_frames.TEXT, frame.rsv1, limit)
                return
            self._parts = []
            self._parts_size = 0
            self._parts_text = opcode == ws_frames.TEXT
            self._parts_compressed = frame.rsv1
        self._parts_size += len(frame.payload)
        if self._parts_size > limit:
            raise FrameError(ws_frames.TOO_BIG, f"a message over {limit} bytes")
        self._parts.append(frame.payload)
        if frame.fin:
            parts, self._parts = self._parts, None
            self._on_message(b"".join(parts), self._parts_text, self._parts_compressed, limit)

    def _on_message(self, payload: bytes, text: bool, compressed: bool, limit: int) -> None:
        if compressed:
            try:  # the client keeps no context (client_no_context_takeover): nor do we
                payload = deflate.inflate(deflate.new_inflater(), payload, limit)
            except deflate.TooBig as exc:
                raise FrameError(ws_frames.TOO_BIG, str(exc)) from None
            except Exception as exc:  # zlib.error: not deflate data
                raise FrameError(ws_frames.INVALID_DATA, f"undecodable deflate: {exc}") from None
        if not text:
            if self._probing is not None:
                self.give_up_upgrade()  # nothing but the probe comes before the upgrade
                return
            if self.eio3:
                try:
                    payload = eio3_codec.websocket_message(payload)  # type: ignore[assignment]
                except eio3_codec.PayloadError as exc:
                    raise FrameError(ws_frames.PROTOCOL_ERROR, str(exc)) from None
            self.layer.on_message(self, payload)
            return
        try:
            message = payload.decode()
        except UnicodeDecodeError:
            raise FrameError(ws_frames.INVALID_DATA, "a text frame that is not UTF-8") from None
        if not message:
            raise FrameError(ws_frames.PROTOCOL_ERROR, "Invalid empty packet received")
        if self._probing is not None:
            self._on_probe(message)
            return
        try:
            self.on_packet(message)
        except UnknownPacket as exc:
            raise FrameError(ws_frames.PROTOCOL_ERROR, str(exc)) from None

    # ---- a client that breaks the protocol, and its end ----------------------------------

    def _refuse(self, exc: FrameError) -> None:
        """What the client sent breaks the protocol: counted, closed with the error's code."""
        if exc.code == ws_frames.TOO_BIG:
            Counters.bad_clients += 1
            fast_ws.client_refusals.log(
                logging.WARNING,
                "too big",
                "closed a websocket that sent a message over %d bytes",
                self.layer.max_payload,
            )
        else:  # the line engine.io's websocket path logged for a bad packet
            Counters.bad_clients += 1
            fast_ws.client_refusals.log(
                logging.WARNING, "bad packet", "closed a websocket: %s", exc
            )
        self.end(exc.code)
        self.end_session(self.layer.eio.reason.TRANSPORT_ERROR)

    def connection_lost(self, exc: Exception | None) -> None:
        self.give_up_upgrade()
        self._ending = True
        self._out = None
        self._inbox = b""
        self._parts = None
        self.layer.lost(self)
        if not self.closed and not self.closing:
            self.end_session(self.layer.eio.reason.TRANSPORT_CLOSE)

    def eof_received(self) -> bool:
        return False  # the transport closes; connection_lost follows
