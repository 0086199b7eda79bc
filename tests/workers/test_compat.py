"""workers.compat: the start check on the installed versions, each fast path seen running.

The fast-path tests run a real python-socketio server on aiohttp in this process, set up
as a worker sets it up, with real clients over 127.0.0.1; they read the per-process
counters of :mod:`workers.transport.fast_ws`, so a dependency upgrade that silently disabled a
path makes them fail. The last tests hand the check objects that lack an internal.
"""

from __future__ import annotations

import asyncio
import json
import logging
import platform
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
import socketio
from engineio import packet as eio_packet
from socketio import packet as sio_packet

from sio_cluster.workers import compat, delivery
from sio_cluster.workers.transport import fast_ws
from sio_cluster.workers.transport.fast_ws import Counters
from tests.cluster import serving_in_process, until
from tests.integration.test_websocket_writes import stalled_client

ALL_ON = compat.FastPaths(coalesced_writes=True, direct_writes=True, session_loop=True)


def event(name: str, data: Any) -> str:
    """The Socket.IO packet a delivery carries (what the master sends a worker)."""
    encoded: str = sio_packet.Packet(sio_packet.EVENT, data=[name, data]).encode()
    return encoded


@asynccontextmanager
async def served() -> AsyncIterator[tuple[socketio.AsyncServer, int]]:
    """A python-socketio server on aiohttp, checked and installed as a worker does."""
    sio = socketio.AsyncServer(async_mode="aiohttp")
    async with serving_in_process(sio) as port:
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
    """The client's engine.io sid, once its server websocket accepts direct writes."""
    eio_sid = sio.manager.eio_sid_from_sid(client.get_sid(), "/")

    def idle() -> bool:
        ws = fast_ws.direct_writers.get(eio_sid)
        return ws is not None and ws.idle()

    await until(idle, what="the websocket's engine.io writer to be idle")
    return str(eio_sid)


def deliver(sio: socketio.AsyncServer, to: str, name: str, data: Any) -> None:
    delivery.deliver(sio.manager, "/", [to], [], [event(name, data)])


def test_check_passes_on_the_installed_versions_with_every_fast_path(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="sio_cluster.workers.compat"):
        assert compat.check(socketio.AsyncServer(async_mode="aiohttp")) == ALL_ON
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "coalesced writes and slow-client abort on, direct writes on" in caplog.text


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


async def test_delivery_to_an_idle_websocket_is_written_directly_in_order() -> None:
    async with served() as (sio, port), connected(port) as (client, got):
        await idle_writer(sio, client)
        before = Counters.direct_writes
        for i in range(3):
            deliver(sio, client.get_sid(), "news", i)
        assert Counters.direct_writes == before + 3
        deliver(sio, client.get_sid(), "news", "fence")
        await until(lambda: "fence" in got, what="the fence")
        assert got == [0, 1, 2, "fence"]


async def test_a_delivery_does_not_overtake_packets_engineio_holds() -> None:
    async with served() as (sio, port), connected(port) as (client, got):
        eio_sid = await idle_writer(sio, client)
        queued = eio_packet.Packet(eio_packet.MESSAGE, event("news", "queued"))
        compat.enqueue(compat.eio_sockets(sio)[eio_sid], [queued])
        before = Counters.direct_writes
        deliver(sio, client.get_sid(), "news", "delivered")
        assert Counters.direct_writes == before  # behind the queued packet, not around it
        await until(lambda: len(got) == 2, what="both messages")
        assert got == ["queued", "delivered"]


async def test_packets_of_one_tick_leave_in_one_write() -> None:
    async with served() as (sio, port), connected(port) as (client, got):
        eio_sid = await idle_writer(sio, client)
        flushes, coalesced = Counters.flushes, Counters.coalesced_flushes
        for i in range(5):  # straight to the websocket
            deliver(sio, client.get_sid(), "news", i)
        await until(lambda: len(got) == 5, what="the direct deliveries")
        assert (Counters.flushes - flushes, Counters.coalesced_flushes - coalesced) == (1, 1)

        await idle_writer(sio, client)
        flushes, coalesced = Counters.flushes, Counters.coalesced_flushes
        packets = [eio_packet.Packet(eio_packet.MESSAGE, event("news", i)) for i in range(5, 10)]
        compat.enqueue(compat.eio_sockets(sio)[eio_sid], packets)  # through engine.io's writer
        await until(lambda: len(got) == 10, what="the queued deliveries")
        assert (Counters.flushes - flushes, Counters.coalesced_flushes - coalesced) == (1, 1)
        assert got == list(range(10))


async def test_a_client_that_stops_reading_is_aborted_and_counted() -> None:
    async with served() as (sio, port), connected(port) as (healthy, got):
        stalled = await asyncio.to_thread(stalled_client, port)
        try:

            def members() -> dict[str, str]:
                return dict(compat.room_members(sio.manager, "/", None))

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
                lambda: stalled_eio_sid not in compat.eio_sockets(sio),
                what="the stalled client's engine.io socket to be gone",
            )
            assert len(got) == sent and healthy.connected
        finally:
            stalled.close()


async def test_stop_writer_closes_the_websocket() -> None:
    async with served() as (sio, port), aiohttp.ClientSession() as session:
        url = f"ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket"
        async with session.ws_connect(url) as ws:
            opened = json.loads((await ws.receive_str())[1:])
            compat.stop_writer(compat.eio_sockets(sio)[opened["sid"]])
            message = await asyncio.wait_for(ws.receive(), 10)
            assert message.type is aiohttp.WSMsgType.CLOSE


class BareQueue:
    """The queue calls a delivery makes, without asyncio.Queue's internals."""

    def __init__(self) -> None:
        self.items: list[Any] = []

    def put_nowait(self, item: Any) -> None:
        self.items.append(item)

    def qsize(self) -> int:
        return len(self.items)


class SetRooms(socketio.AsyncManager):
    """A room table holding sets of sids, not ``{sid: eio_sid}``."""

    def basic_enter_room(self, sid: str, namespace: str, room: Any, eio_sid: Any = None) -> None:
        self.rooms.setdefault(namespace, {}).setdefault(room, set()).add(sid)


def probes() -> compat.Probes:
    return compat.probes(socketio.AsyncServer(async_mode="aiohttp"))


def evaluate_warning(p: compat.Probes, caplog: pytest.LogCaptureFixture) -> tuple[Any, str]:
    """The check's answer on ``p``, and its one warning."""
    with caplog.at_level(logging.WARNING, logger="sio_cluster.workers.compat"):
        paths = compat.evaluate(p)
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    return paths, warning


def test_no_queue_getters_turns_direct_writes_off_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    paths, warning = evaluate_warning(replace(probes(), queue=BareQueue()), caplog)
    assert paths == compat.FastPaths(coalesced_writes=True, direct_writes=False, session_loop=True)
    assert warning.startswith(
        f"Python {platform.python_version()} asyncio: Queue has no _getters deque"
    )
    assert "engine.io's queue and writer task" in warning


def test_no_aiohttp_writer_falls_back_to_engineio_websockets_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    paths, warning = evaluate_warning(replace(probes(), aiohttp_ws=object()), caplog)
    assert paths == compat.FastPaths(
        coalesced_writes=False, direct_writes=False, session_loop=False
    )
    assert warning.startswith(
        f"aiohttp {metadata.version('aiohttp')}: WebSocketResponse has no _writer"
    )
    assert "aiohttp's send_str" in warning and "no slow-client abort" in warning


def test_no_websocket_slot_in_engineio_falls_back_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    paths, warning = evaluate_warning(replace(probes(), eio=SimpleNamespace(sockets={})), caplog)
    assert paths == compat.FastPaths(
        coalesced_writes=False, direct_writes=False, session_loop=False
    )
    assert warning.startswith(
        f"python-engineio {metadata.version('python-engineio')}: AsyncServer._async['websocket']"
    )


def test_no_coroutine_receive_on_sockets_leaves_engineio_handler_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    p = probes()
    p.eio_socket.receive = lambda pkt: None  # what workers.transport.ws_session could not await
    paths, warning = evaluate_warning(p, caplog)
    assert paths == compat.FastPaths(coalesced_writes=True, direct_writes=True, session_loop=False)
    assert warning.startswith(
        f"python-engineio {metadata.version('python-engineio')}: sockets have no coroutine"
        " receive()"
    )
    assert "engine.io's own handler" in warning


def test_without_fast_paths_install_leaves_engineio_websockets() -> None:
    sio = socketio.AsyncServer(async_mode="aiohttp")
    fast_ws.install(
        sio.eio,
        compat.FastPaths(coalesced_writes=False, direct_writes=False, session_loop=False),
    )
    assert sio.eio._async["websocket"] is compat.EngineIoWebSocket


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
    with pytest.raises(compat.CompatError) as raised:
        compat.evaluate(replace(probes(), **change))
    text = str(raised.value)
    assert text.startswith("sio-cluster cannot route or deliver on the installed versions")
    assert message in text
    dist = "python-engineio" if "queue" in change else "python-socketio"
    assert f"{dist} {metadata.version(dist)}" in text


def test_redis_urls_are_read_as_redis_py_reads_them() -> None:
    target = compat.parse_redis_url("redis://user:p%40ss@example.com:6380/2")
    assert (target.host, target.port, target.path) == ("example.com", 6380, None)
    assert (target.username, target.password, target.tls) == ("user", "p@ss", None)
    target = compat.parse_redis_url("unix:///tmp/redis.sock?password=pw")
    assert (target.path, target.password, target.tls) == ("/tmp/redis.sock", "pw", None)


def test_rediss_urls_honour_redis_py_tls_options() -> None:
    default = compat.parse_redis_url("rediss://example.com").tls
    assert default is not None
    assert (default.verify_mode, default.check_hostname) == (ssl.CERT_REQUIRED, True)
    lax = compat.parse_redis_url("rediss://example.com?ssl_cert_reqs=none").tls
    assert lax is not None and (lax.verify_mode, lax.check_hostname) == (ssl.CERT_NONE, False)
    named = compat.parse_redis_url("rediss://example.com?ssl_check_hostname=false").tls
    assert named is not None
    assert (named.verify_mode, named.check_hostname) == (ssl.CERT_REQUIRED, False)
    with pytest.raises(ValueError, match="ssl_cert_reqs"):
        compat.parse_redis_url("rediss://example.com?ssl_cert_reqs=sometimes")


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_rediss_urls_load_the_named_certificates(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-subj", "/CN=sio-cluster-test", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    url = f"rediss://example.com?ssl_ca_certs={cert}&ssl_certfile={cert}&ssl_keyfile={key}"
    context = compat.parse_redis_url(url).tls
    assert context is not None
    subjects = [ca["subject"] for ca in context.get_ca_certs()]
    assert ((("commonName", "sio-cluster-test"),),) in subjects


def test_recovery_checks_the_internals_it_hooks_into() -> None:
    sio = socketio.AsyncServer(async_mode="aiohttp")
    compat.check_recovery(sio)  # the installed versions have them
    sio._send_packet = lambda eio_sid, pkt: None  # a version where it is no coroutine
    del sio.manager.pending_connect
    with pytest.raises(compat.CompatError, match="_send_packet, manager.pending_connect"):
        compat.check_recovery(sio)
