"""A client that stops reading is cut off and counted; the others keep receiving."""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from tests.cluster import MasterProcess, until


def masked_text_frame(text: str) -> bytes:
    payload = text.encode()
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return struct.pack("!BB", 0x81, 0x80 | len(payload)) + mask + masked


def stalled_client(port: int) -> socket.socket:
    """Open a Socket.IO connection by hand (raw websocket), then never read again."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    received = b""
    while b"\r\n\r\n" not in received or b'"sid"' not in received.split(b"\r\n\r\n", 1)[1]:
        received += sock.recv(4096)
    sock.sendall(masked_text_frame("40"))
    while b"40{" not in received:
        received += sock.recv(4096)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return sock


async def test_slow_client_is_aborted_and_counted_while_others_receive(
    start_master: Any, clients: Any, redis_client: aioredis.Redis
) -> None:
    cluster: MasterProcess = await start_master(
        workers=1, extra=["--worker-health-timeout", "1"]
    ).ready()
    healthy = await clients(cluster.url(0), "healthy")
    stalled = stalled_client(cluster.port_of(0))
    await until(lambda: cluster.metric('sio_master_connected_sockets{worker="0"}') == 2)
    try:
        payload = "x" * 65536
        sent = 0
        for _ in range(40):  # at most ~26 MB; stops once the worker gave up on the client
            async with redis_client.pipeline(transaction=False) as pipe:
                for _ in range(10):
                    pipe.publish("ch:bulk", json.dumps({"data": payload}))
                await pipe.execute()
            sent += 10
            await healthy.wait_count("bulk", sent, timeout=30)
            if cluster.metric('sio_master_connected_sockets{worker="0"}') == 1:
                break
        # Both fail if the abort is silently disabled (workers.patches.checks degraded the websocket
        # class, say): engine.io would keep the client, its queue growing without bound.
        await until(
            lambda: cluster.metric('sio_master_slow_clients_dropped{worker="0"}') == 1,
            timeout=10,
            what="the slow client counted",
        )
        await until(
            lambda: cluster.metric('sio_master_connected_sockets{worker="0"}') == 1,
            timeout=10,
            what="the slow client disconnected",
        )
        assert len(healthy.got("bulk")) == sent
        assert healthy.client.connected
    finally:
        stalled.close()


async def test_permessage_deflate_clients_still_get_every_message(
    cluster: MasterProcess, redis_client: aioredis.Redis
) -> None:
    url = f"ws://127.0.0.1:{cluster.port_of(1)}/socket.io/?EIO=4&transport=websocket"
    async with aiohttp.ClientSession() as session, session.ws_connect(url, compress=15) as ws:
        assert ws.compress == 15  # the server accepted permessage-deflate
        assert (await ws.receive_str()).startswith("0")
        await ws.send_str("40")
        assert (await ws.receive_str()).startswith("40{")
        for i in range(3):
            await redis_client.publish("ch:zipped", json.dumps({"data": ["y" * 5000, i]}))
        got: list[str] = []
        while len(got) < 3:
            text = await ws.receive_str()
            if text == "2":
                await ws.send_str("3")
            else:
                got.append(text)
        assert got == [f'42["zipped",["{"y" * 5000}",{i}]]' for i in range(3)]
