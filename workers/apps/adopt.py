"""Making the user's own ``socketio.AsyncServer`` a member of the cluster.

Why adopt rather than copy: the user's module holds that object (``sio.emit`` in a FastAPI
route, class-based namespaces bound to it, options given to its constructor); a copy would
leave all of those on a server nobody serves. Two parts of it are the cluster's:

- its client manager: :class:`workers.manager.ClusterManager`, so its rooms and emits span
  every worker and host. A pub/sub manager it was given (``AsyncRedisManager``...) is
  replaced, with one warning line; any other manager of its own is refused.
- its engine.io driver: the worker serves aiohttp (its connection layer stands in front of
  it, and what the layer leaves to engine.io is served there), so a server made for
  ``async_mode="asgi"`` gets an aiohttp engine.io server with every engine.io option of the
  one it had, and python-socketio's handlers on it.

What cannot be honoured is refused at start with the reason (:class:`AppLoadError`).
"""

from __future__ import annotations

import logging

import engineio
import socketio
from socketio import packet as sio_packet
from socketio.async_admin import InstrumentedAsyncServer
from socketio.async_pubsub_manager import AsyncPubSubManager

from sio_cluster.workers.app_loader import AppLoadError
from sio_cluster.workers.manager import ClusterManager

log = logging.getLogger(__name__)

# engine.io's options, as the attributes its server keeps them in: each is given to the
# aiohttp engine.io server that replaces an ASGI one
EIO_OPTIONS = (
    "ping_interval",
    "ping_interval_grace_period",
    "ping_timeout",
    "max_http_buffer_size",
    "allow_upgrades",
    "http_compression",
    "compression_threshold",
    "cookie",
    "cors_allowed_origins",
    "cors_credentials",
    "start_service_task",  # monitor_clients
    "transports",
)

Origins = list[str] | str | None


def refusal(sio: socketio.AsyncServer, spec: str) -> str | None:
    """Why the cluster cannot serve ``sio`` as it was built, or None."""
    if sio.packet_class is not sio_packet.Packet:
        return (
            f"--app {spec!r}: serializer {sio.packet_class.__name__} is not supported: the"
            " cluster's workers and the master's ch:* messages speak the default"
            " (JSON) Socket.IO packets"
        )
    if instrumented(sio):
        return (
            f"--app {spec!r}: sio.instrument() (python-socketio's Admin UI) follows the rooms"
            " of the manager the cluster replaces; use --admin-ui instead"
        )
    manager = sio.manager
    if isinstance(manager, ClusterManager) or type(manager) is socketio.AsyncManager:
        return None
    if not isinstance(manager, AsyncPubSubManager):
        return (
            f"--app {spec!r}: its client_manager {type(manager).__name__} cannot be honoured:"
            " the cluster's own manager keeps the rooms and carries the emits; pass none"
        )
    return None


def instrumented(sio: socketio.AsyncServer) -> bool:
    """True once ``sio.instrument()`` ran: its handlers are an ``InstrumentedAsyncServer``'s."""
    return any(
        isinstance(getattr(handler, "__self__", None), InstrumentedAsyncServer)
        for handlers in sio.handlers.values()
        for handler in handlers.values()
    )


def merge_origins(sio: socketio.AsyncServer, configured: Origins, spec: str) -> Origins:
    """The CORS origins to serve: the app's, or ``--cors-allowed-origins``; refused if both
    are given and differ (which one the user meant cannot be guessed)."""
    own: Origins = sio.eio.cors_allowed_origins
    if configured is None:
        return own
    if own is None or own == configured:
        return configured
    raise AppLoadError(
        f"--app {spec!r}: cors_allowed_origins={own!r} and --cors-allowed-origins"
        f" {configured!r} differ; give one of them"
    )


def adopt(
    sio: socketio.AsyncServer,
    manager: ClusterManager,
    origins: Origins,
    spec: str,
    warn: bool = True,
) -> None:
    """Make ``sio`` the worker's server: the cluster's ``manager``, engine.io on aiohttp,
    the CORS origins of :func:`merge_origins`. Raises :class:`AppLoadError` for what
    :func:`refusal` names. ``warn``: log the replaced pub/sub manager (one worker does, so
    the line comes once per host)."""
    reason = refusal(sio, spec)
    if reason is not None:
        raise AppLoadError(reason)
    cors = merge_origins(sio, origins, spec)
    own = sio.manager
    if warn and isinstance(own, AsyncPubSubManager):
        log.warning(
            "the app's %s is replaced by the cluster's manager: the master carries every"
            " emit to the other workers and hosts over its own Redis connection",
            type(own).__name__,
        )
    if sio.eio.async_mode != "aiohttp":
        sio.eio = on_aiohttp(sio.eio)
        sio.async_mode = sio.eio.async_mode
    sio.eio.cors_allowed_origins = cors
    sio.manager = manager
    manager.set_server(sio)
    sio.manager_initialized = False


def on_aiohttp(eio: engineio.AsyncServer) -> engineio.AsyncServer:
    """An aiohttp engine.io server with ``eio``'s options, logger and event handlers (the
    ones python-socketio registered on it)."""
    served = engineio.AsyncServer(async_mode="aiohttp", logger=eio.logger, async_handlers=False)
    for name in EIO_OPTIONS:
        setattr(served, name, getattr(eio, name))
    for event, handler in eio.handlers.items():
        served.on(event, handler)
    return served
