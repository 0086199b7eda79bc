"""Contract with python-socketio: every method ClusterManager overrides exists, fits, and is called.

Why: python-socketio calls its client manager by method name, so an override whose
name or signature python-socketio does not use (any more, or yet) is silently dead.
Below python-socketio 5.18 nothing calls ``pre_connect``: the connect barrier just
does not happen, and every other test still passes. Here the overrides are found by
comparing ``ClusterManager.__dict__`` with its bases and checked against the base's
signature; then a real ``AsyncServer`` on aiohttp, set up as a worker sets it up but
with an instrumented manager, is driven by real clients, and each override must have
been called from python-socketio's (or engine.io's) own code.

The manager talks to its master over a frame link. A one-worker master stands in for
it on the other end of a socketpair: it answers Sync with Synced and carries a
worker's request out on that worker (the only one of its host), as the master does.
"""

from __future__ import annotations

import functools
import inspect
import socket
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib.metadata import version
from typing import Any

import pytest
import socketio

from bench.in_process import serving
from sio_cluster.common.config import Config
from sio_cluster.wire.frames import Frame, Request, Response, Sync, Synced
from sio_cluster.wire.link import FrameLink
from sio_cluster.wire.rpc import Rpc
from sio_cluster.workers.manager import ClusterManager
from sio_cluster.workers.process import Worker
from tests.cluster import until

SOCKETIO = f"python-socketio {version('python-socketio')}"
CALLER_PACKAGES = ("socketio", "engineio")

# Overrides python-socketio never calls, so neither the call check nor the signature
# check applies to them; each with the reason.
NOT_CALLED_BY_SOCKETIO = {
    "__init__": "the worker builds the manager (workers/process.py) and hands AsyncServer"
    " the instance; python-socketio never constructs it",
}

Got = list[tuple[str, Any]]


def _base_method(name: str) -> tuple[type, Any] | None:
    """The nearest base of ClusterManager (not ``object``) defining ``name``."""
    for base in ClusterManager.__mro__[1:]:
        if base is object:
            return None
        if name in vars(base):
            return base, vars(base)[name]
    return None


def _own_functions() -> dict[str, Callable[..., Any]]:
    return {name: f for name, f in vars(ClusterManager).items() if inspect.isfunction(f)}


def overrides() -> dict[str, tuple[type, Any]]:
    """ClusterManager's methods that replace a python-socketio one: name -> (base, method)."""
    found = {}
    for name in _own_functions():
        base = _base_method(name)
        if base is not None:
            found[name] = base
    return found


def _calls_super_of_itself(name: str, function: Callable[..., Any]) -> bool:
    """True if ``function`` calls ``super().<name>``: it is meant to override something."""
    code = function.__code__
    return "super" in code.co_names and name in code.co_names


def test_every_method_that_calls_its_super_overrides_one_of_python_socketio() -> None:
    missing = [
        name
        for name, function in _own_functions().items()
        if _calls_super_of_itself(name, function) and _base_method(name) is None
    ]
    assert not missing, f"ClusterManager overrides what {SOCKETIO} does not have: {missing}"
    assert {"pre_connect", "emit", "basic_enter_room"} <= set(overrides())
    assert set(NOT_CALLED_BY_SOCKETIO) <= set(overrides()), "stale allow-list entry"


def _calls_the_base_accepts(signature: inspect.Signature) -> list[tuple[list[Any], dict[str, Any]]]:
    """Argument shapes the base's signature accepts (``self`` excluded)."""
    params = list(signature.parameters.values())[1:]
    p_empty = inspect.Parameter.empty
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    required_args = [p.name for p in params if p.kind in positional and p.default is p.empty]
    all_args = [p.name for p in params if p.kind in positional]
    keyword_only = [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]
    required_kw = [n for n in keyword_only if signature.parameters[n].default is p_empty]
    by_keyword = [p.name for p in params if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    only_positional = [p.name for p in params if p.kind is inspect.Parameter.POSITIONAL_ONLY]
    extra_args = ["extra"] if any(p.kind is p.VAR_POSITIONAL for p in params) else []
    extra_kw = {"extra_keyword": 0} if any(p.kind is p.VAR_KEYWORD for p in params) else {}
    return [
        (required_args, dict.fromkeys(required_kw, 0)),
        (all_args + extra_args, {**dict.fromkeys(keyword_only, 0), **extra_kw}),
        (only_positional, {**dict.fromkeys(by_keyword + keyword_only, 0), **extra_kw}),
    ]


@pytest.mark.parametrize("name", sorted(set(overrides()) - set(NOT_CALLED_BY_SOCKETIO)))
def test_override_accepts_every_call_the_base_accepts(name: str) -> None:
    base, base_method = overrides()[name]
    override = vars(ClusterManager)[name]
    where = f"ClusterManager.{name} vs {base.__module__}.{base.__qualname__}.{name} ({SOCKETIO})"
    assert inspect.iscoroutinefunction(override) == inspect.iscoroutinefunction(base_method), (
        f"{where}: one is a coroutine function and the other is not"
    )
    base_signature = inspect.signature(base_method)
    override_signature = inspect.signature(override)
    for args, kwargs in _calls_the_base_accepts(base_signature):
        try:
            override_signature.bind(None, *args, **kwargs)
        except TypeError as exc:
            raise AssertionError(
                f"{where}: a call with {args} {kwargs} fits {base_signature}"
                f" but not {override_signature}: {exc}"
            ) from None


def recording_class() -> tuple[type[ClusterManager], dict[str, list[str]]]:
    """A ClusterManager subclass whose overrides record the module of each caller."""
    calls: dict[str, list[str]] = {name: [] for name in overrides()}

    def recording(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.iscoroutinefunction(original):

            @functools.wraps(original)
            async def async_wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
                calls[name].append(sys._getframe(1).f_globals.get("__name__", "?"))
                return await original(self, *args, **kwargs)

            return async_wrapper

        @functools.wraps(original)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            calls[name].append(sys._getframe(1).f_globals.get("__name__", "?"))
            return original(self, *args, **kwargs)

        return wrapper

    methods = {name: recording(name, vars(ClusterManager)[name]) for name in overrides()}
    return type("RecordingClusterManager", (ClusterManager,), methods), calls


class OneWorkerMaster:
    """The master's end of one worker's pipe, on a host with that worker only."""

    def __init__(self) -> None:
        self.frames: list[type[Frame]] = []
        self.link: FrameLink | None = None
        # a worker's request is carried out on the host's workers: here, that one worker
        self.rpc = Rpc(self._send, lambda operation: self.rpc.call(operation, 5.0))

    def _send(self, frame: bytes) -> bool:
        assert self.link is not None
        return self.link.send(frame, droppable=False)

    def on_frame(self, frame: Frame, body: bytes) -> None:
        self.frames.append(type(frame))
        match frame:
            case Sync(token):
                self._send(Synced(token).encode())
            case Request():
                self.rpc.on_request(frame)
            case Response():
                self.rpc.on_response(frame)


@asynccontextmanager
async def linked_worker(
    manager_class: type[ClusterManager],
) -> AsyncIterator[tuple[Worker, OneWorkerMaster]]:
    """A worker's frame handling, with a ``manager_class`` manager, linked to a master."""
    master = OneWorkerMaster()
    worker_end, master_end = socket.socketpair()
    worker = Worker(0, Config(workers=1))
    worker.manager = manager_class(worker.link)
    await worker.link.attach(worker_end)
    master.link = await FrameLink.open(master_end, master.on_frame, lambda exc: None, 1 << 20)
    try:
        yield worker, master
    finally:
        worker.link.close()
        master.link.close()


async def connected_client(url: str, got: Got) -> socketio.AsyncClient:
    """A client recording ``(event, first argument)``; it answers ``ping`` with ``pong``."""
    client = socketio.AsyncClient(reconnection=False)
    client.on("*", lambda event, *args: got.append((event, args[0] if args else None)))
    client.on("ping", lambda: "pong")
    await client.connect(url, transports=["websocket"], wait_timeout=10)
    return client


async def exercise(sio: socketio.AsyncServer, url: str, master: OneWorkerMaster) -> None:
    """Connect, enter and leave rooms, emit, close a room, call, disconnect: as an app does."""
    got_a: Got = []
    got_b: Got = []
    a = await connected_client(url, got_a)
    assert Sync in master.frames, "connect returned before the master confirmed it"
    b = await connected_client(url, got_b)
    sid_a, sid_b = a.get_sid(), b.get_sid()
    assert sid_a is not None and sid_b is not None

    await sio.enter_room(sid_a, "room")
    await sio.enter_room(sid_b, "room")
    await sio.emit("news", "to the room", to="room", skip_sid=sid_b)
    await sio.emit("fence", 1)  # per-connection order: what was sent before is in
    await until(lambda: ("fence", 1) in got_a and ("fence", 1) in got_b, what="the fence")
    assert got_a == [("news", "to the room"), ("fence", 1)]
    assert got_b == [("fence", 1)]

    await sio.leave_room(sid_a, "room")
    await sio.close_room("room")
    assert sio.rooms(sid_a) == [sid_a] and sio.rooms(sid_b) == [sid_b]
    assert await sio.call("ping", to=sid_a, timeout=10) == "pong"

    await sio.disconnect(sid_a)  # by the server
    await b.disconnect()  # by the client
    await until(lambda: not a.connected, what="a disconnected")


async def test_every_override_is_called_by_python_socketio() -> None:
    manager_class, calls = recording_class()
    async with linked_worker(manager_class) as (worker, master):
        sio = socketio.AsyncServer(async_mode="aiohttp", client_manager=worker.manager)
        async with serving(sio) as port:
            url = f"http://127.0.0.1:{port}"
            await exercise(sio, url, master)
        await until(lambda: not worker.manager.rooms.get("/"), what="every socket gone")

    not_called = {
        name: callers
        for name, callers in calls.items()
        if name not in NOT_CALLED_BY_SOCKETIO
        and not any(caller.split(".")[0] in CALLER_PACKAGES for caller in callers)
    }
    assert not not_called, (
        f"{SOCKETIO} never called these ClusterManager overrides (name: callers seen): {not_called}"
    )
