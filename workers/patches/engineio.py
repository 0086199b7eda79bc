"""python-engineio: every internal of it the worker reads, writes or replaces.

Why one module: engine.io promises none of these. Each has one accessor here, its use is
checked by :mod:`workers.patches.checks` at start, and python-engineio is bounded in
setup.cfg. Nothing here patches engine.io's classes: the sessions the worker's connection
layer serves are its own objects (:mod:`workers.conn`), and engine.io's own sockets (a JSONP
client's, every client's with ``--ws aiohttp``) run as python-engineio publishes them.

Internals: the socket table ``AsyncServer.sockets`` (read, and written for the worker's own
sessions), a socket's ``queue``, ``closed`` and ``session``, ``AsyncServer._cors_headers``
(0.9 clients' answers), the ``handlers`` table (wrapped through ``AsyncServer.on``), and
``AsyncServer.disconnect``, replaced on the worker's server (not its class).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any


def eio_sockets(sio: Any) -> Mapping[str, Any]:
    """engine.io's live sockets of ``sio`` by engine.io sid."""
    sockets: Mapping[str, Any] = sio.eio.sockets
    return sockets


def enqueue(eio_socket: Any, packets: Sequence[Any]) -> None:
    """Put engine.io ``packets`` on an open socket's queue (its writer task sends them)."""
    if not eio_socket.closed:
        put = eio_socket.queue.put_nowait
        for pkt in packets:
            put(pkt)


def register_socket(eio: Any, socket: Any) -> None:
    """Put a socket of the worker's own (a socket.io 0.9 client's, :mod:`workers.v09.session`)
    in engine.io's table: engine.io's ``send``/``disconnect``, python-socketio and the
    worker's deliveries then reach it by its ``sid`` as they reach engine.io's sockets."""
    eio.sockets[socket.sid] = socket


def unregister_socket(eio: Any, socket: Any) -> None:
    """Take ``socket`` out of engine.io's table, if it is still the one there under its sid."""
    if eio.sockets.get(socket.sid) is socket:
        del eio.sockets[socket.sid]


def cors_headers(eio: Any, environ: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The CORS headers engine.io would answer a request with this ``environ``
    (``REQUEST_METHOD``, ``HTTP_ORIGIN``, ``HTTP_HOST``...), per its ``cors_allowed_origins``
    (engine.io: ``AsyncServer._cors_headers``)."""
    headers: list[tuple[str, str]] = eio._cors_headers(environ)
    return headers


def stop_writer(eio_socket: Any) -> None:
    """Make ``eio_socket``'s writer task close its websocket (a close frame) and end.

    For shutdown, after engine.io closed the socket: otherwise the connection lingers
    until the client hangs up.
    """
    eio_socket.queue.put_nowait(None)


def forget_eio_sockets(sio: Any) -> None:
    """Drop every engine.io session of ``sio`` (they were closed): at shutdown."""
    sio.eio.sockets = {}


def eio_session(eio_socket: Any) -> dict[str, Any]:
    """The engine.io socket's session dict; python-socketio keeps a namespace's user session
    at ``[namespace]`` (engine.io: ``AsyncSocket.session``)."""
    session: dict[str, Any] = eio_socket.session
    return session


def disconnect_without_waiting(eio: Any) -> None:
    """Make ``eio.disconnect(sid)`` close the session without waiting for the client to
    fetch its CLOSE packet.

    python-engineio's waits (``close(wait=True)``). A long-polling client that never polls
    again never fetches it: for example one whose POST was over ``maxPayload``, which
    engine.io disconnects from inside that POST. The POST then never got its answer, and
    its connection and body stayed held.
    """
    original = eio.disconnect

    async def disconnect(sid: str | None = None) -> None:
        if sid is None:
            await original()
            return
        eio_socket = eio.sockets.get(sid)
        if eio_socket is not None:
            await eio_socket.close(wait=False, reason=eio.reason.SERVER_DISCONNECT)
            eio.sockets.pop(sid, None)

    eio.disconnect = disconnect


def refuse_connections_over(eio: Any, limit: int, refused: Callable[[], None]) -> None:
    """Refuse a new engine.io connection while ``limit`` are open (engine.io answers 401 with
    the reason): past its file descriptors and memory a worker fails everyone, not just the
    newcomer. ``refused()`` counts each refusal."""
    original = eio.handlers["connect"]

    async def connect(sid: str, environ: Any, *args: Any) -> Any:
        if len(eio.sockets) > limit:  # engine.io registered the new socket already
            refused()
            return "this worker is full"
        return await original(sid, environ, *args)

    eio.on("connect", connect)


EventWrapper = Callable[..., Awaitable[Any]]


def wrap_eio_event(eio: Any, event: str, wrapper: EventWrapper) -> None:
    """Make ``wrapper(handler, *args)`` engine.io's handler of ``event``, where ``handler`` is
    the current one (python-socketio's, or a wrapper of it)."""
    original = eio.handlers[event]

    async def handler(*args: Any) -> Any:
        return await wrapper(original, *args)

    eio.on(event, handler)


def observe_eio_event(eio: Any, event: str, observer: Callable[..., None]) -> None:
    """Call ``observer(*args)`` before engine.io's current handler of ``event`` (connect,
    disconnect, message), keeping that handler: python-socketio registered its own."""

    async def observed(handler: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        observer(*args)
        return await handler(*args)

    wrap_eio_event(eio, event, observed)
