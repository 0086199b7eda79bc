"""Loading the user's ``--app module:attr`` inside a worker (like uvicorn's app strings).

What it names is one of the forms :mod:`workers.apps` serves. The ``setup`` form is called
here: it receives the worker's ``socketio.AsyncServer``, and one that takes a second
parameter also receives the worker's ``aiohttp.web.Application``, to add its own HTTP
routes (a page, an API) beside ``/socket.io/`` and ``/healthz``.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

import socketio
from aiohttp import web

AppSetup = Callable[..., Awaitable[Any] | Any]


class AppLoadError(ImportError):
    """The ``--app`` string does not name an app the worker can serve (the one-line reason)."""


def load_app(spec: str, app_dir: str) -> Any:
    """Import ``module:attr`` with ``app_dir`` first on the path and return what it names."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise AppLoadError(f"--app must look like 'module:callable', got {spec!r}")
    if app_dir not in sys.path:
        sys.path.insert(0, app_dir)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # whatever the module raises: the reason, in one line
        raise AppLoadError(
            f"cannot import {module_name!r} for --app {spec!r}: {describe_error(exc)}"
        ) from exc
    target: Any = module
    for part in attr.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise AppLoadError(f"{module_name!r} has no attribute {attr!r} (--app {spec!r})")
    return target


def describe_error(exc: BaseException) -> str:
    """``exc`` in one line, with the file and line it came from when its text does not say
    (an ImportError and a SyntaxError name their module or place themselves)."""
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, ImportError | SyntaxError):
        return text
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return text
    return f"{text} ({frames[-1].filename} line {frames[-1].lineno})"


async def apply_app(setup: AppSetup, sio: socketio.AsyncServer, web_app: web.Application) -> None:
    """Call the user's setup with the server (and the web application, if it takes a second
    parameter); await it if it is a coroutine function."""
    try:
        takes_web_app = len(inspect.signature(setup).parameters) >= 2
    except (TypeError, ValueError):  # a callable without a readable signature: one argument
        takes_web_app = False
    result = setup(sio, web_app) if takes_web_app else setup(sio)
    if inspect.isawaitable(result):
        await result
