"""Telling apart the four forms ``--app`` accepts, and saying in one line what else it got.

Pure inspection of the imported object: nothing here changes it (:mod:`.adopt` does).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import engineio
import socketio
from aiohttp import web

from sio_cluster.workers.app_loader import AppLoadError, AppSetup

ASGI_PARAMETERS = ("scope", "receive", "send")


@dataclass(frozen=True)
class SetupApp:
    """``setup(sio[, web_app])``: called with the server the worker builds."""

    setup: AppSetup


@dataclass(frozen=True)
class ServerApp:
    """A bare ``socketio.AsyncServer``: served at ``/socket.io/``."""

    sio: socketio.AsyncServer


@dataclass(frozen=True)
class AiohttpApp:
    """An aiohttp application the user's server is attached to: it is the one served."""

    sio: socketio.AsyncServer
    web_app: web.Application


@dataclass(frozen=True)
class AsgiApp:
    """A ``socketio.ASGIApp``: its server at ``path``, everything else to the ASGI app."""

    sio: socketio.AsyncServer
    asgi_app: socketio.ASGIApp
    path: str  # "socket.io": the ASGIApp's socketio_path, without slashes


UserApp = SetupApp | ServerApp | AiohttpApp | AsgiApp

FORMS = (
    "a socketio.ASGIApp, a socketio.AsyncServer, an aiohttp web.Application with a"
    " socketio.AsyncServer attached, or a setup(sio[, web_app]) callable"
)


def identify(target: Any, spec: str) -> UserApp:
    """The form of ``target`` (what ``--app spec`` names), or an :class:`AppLoadError` that
    says in one line what it is instead."""
    if isinstance(target, socketio.ASGIApp):
        return _asgi_app(target, spec)
    if isinstance(target, socketio.AsyncServer):
        return ServerApp(target)
    if isinstance(target, web.Application):
        return AiohttpApp(_attached_server(target, spec), target)
    if isinstance(target, socketio.Server):
        raise AppLoadError(
            f"--app {spec!r} is a socketio.Server (WSGI, threads); the cluster serves asyncio:"
            " build a socketio.AsyncServer instead"
        )
    if _is_asgi(target):
        mounts = _mounted_socketio(target)
        if mounts:
            mount, mounted = mounts[0]
            raise AppLoadError(
                f"--app {spec!r} is an ASGI application ({_kind(target)}) with a"
                f" socketio.ASGIApp mounted at {mount!r}: give"
                " socketio.ASGIApp(sio, other_asgi_app=app) instead (Socket.IO then is at"
                f" /{str(mounted.engineio_path).strip('/')}/)"
            )
        raise AppLoadError(
            f"--app {spec!r} is an ASGI application ({_kind(target)}) without Socket.IO:"
            " give socketio.ASGIApp(sio, other_asgi_app=app) instead"
        )
    if callable(target) and not isinstance(target, type):
        return SetupApp(target)
    raise AppLoadError(f"--app {spec!r} is {_kind(target)}, not {FORMS}")


def _asgi_app(target: socketio.ASGIApp, spec: str) -> AsgiApp:
    sio = target.engineio_server
    if not isinstance(sio, socketio.AsyncServer):
        raise AppLoadError(
            f"--app {spec!r} is a socketio.ASGIApp around {_kind(sio)}, not a socketio.AsyncServer"
        )
    if target.engineio_path is None:
        raise AppLoadError(
            f"--app {spec!r}: socketio_path=None (every path to Socket.IO) is not supported;"
            " give the ASGIApp a path (the default is 'socket.io')"
        )
    return AsgiApp(sio, target, str(target.engineio_path).strip("/"))


def _attached_server(web_app: web.Application, spec: str) -> socketio.AsyncServer:
    """The ``socketio.AsyncServer`` whose engine.io server handles a route of ``web_app``
    (``sio.attach(web_app)`` adds them)."""
    for route in web_app.router.routes():
        eio = getattr(route.handler, "__self__", None)
        if not isinstance(eio, engineio.AsyncServer):
            continue
        connect = eio.handlers.get("connect")
        sio = getattr(connect, "__self__", None)
        if isinstance(sio, socketio.AsyncServer):
            return sio
    raise AppLoadError(
        f"--app {spec!r} is an aiohttp web.Application with no socketio.AsyncServer attached"
        " (sio.attach(app))"
    )


def _mounted_socketio(target: Any) -> list[tuple[str, socketio.ASGIApp]]:
    """The ``(path, app)`` of each ``socketio.ASGIApp`` mounted on a Starlette or FastAPI
    application (``app.mount(path, socketio.ASGIApp(sio))``)."""
    return [
        (str(getattr(route, "path", "")), route.app)
        for route in getattr(target, "routes", None) or ()
        if isinstance(getattr(route, "app", None), socketio.ASGIApp)
    ]


def _is_asgi(target: Any) -> bool:
    """True for an ASGI 3 application: a callable of ``(scope, receive, send)``."""
    if not callable(target):
        return False
    try:
        names = tuple(inspect.signature(target).parameters)
    except (TypeError, ValueError):
        return False
    return names == ASGI_PARAMETERS


def _kind(target: Any) -> str:
    """``a fastapi.applications.FastAPI``: the object's class, fully named."""
    cls = type(target)
    return f"a {cls.__module__}.{cls.__qualname__}"
