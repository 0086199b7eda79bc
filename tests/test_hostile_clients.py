"""Clients that send what engine.io cannot decode: closed at once, counted, logged without a
traceback; the worker and its other clients go on."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
import socketio

from tests.cluster import MasterProcess, until


@contextlib.asynccontextmanager
async def raw_client(cluster: MasterProcess) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    """A websocket speaking engine.io by hand, connected to "/" on worker 0: it can send what
    no real client would."""
    url = cluster.url(0).replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket"
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        await ws.receive()  # engine.io OPEN
        await ws.send_str("40")
        assert str((await ws.receive()).data).startswith("40")
        yield ws


async def test_an_empty_websocket_frame_closes_that_client_and_leaves_no_ghost(
    start_master: Any, clients: Any, redis_client: aioredis.Redis
) -> None:
    # health pings every second: the worker's counters reach the master's metrics promptly
    cluster: MasterProcess = await start_master(
        workers=1, extra=["--worker-health-timeout", "3"]
    ).ready()
    good = await clients(cluster.url(0), "good")
    await good.call("join", "room")
    gauge = 'sio_master_connected_sockets{worker="0"}'
    async with raw_client(cluster) as ws:
        assert cluster.metric(gauge) == 2
        await ws.send_str("")  # python-engineio: "Invalid empty packet received"
        closing = await ws.receive(timeout=5)
        assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), closing
    await until(lambda: cluster.metric(gauge) == 1, what="the bad client's socket forgotten")
    metric = 'sio_master_bad_clients_dropped{worker="0"}'
    await until(lambda: cluster.metric(metric) == 1, what="the bad client counted")
    await redis_client.publish("ch:news", json.dumps({"to": "room", "data": "still here"}))
    await good.wait_count("news", 1)
    assert good.got("news") == [("still here",)]
    assert cluster.log_matches(r"closed a websocket: Invalid empty packet received")
    assert not cluster.log_matches(r"Traceback")


async def test_a_long_polling_post_over_max_payload_is_answered_and_its_session_dropped(
    start_master: Any,
) -> None:
    cluster: MasterProcess = await start_master(workers=1).ready()
    base = cluster.url(0) + "/socket.io/?EIO=4&transport=polling"
    gauge = 'sio_master_connected_sockets{worker="0"}'
    async with aiohttp.ClientSession() as http:
        async with http.get(base) as response:
            sid = json.loads((await response.text())[1:])["sid"]
        session = f"{base}&sid={sid}"
        async with http.post(session, data="40") as response:
            assert response.status == 200
        await until(lambda: cluster.metric(gauge) == 1, what="connected")
        too_big = b"4" + b"x" * 1_000_000  # engine.io's maxPayload is 1,000,000 bytes
        timeout = aiohttp.ClientTimeout(total=10)  # it used to wait forever
        async with http.post(session, data=too_big, timeout=timeout) as response:
            assert response.status == 400
        async with http.get(session) as response:
            assert response.status == 400  # the session is gone
    await until(lambda: cluster.metric(gauge) == 0, what="its socket forgotten")


async def test_a_long_polling_client_s_disconnect_is_answered_at_once(start_master: Any) -> None:
    """python-engineio left the pending GET waiting ~25 s after the client's CLOSE, and
    python-socketio's ``disconnect()`` waits for that GET."""
    cluster: MasterProcess = await start_master(workers=1).ready()
    client = socketio.AsyncClient(reconnection=False)
    await client.connect(cluster.url(0), transports=["polling"], wait_timeout=10)
    started = time.monotonic()
    await client.disconnect()
    took = time.monotonic() - started
    assert took < 5, f"disconnect took {took:.1f} s"  # ~25 s before
    await until(lambda: cluster.metric('sio_master_connected_sockets{worker="0"}') == 0)


async def test_a_binary_packet_announcing_too_many_attachments_closes_that_client(
    start_master: Any, clients: Any, redis_client: aioredis.Redis
) -> None:
    cluster: MasterProcess = await start_master(
        workers=1, extra=["--worker-health-timeout", "3"]
    ).ready()
    good = await clients(cluster.url(0), "good")
    async with raw_client(cluster) as ws:
        await ws.send_str('4599999999-["upload",{"_placeholder":true,"num":0}]')
        messages = [await ws.receive(timeout=5) for _ in range(2)]
        assert messages[-1].type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    await until(lambda: cluster.metric('sio_master_bad_clients_dropped{worker="0"}') == 1)
    await redis_client.publish("ch:news", json.dumps({"data": "on"}))
    await good.wait_count("news", 1)
    assert cluster.log_matches(r"closed a client that sent a packet announcing 99999999 binary")


async def test_a_flood_of_undecodable_packets_costs_one_log_line(
    start_master: Any, clients: Any, redis_client: aioredis.Redis
) -> None:
    """2,000 invalid packets used to write 68,000 lines (a traceback each, twice over)."""
    cluster: MasterProcess = await start_master(workers=1).ready()
    good = await clients(cluster.url(0), "good")
    before = len(cluster.lines)
    sent = 0
    async with raw_client(cluster) as ws:
        for _ in range(2000):
            if ws.closed or ws.exception() is not None:
                break
            await ws.send_str("4x")  # "x" is no Socket.IO packet type
            sent += 1
        closing = await ws.receive(timeout=5)
        while closing.type == aiohttp.WSMsgType.TEXT:  # engine.io's CLOSE, then the frame
            closing = await ws.receive(timeout=5)
        assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    await redis_client.publish("ch:news", json.dumps({"data": "on"}))
    await good.wait_count("news", 1)
    new = cluster.lines[before:]
    assert [line for line in new if "closed a client that sent" in line], new
    assert len(new) <= 3 and not [line for line in new if "Traceback" in line], new[:5]
    print(f"\n{sent} invalid packets sent before the close, {len(new)} log line(s)")


async def test_a_full_worker_refuses_new_connections_and_serves_the_ones_it_has(
    start_master: Any, clients: Any, redis_client: aioredis.Redis
) -> None:
    cluster: MasterProcess = await start_master(
        workers=1, extra=["--max-connections", "2", "--worker-health-timeout", "3"]
    ).ready()
    first = await clients(cluster.url(0), "first")
    second = await clients(cluster.url(0), "second")
    third = socketio.AsyncClient(reconnection=False)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await third.connect(cluster.url(0), transports=["websocket"], wait_timeout=5)
    await until(lambda: cluster.metric('sio_master_connections_refused{worker="0"}') == 1)
    await redis_client.publish("ch:news", json.dumps({"data": 1}))
    await first.wait_count("news", 1)
    await second.wait_count("news", 1)
    await second.close()  # room again: the next one gets in
    await until(lambda: cluster.metric('sio_master_connected_sockets{worker="0"}') == 1)
    await third.connect(cluster.url(0), transports=["websocket"], wait_timeout=5)
    assert third.connected
    await third.disconnect()
