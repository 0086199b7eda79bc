"""The worker's patches of its dependencies: one module per dependency, one ordered install.

Why a layer: the worker's fast paths and its routing rely on internals of python-engineio,
python-socketio and aiohttp that they do not promise to keep. Every private access of the
project to them is in this package (redis-py's is none: the master reads it through public
calls, :mod:`common.redis`), each behind one accessor, each dependency bounded in setup.cfg,
and each checked at start (:mod:`workers.patches.checks`).

======================  ===========================================================================
module                  what it patches or reads
======================  ===========================================================================
:mod:`.engineio`        engine.io's socket table, its sockets' queues and sessions, its CORS
                        headers, its event handlers
:mod:`.socketio`        python-socketio's room table, message handling, connect, sent packets
:mod:`.aiohttp`         the transport under aiohttp's ``WebSocketResponse`` (0.9 clients)
:mod:`.checks`          what each of them relies on, inspected and exercised at start
:mod:`.versions`        :class:`CompatError`, and the installed versions named in messages
======================  ===========================================================================

Upstream reports for the bugs these patches work around: ``docs/upstream/``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sio_cluster.workers.partial_packets import PartialPackets
from sio_cluster.workers.patches import engineio, socketio


def install(
    sio: Any,
    refused: Callable[[str, str], Awaitable[None]],
    partial: PartialPackets,
    max_connections: int,
    full: Callable[[], None],
) -> None:
    """Install the worker's patches on python-socketio server ``sio``, in this order:

    1. :func:`.engineio.disconnect_without_waiting`: replaces ``eio.disconnect``, which
       python-socketio, the cluster operations and engine.io itself (a POST over
       ``maxPayload``) call through the instance.
    2. :func:`.socketio.guard_messages`: REPLACES engine.io's ``message`` handler with a
       guard around python-socketio's, so it comes before anything that wraps that handler
       (the Engine.IO 3 translation, the admin UI), whose wrappers it would drop; a closed
       connection's unfinished binary packet is forgotten (``partial``).
    3. :func:`.engineio.refuse_connections_over`: wraps engine.io's ``connect`` handler
       (python-socketio's) innermost, so a refused connection never reaches python-socketio.

    After this the worker installs the features built on these patches, in this order: the
    Engine.IO 3 translation (wraps ``connect``/``message`` and the sent packets), the user's
    app, connection state recovery (wraps ``_handle_connect`` and, outside the translation,
    the sent packets: a CONNECT reply gets its ``pid`` before it is downgraded), the admin UI
    (observes the events last, as they reach the handlers). Then
    :func:`.checks.exercise` runs each of these patches once on throwaway servers.
    """
    engineio.disconnect_without_waiting(sio.eio)
    socketio.guard_messages(sio, refused, partial)
    engineio.observe_eio_event(sio.eio, "disconnect", lambda eio_sid, *_: partial.forget(eio_sid))
    engineio.refuse_connections_over(sio.eio, max_connections, full)
