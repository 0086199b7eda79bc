"""The workers' own connection layer (``workers/conn``), spoken to byte by byte.

Every other integration test reaches the layer through real clients (python-socketio's,
Node's socket.io-client, aiohttp's websocket); here a hand-written RFC 6455 client sends what
those never do: fragments with control frames between them, pings, close codes, frames a
server must refuse, pipelined frames, and each is answered as the RFC says. ``--ws aiohttp``
puts aiohttp and engine.io back in front of the same clients.
"""

from __future__ import annotations

import asyncio
import json
import struct
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import aiohttp
import pytest
import redis.asyncio as aioredis
import socketio

from tests.cluster import MasterProcess, until
from tests.raw_ws import RawWebsocket, client_frame


@asynccontextmanager
async def connected(port: int) -> AsyncIterator[RawWebsocket]:
    ws = await RawWebsocket.open(port)
    try:
        yield ws
    finally:
        ws.close()


async def test_a_session_over_the_layer_frame_by_frame(cluster: MasterProcess) -> None:
    async with connected(cluster.port_of(0)) as ws:
        assert b"aiohttp" not in ws.response_head  # the layer answered, not aiohttp
        opened = await ws.packet()
        assert opened[0] == "0"
        fields = json.loads(opened[1:])
        assert fields["upgrades"] == [] and fields["maxPayload"] == 1_000_000
        assert (fields["pingInterval"], fields["pingTimeout"]) == (25000, 20000)
        ws.text("40")
        assert (await ws.packet()).startswith('40{"sid":')
        # a message in three fragments, a ping between two of them: one event, one pong
        message = b'420["join","frag"]'
        ws.send(message[:5], 0x1, fin=False)
        ws.send(b"hi", 0x9)
        ws.send(message[5:10], 0x0, fin=False)
        ws.send(message[10:], 0x0)
        assert await ws.frame() == (0x80, 0xA, b"hi")
        assert await ws.packet() == '430[["frag"]]'
        # two messages in one write, right after each other
        ws.writer.write(
            client_frame(b'421["join","a"]', 0x1) + client_frame(b'422["join","b"]', 0x1)
        )
        # (python-socketio runs each event in a task of its own: either may join first)
        answers = sorted([await ws.packet(), await ws.packet()])
        assert [answer[:3] for answer in answers] == ["431", "432"]
        ws.text('423["join","c"]')
        assert await ws.packet() == '433[["a","b","c","frag"]]'
        # the client closes: the server answers with the same code
        ws.send(struct.pack("!H", 4321) + b"bye", 0x8)
        assert await ws.closed_with() == 4321
        assert await ws.reader.read() == b""


async def test_frames_sent_with_the_handshake_are_read_after_it(cluster: MasterProcess) -> None:
    # a client may not send frames before the 101, but one that does loses nothing
    ws = await RawWebsocket.open(cluster.port_of(0), then=client_frame(b"40", 0x1))
    try:
        assert (await ws.packet())[0] == "0"
        assert (await ws.packet()).startswith('40{"sid":')
    finally:
        ws.close()


VIOLATIONS = {
    "an unmasked frame": (client_frame(b"40", 0x1, masked=False), 1002),
    "text that is not UTF-8": (client_frame(b"4\xff\xfe", 0x1), 1007),
    "a message over maxPayload": (client_frame(b"4" + b"x" * 1_000_000, 0x1), 1009),
    "an unknown engine.io packet": (client_frame(b"9hello", 0x1), 1002),
    "a continuation of nothing": (client_frame(b"x", 0x0), 1002),
    "a compressed frame with no deflate agreed": (client_frame(b"x", 0x1, rsv=0x40), 1002),
}


async def test_what_the_rfc_refuses_closes_with_its_code_and_is_counted(
    cluster: MasterProcess, clients: Any, redis_client: aioredis.Redis
) -> None:
    bystander = await clients(cluster.url(0), "bystander")
    for n, (name, (data, code)) in enumerate(VIOLATIONS.items(), start=1):
        async with connected(cluster.port_of(0)) as ws:
            assert (await ws.packet())[0] == "0"
            ws.text("40")
            assert (await ws.packet()).startswith("40")
            ws.writer.write(data)
            assert await ws.closed_with() == code, name
            # broadcasts while it ends write nothing more to it (and log nothing)
            await redis_client.publish("ch:meanwhile", json.dumps({"data": n}))
        await until(
            lambda: cluster.metric('sio_master_bad_clients_dropped{worker="0"}') == n,  # noqa: B023
            what=f"{name} counted",
        )
    await until(lambda: cluster.metric('sio_master_connected_sockets{worker="0"}') == 1)
    assert await bystander.client.call("join", "still-here", timeout=10) == ["still-here"]
    assert bystander.got("meanwhile") == [(n,) for n in range(1, len(VIOLATIONS) + 1)]
    assert not cluster.log_matches("Traceback|Cannot call write"), cluster.lines[-20:]


async def test_permessage_deflate_both_ways(
    cluster: MasterProcess, redis_client: aioredis.Redis
) -> None:
    async with connected(cluster.port_of(0)) as plain:
        assert b"Sec-WebSocket-Extensions" not in plain.response_head  # nothing offered
    ws = await RawWebsocket.open(
        cluster.port_of(0),
        extra="Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n",
    )
    try:
        assert (
            b"Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover;"
            b" client_no_context_takeover\r\n" in ws.response_head
        )
        assert (await ws.packet())[0] == "0"
        ws.text("40")
        assert (await ws.packet()).startswith("40")
        # the client compresses each message alone (told client_no_context_takeover), one of
        # them in two fragments
        room = "r" * 3000
        for i in range(2):
            compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
            data = compressor.compress(f'42{i}["join","{room}"]'.encode())
            data += compressor.flush(zlib.Z_SYNC_FLUSH)[:-4]
            if i == 0:
                ws.send(data, 0x1, rsv=0x40)
            else:
                ws.send(data[:10], 0x1, rsv=0x40, fin=False)
                ws.send(data[10:], 0x0)
        # the answers are over 1,024 bytes: compressed, each on its own (no context kept)
        for i in range(2):
            flags, opcode, payload = await ws.frame()
            assert (flags, opcode) == (0xC0, 0x1)
            inflated = zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff")
            assert inflated.decode() == f'43{i}[["{room}"]]'
        # a small message goes uncompressed; a large broadcast compressed
        await redis_client.publish("ch:small", json.dumps({"data": "tiny"}))
        assert await ws.packet() == '42["small","tiny"]'
        await redis_client.publish("ch:large", json.dumps({"data": "z" * 5000}))
        flags, opcode, payload = await ws.frame()
        assert (flags, opcode) == (0xC0, 0x1)
        inflated = zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff")
        assert inflated.decode() == '42["large","' + "z" * 5000 + '"]'
    finally:
        ws.close()


async def test_a_refused_handshake_is_answered_401_with_the_reason(
    start_master: Any,
) -> None:
    cluster: MasterProcess = await start_master(workers=1, extra=["--max-connections", "1"]).ready()
    async with connected(cluster.port_of(0)) as first:
        assert (await first.packet())[0] == "0"
        second = await RawWebsocket.open(cluster.port_of(0))
        try:
            assert second.response_head.startswith(b"HTTP/1.1 401")
            assert await second.reader.read() == b'"this worker is full"'
        finally:
            second.close()
    await until(lambda: cluster.metric('sio_master_connections_refused{worker="0"}') == 1)


async def test_requests_the_layer_does_not_take_go_to_aiohttp(cluster: MasterProcess) -> None:
    port = cluster.port_of(0)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
            assert response.status == 200
        # a bad origin: engine.io's own refusal, as before the layer
        ws = await RawWebsocket.open(port, extra="Origin: http://elsewhere.invalid\r\n")
        try:
            assert ws.response_head.startswith(b"HTTP/1.1 400")
        finally:
            ws.close()


async def test_the_upgrade_of_a_polling_session_moves_it_to_the_layer(
    cluster: MasterProcess, redis_client: aioredis.Redis
) -> None:
    port = cluster.port_of(0)
    base = f"http://127.0.0.1:{port}/socket.io/?EIO=4&transport=polling"
    async with aiohttp.ClientSession() as session:
        async with session.get(base) as response:
            opened = json.loads((await response.text())[1:])
        assert opened["upgrades"] == ["websocket"]
        polling = f"{base}&sid={opened['sid']}"
        async with session.post(polling, data="40") as response:
            assert response.status == 200
        async with session.get(polling) as response:
            sid = json.loads((await response.text())[2:])["sid"]  # the CONNECT answer
        async with session.post(polling, data='420["join","up"]') as response:
            assert response.status == 200
        async with session.get(polling) as response:
            assert await response.text() == '430[["up"]]'
        # a poll waits while the websocket is probed; the probe's answer ends it (NOOP)
        waiting = asyncio.ensure_future(session.get(polling))
        ws = await RawWebsocket.open(port, sid=opened["sid"])
        try:
            assert ws.response_head.startswith(b"HTTP/1.1 101")
            assert b"aiohttp" not in ws.response_head  # the layer took the upgrade
            ws.text("2probe")
            assert await ws.packet() == "3probe"
            async with await waiting as response:
                assert await response.text() == "6"
            ws.text("5")
            # the same socket, its rooms and its acks, now over the websocket
            await redis_client.publish("ch:news", json.dumps({"to": "up", "data": "hi"}))
            assert await ws.packet() == '42["news","hi"]'
            ws.text('421["join","more"]')
            assert await ws.packet() == '431[["more","up"]]'
            async with session.get(polling) as response:
                assert response.status == 400  # the session is the websocket's now
            assert cluster.metric('sio_master_connected_sockets{worker="0"}') == 1
        finally:
            ws.close()
        await until(lambda: cluster.metric('sio_master_connected_sockets{worker="0"}') == 0)
    assert sid


@pytest.mark.parametrize("layer", ["own", "aiohttp"])
async def test_both_layers_serve_the_same_clients(
    start_master: Any, clients: Any, redis_client: aioredis.Redis, layer: str
) -> None:
    cluster: MasterProcess = await start_master(workers=1, extra=["--ws", layer]).ready()
    async with connected(cluster.port_of(0)) as ws:
        assert (b"aiohttp" in ws.response_head) == (layer == "aiohttp")
    client = await clients(cluster.url(0), "client")
    await redis_client.publish("ch:hello", json.dumps({"data": [1, "two"]}))
    await client.wait_count("hello", 1)
    assert client.got("hello") == [([1, "two"],)]


async def test_the_layer_behind_the_one_port(start_master: Any, clients: Any) -> None:
    cluster: MasterProcess = await start_master(workers=2, one_port=True).ready()
    sids = []
    for _ in range(4):  # the master spreads them: both workers' layers answer
        async with connected(cluster.port) as ws:
            assert b"aiohttp" not in ws.response_head
            sids.append(json.loads((await ws.packet())[1:])["sid"])
            ws.text("40")
            assert (await ws.packet()).startswith("40")
            # a request of this session comes back to its worker (the sid's prefix says
            # which), whose engine.io refuses HTTP for a websocket session
            async with aiohttp.ClientSession() as session:
                url = f"http://127.0.0.1:{cluster.port}/socket.io/?EIO=4&transport=polling"
                async with session.get(f"{url}&sid={sids[-1]}") as response:
                    assert (response.status, await response.text()) == (
                        400,
                        '"Unexpected HTTP request"',
                    )
    assert len({sid[:2] for sid in sids}) == 2, sids


async def test_an_upgrade_of_a_session_closed_meanwhile_is_refused(
    cluster: MasterProcess, redis_client: aioredis.Redis
) -> None:
    port = cluster.port_of(0)
    base = f"http://127.0.0.1:{port}/socket.io/?EIO=4&transport=polling"
    async with aiohttp.ClientSession() as session:
        async with session.get(base) as response:
            sid = json.loads((await response.text())[1:])["sid"]
        polling = f"{base}&sid={sid}"
        async with session.post(polling, data="40") as response:
            assert response.status == 200
        async with session.get(polling) as response:
            assert (await response.text()).startswith("40")
        ws = await RawWebsocket.open(port, sid=sid)
        try:
            ws.text("2probe")
            assert await ws.packet() == "3probe"
            async with session.post(polling, data="1") as response:  # the client leaves
                assert response.status == 200
            await until(lambda: cluster.metric('sio_master_connected_sockets{worker="0"}') == 0)
            ws.text("5")  # too late: the session is gone, the websocket must not revive it
            assert await ws.closed_with() == 1000
            await redis_client.publish("ch:after", json.dumps({"data": "x"}))
            await redis_client.publish("ch:after", json.dumps({"data": "y"}))
            assert cluster.metric('sio_master_connected_sockets{worker="0"}') == 0
        finally:
            ws.close()


async def test_a_client_that_closes_without_reading_is_let_go(
    cluster: MasterProcess, clients: Any, redis_client: aioredis.Redis
) -> None:
    """Its close frame is answered, its session ends at once, and the connection, whose
    unread frames the server cannot write, is aborted shortly after."""
    fence = await clients(cluster.url(0), "fence")
    ws = await RawWebsocket.open(cluster.port_of(0), rcvbuf=4096)
    try:
        assert (await ws.packet())[0] == "0"
        ws.text("40")
        assert (await ws.packet()).startswith("40")
        cast(asyncio.Transport, ws.writer.transport).pause_reading()  # it reads no more
        for _ in range(50):  # 3.3 MB it never reads (under the 4 MiB slow-client limit)
            await redis_client.publish("ch:bulk", json.dumps({"data": "b" * 65536}))
        await fence.wait_count("bulk", 50, timeout=20)  # so the worker has written them too
        ws.send(struct.pack("!H", 1000), 0x8)
        await until(
            lambda: cluster.metric('sio_master_connected_sockets{worker="0"}') == 1,
            timeout=10,
            what="its session ended (the fence's stays)",
        )
    finally:
        ws.close()


async def test_a_head_over_16_kib_is_aiohttp_s_to_refuse(cluster: MasterProcess) -> None:
    ws = await RawWebsocket.open(cluster.port_of(0), extra=f"X-Big: {'a' * 60_000}\r\n")
    try:
        assert ws.response_head.startswith(b"HTTP/1.0 400") or ws.response_head.startswith(
            b"HTTP/1.1 400"
        ), ws.response_head[:100]
    finally:
        ws.close()


async def test_an_app_s_aiohttp_middlewares_guard_the_handshakes_too(start_master: Any) -> None:
    """The layer steps aside for an aiohttp app with middlewares of its own: they run for
    every request, the websocket handshakes included, as before the layer."""
    cluster: MasterProcess = await start_master(
        workers=1, app="tests.apps.guarded_aiohttp_app:app"
    ).ready()
    await cluster.wait_log(r"aiohttp middlewares \(guard\) guard its requests")
    ws = await RawWebsocket.open(cluster.port_of(0))
    try:
        assert ws.response_head.startswith(b"HTTP/1.1 403")
    finally:
        ws.close()
    client = socketio.AsyncClient(reconnection=False)
    await client.connect(
        cluster.url(0) + "?key=open-sesame", transports=["websocket"], wait_timeout=10
    )
    try:
        assert await client.call("whoami", timeout=10) == "alice"
    finally:
        await client.disconnect()


async def test_engine_io_3_with_an_app_s_own_middlewares_is_refused_in_one_line(
    start_master: Any,
) -> None:
    """python-engineio, which serves an app with middlewares of its own, has no Engine.IO 3:
    the worker says so at start instead of refusing every old client."""
    master: MasterProcess = start_master(
        workers=1, app="tests.apps.guarded_aiohttp_app:app", extra=["--allow-eio3"]
    )
    assert await master.start_failure() == (
        "--allow-eio3 needs the worker's connection layer, which serves Engine.IO 3"
        " (python-engineio does not): not with --ws aiohttp, nor with an aiohttp app"
        " whose own middlewares guard the handshakes"
    )
