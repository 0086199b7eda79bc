"""workers.patches: the start checks on the installed versions, each patch seen taking hold;
the delivery path's writes seen running.

The write tests run a real python-socketio server in this process, set up as a worker sets
it up (the connection layer in front of aiohttp), with real clients over 127.0.0.1; they
read the per-process counters of :mod:`workers.transport.fast_ws`. The check tests hand the
check objects that lack an internal.
"""

from __future__ import annotations

import ast
import asyncio
import importlib
import importlib.util
import inspect
import logging
import textwrap
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import socketio
import uvloop
from aiohttp import web
from engineio import packet as eio_packet
from socketio import packet as sio_packet

from bench.in_process import serving
from sio_cluster.workers import delivery
from sio_cluster.workers.patches import checks
from sio_cluster.workers.patches import engineio as eio_patches
from sio_cluster.workers.patches import socketio as sio_patches
from sio_cluster.workers.patches.versions import CompatError
from sio_cluster.workers.transport import fast_ws
from sio_cluster.workers.transport.fast_ws import Counters
from tests.cluster import REPO, until
from tests.integration.test_websocket_writes import stalled_client


def event(name: str, data: Any) -> str:
    """The Socket.IO packet a delivery carries (what the master sends a worker)."""
    encoded: str = sio_packet.Packet(sio_packet.EVENT, data=[name, data]).encode()
    return encoded


@asynccontextmanager
async def served() -> AsyncIterator[tuple[socketio.AsyncServer, int]]:
    """A python-socketio server, checked and served as a worker serves it."""
    sio = socketio.AsyncServer(async_mode="aiohttp")
    async with serving(sio) as port:
        yield sio, port


@asynccontextmanager
async def connected(port: int) -> AsyncIterator[tuple[socketio.AsyncClient, list[Any]]]:
    """A python-socketio client on a websocket, recording the data of each ``news`` event."""
    got: list[Any] = []
    client = socketio.AsyncClient()
    client.on("news", got.append)
    await client.connect(f"http://127.0.0.1:{port}", transports=["websocket"], wait_timeout=10)
    try:
        yield client, got
    finally:
        await client.disconnect()


async def idle_writer(sio: socketio.AsyncServer, client: socketio.AsyncClient) -> str:
    """The client's engine.io sid, once its server websocket accepts direct writes (the
    layer's connection, open)."""
    eio_sid = sio.manager.eio_sid_from_sid(client.get_sid(), "/")

    def idle() -> bool:
        ws = fast_ws.direct_writers.get(eio_sid)
        return ws is not None and ws.idle()

    await until(idle, what="the websocket's engine.io writer to be idle")
    return str(eio_sid)


def deliver(sio: socketio.AsyncServer, to: str, name: str, data: Any) -> None:
    delivery.deliver(sio.manager, "/", [to], [], [event(name, data)])


def test_check_passes_on_the_installed_versions(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="sio_cluster.workers.patches.checks"):
        checks.check(socketio.AsyncServer(async_mode="aiohttp"))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize(
    "parts",
    [
        ['2["news","h\u00e9"]'],
        ['2["x",' + '"' + "y" * 200 + '"]'],
        ['2["x",' + '"' + "y" * 70000 + '"]'],
        ['51-["bin",{"_placeholder":true,"num":0}]', b"\x00\xff" * 100],
    ],
    ids=["short", "126-byte length", "64-bit length", "binary attachment"],
)
@pytest.mark.parametrize("eio3", [False, True], ids=["eio4", "eio3"])
def test_message_frames_are_what_engineio_packets_encode_to(
    parts: list[str | bytes], eio3: bool
) -> None:
    """Direct writes build frames from the parts, skipping engine.io's packet objects:
    byte for byte what engine.io's own encoding of those packets, framed, would send."""
    expected = b""
    for part in parts:
        data = eio_packet.Packet(eio_packet.MESSAGE, part).encode()
        if isinstance(data, str):
            expected += fast_ws.frame(data.encode(), 0x1)
        else:
            expected += fast_ws.frame(b"\x04" + data if eio3 else data, 0x2)
    assert fast_ws.message_frames(parts, eio3=eio3) == expected


async def test_deliveries_of_one_tick_leave_in_one_write_in_order() -> None:
    async with served() as (sio, port), connected(port) as (client, got):
        await idle_writer(sio, client)
        flushes, coalesced = Counters.flushes, Counters.coalesced_flushes
        for i in range(3):
            deliver(sio, client.get_sid(), "news", i)
        await until(lambda: len(got) == 3, what="the three deliveries")
        assert (Counters.flushes - flushes, Counters.coalesced_flushes - coalesced) == (1, 1)
        assert got == [0, 1, 2]


async def test_a_delivery_does_not_overtake_packets_put_on_the_session_before_it() -> None:
    """Packets put on a session's queue (python-socketio's emits, recovery's replays) and a
    delivery's direct write in the same tick leave in the order they were given."""
    async with served() as (sio, port), connected(port) as (client, got):
        eio_sid = await idle_writer(sio, client)
        queued = eio_packet.Packet(eio_packet.MESSAGE, event("news", "queued"))
        eio_patches.enqueue(eio_patches.eio_sockets(sio)[eio_sid], [queued])
        deliver(sio, client.get_sid(), "news", "delivered")
        await until(lambda: len(got) == 2, what="both messages")
        assert got == ["queued", "delivered"]


async def test_a_client_that_stops_reading_is_aborted_and_counted() -> None:
    async with served() as (sio, port), connected(port) as (healthy, got):
        stalled = await asyncio.to_thread(stalled_client, port)
        try:

            def members() -> dict[str, str]:
                return dict(sio_patches.room_members(sio.manager, "/", None))

            await until(lambda: len(members()) == 2, what="both clients connected")
            stalled_eio_sid = next(e for s, e in members().items() if s != healthy.get_sid())
            dropped = Counters.dropped
            part = event("news", "x" * 65536)
            sent = 0
            while Counters.dropped == dropped and sent < 400:  # at most ~26 MB
                for _ in range(16):
                    delivery.deliver(sio.manager, "/", None, [], [part])
                sent += 16

                def caught_up(expected: int = sent) -> bool:
                    return len(got) == expected

                await until(caught_up, timeout=30, what="the healthy client")
            assert Counters.dropped == dropped + 1
            await until(
                lambda: stalled_eio_sid not in eio_patches.eio_sockets(sio),
                what="the stalled client's engine.io socket to be gone",
            )
            assert len(got) == sent and healthy.connected
        finally:
            stalled.close()


class SetRooms(socketio.AsyncManager):
    """A room table holding sets of sids, not ``{sid: eio_sid}``."""

    def basic_enter_room(self, sid: str, namespace: str, room: Any, eio_sid: Any = None) -> None:
        self.rooms.setdefault(namespace, {}).setdefault(room, set()).add(sid)


def probes() -> checks.Probes:
    return checks.probes(socketio.AsyncServer(async_mode="aiohttp"))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"room_table": object()}, "is not laid out as rooms[namespace][room][sid] = eio_sid"),
        ({"room_table": SetRooms()}, "is not laid out as rooms[namespace][room][sid] = eio_sid"),
        ({"manager": SimpleNamespace()}, "the room table (manager.rooms) is missing"),
        ({"queue": object()}, "sockets have no queue (socket.queue)"),
    ],
)
def test_a_missing_internal_that_routing_needs_fails_the_worker(
    change: dict[str, Any], message: str
) -> None:
    with pytest.raises(CompatError) as raised:
        checks.evaluate(replace(probes(), **change))
    text = str(raised.value)
    assert text.startswith("sio-cluster cannot route or deliver on the installed versions")
    assert message in text
    dist = "python-engineio" if "queue" in change else "python-socketio"
    assert f"{dist} {metadata.version(dist)}" in text


def test_recovery_checks_the_internals_it_hooks_into() -> None:
    sio = socketio.AsyncServer(async_mode="aiohttp")
    checks.check_recovery(sio)  # the installed versions have them
    sio._send_packet = lambda eio_sid, pkt: None  # a version where it is no coroutine
    del sio.manager.pending_connect
    with pytest.raises(CompatError, match="_send_packet, manager.pending_connect"):
        checks.check_recovery(sio)


async def test_the_installed_patches_take_hold_when_exercised() -> None:
    # the installed versions do what the patches rely on, with every option's hooks too
    await checks.exercise(recovery=True, eio3=True, v09=True)


def test_v09_checks_the_internals_it_relies_on() -> None:
    sio = socketio.AsyncServer(async_mode="aiohttp")
    checks.check_v09(sio)  # the installed versions have them
    sio.eio._cors_headers = None  # a version without it
    with pytest.raises(CompatError, match="--allow-v09 cannot work.*_cors_headers"):
        checks.check_v09(sio)


def test_the_patches_take_hold_on_uvloop_as_in_a_worker() -> None:
    uvloop.run(checks.exercise(recovery=True, eio3=True, v09=True))


def test_v09_writes_go_straight_to_aiohttp_s_transport(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="sio_cluster.workers.patches.checks"):
        assert checks.v09_direct_writes()
    assert not caplog.records


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ("disconnect_without_waiting", "AsyncServer.disconnect waits for the client"),
        ("guard_messages", "was not guarded (refused [])"),
        ("refuse_connections_over", "its connect handler was not wrapped"),
        ("intercept_connect", "a CONNECT did not pass through AsyncServer._handle_connect"),
    ],
)
async def test_a_patch_that_does_not_take_hold_fails_the_worker(
    monkeypatch: pytest.MonkeyPatch, patch: str, message: str
) -> None:
    """A patch that installs without error but changes nothing is caught by its exercise,
    which an attribute check would pass."""
    monkeypatch.setattr(checks, patch, lambda *args: None)
    with pytest.raises(CompatError) as raised:
        await checks.exercise(recovery=True, eio3=True)
    text = str(raised.value)
    assert text.startswith("sio-cluster's patches do not take hold on the installed versions")
    assert message in text


LAYERS = ("common", "wire", "legacy_store", "master", "workers")
DEPENDENCIES = ("engineio", "socketio", "aiohttp", "redis")


def private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def dependency_internals() -> set[str]:
    """The private attribute and method names the dependencies define."""
    names: set[str] = set()
    for dist in DEPENDENCIES:
        spec = importlib.util.find_spec(dist)
        assert spec is not None and spec.origin is not None
        for path in Path(spec.origin).parent.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                    name = node.attr
                elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    name = node.name
                else:
                    continue
                if private(name):
                    names.add(name)
    return names


def dependency_members(cls: type) -> set[str]:
    """The private names ``cls`` inherits from a dependency's classes: their methods and
    class attributes, and the attributes their code sets on ``self``."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if klass.__module__.split(".")[0] not in DEPENDENCIES:
            continue
        names.update(name for name in vars(klass) if private(name))
        for node in ast.walk(ast.parse(textwrap.dedent(inspect.getsource(klass)))):
            if isinstance(node, ast.Attribute) and private(node.attr):
                names.add(node.attr)
    return names


def extends_dependency(node: ast.ClassDef) -> bool:
    return any(
        ast.unparse(base).split(".")[0] in {"web", "socketio", "engineio", "aioredis", "redis"}
        or "patches" in ast.unparse(base)
        for base in node.bases
    )


def private_accesses(
    source: str, internals: set[str], inherited: Callable[[str], set[str]]
) -> list[tuple[int, str]]:
    """``(line, name)`` of each access of a dependency internal in ``source``: ``x._name``
    and ``getattr(x, "_name")`` for a name a dependency defines, and ``self._name`` in a class
    built on a dependency's class for a name it inherits (``inherited(class name)``)."""
    tree = ast.parse(source)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and extends_dependency(node):
            members = inherited(node.name)
            for inner in ast.walk(node):
                if (
                    isinstance(inner, ast.Attribute)
                    and isinstance(inner.value, ast.Name)
                    and inner.value.id == "self"
                    and inner.attr in members
                ):
                    found.append((inner.lineno, inner.attr))
        elif (
            isinstance(node, ast.Attribute)
            and private(node.attr)
            and node.attr in internals
            and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
        ):
            found.append((node.lineno, node.attr))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "hasattr", "setattr")
            and len(node.args) > 1
            and isinstance(node.args[1], ast.Constant)
            and node.args[1].value in internals
        ):
            found.append((node.lineno, node.args[1].value))
    return found


def test_no_private_dependency_access_outside_the_patches() -> None:
    """Every private attribute of engine.io, python-socketio, aiohttp and redis-py the project
    reads or writes is in workers/patches/ (redis-py's: none)."""
    internals = dependency_internals()
    found = set()
    for layer in LAYERS:
        for path in sorted((REPO / layer).rglob("*.py")):
            relative = path.relative_to(REPO)
            if "patches" in relative.parts or path.name == "__main__.py":
                continue
            module = ".".join(("sio_cluster", *relative.with_suffix("").parts))

            def inherited(name: str, module: str = module) -> set[str]:
                return dependency_members(getattr(importlib.import_module(module), name))

            for line, name in private_accesses(path.read_text(), internals, inherited):
                found.add(f"{relative}:{line} {name}")
    assert found == set()
    # what it catches: the header deadline's site before it kept its own listening server
    before = "class DeadlineSite(web.BaseSite):\n    def start(self):\n        self._server = 1\n"
    assert private_accesses(before, internals, lambda name: dependency_members(web.BaseSite)) == [
        (3, "_server")
    ]


PATCHED_INTERNALS = {
    "_cors_headers",  # engine.io: CORS headers of a 0.9 client's answers
    "_handle_connect",  # python-socketio: a namespace CONNECT (recovery, Engine.IO 3)
    "_handle_eio_message",  # python-socketio: its message handler, guarded
    "_send_packet",  # python-socketio: sent packets (recovery's pid, Engine.IO 3's downgrade)
    "_writer",  # aiohttp: the transport under a 0.9 client's websocket
    "eio.disconnect (replaced)",  # engine.io's waits for a long-polling client to fetch
    "sio._handle_connect (replaced)",
    "sio._send_packet (replaced)",
}


def patched_internals(source: str, internals: set[str]) -> set[str]:
    """The dependency internals ``source`` reads (their names), and the dependency attributes
    it replaces (``"owner.name (replaced)"``, for an assignment to a dependency object's or
    class's attribute)."""
    found = {name for _, name in private_accesses(source, internals, lambda name: set())}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if (
                    isinstance(target, ast.Attribute)
                    and isinstance(target.value, ast.Name)
                    and target.value.id in ("AsyncSocket", "AsyncServer", "eio", "sio")
                ):
                    found.add(f"{target.value.id}.{target.attr} (replaced)")
    return found


def test_the_patches_read_and_replace_these_internals_only() -> None:
    """The inventory of workers/patches/: a new internal is a decision, made here and in the
    module's docstring (issue 26 took it from 20, four of them class patches of engine.io's
    socket, to these 8)."""
    internals = dependency_internals()
    found: set[str] = set()
    for path in sorted((REPO / "workers" / "patches").glob("*.py")):
        found |= patched_internals(path.read_text(), internals)
    assert found == PATCHED_INTERNALS
    # what it catches: a class patch of engine.io's socket, as timer pings were
    assert patched_internals("AsyncSocket.schedule_ping = f\n", internals) == {
        "AsyncSocket.schedule_ping (replaced)"
    }


def test_nothing_but_the_workers_imports_the_workers() -> None:
    """The Redis URL and TLS parsing and the Sentinel pool are the master's (common/redis):
    the master, the wire and the store never load the workers' patched dependencies."""
    found = []
    for layer in ("common", "wire", "legacy_store", "master"):
        for path in sorted((REPO / layer).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom):
                    names = [node.module or ""]
                elif isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                else:
                    continue
                found += [
                    f"{path.relative_to(REPO)}:{node.lineno} {name}"
                    for name in names
                    if name.startswith("sio_cluster.workers")
                ]
    assert found == []
