"""engine.io's heartbeat as the workers run it (PINGs from a timer, not a task per socket).

The server PINGs every ping interval; a client that answers stays connected and routed,
one PING per interval and never two; a client that stops answering is closed within the
ping interval plus the ping timeout. engine.io pings every second here and waits one more
(``tests/eio3_app.py:setup_fast_pings``)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from sio_cluster.master.embedded_redis import EmbeddedRedis
from tests.cluster import MasterProcess, until

APP = "tests.eio3_app:setup_fast_pings"


class RawClient:
    """A Socket.IO client over a bare websocket: it records when each PING came and each
    event, and answers PINGs only while ``answering``."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, sid: str) -> None:
        self.ws = ws
        self.sid = sid
        self.answering = True
        self.pings: list[float] = []
        self.events: list[Any] = []
        self.closed_at: float | None = None
        self._task = asyncio.create_task(self._read())

    @classmethod
    async def connect(cls, session: aiohttp.ClientSession, port: int) -> RawClient:
        ws = await session.ws_connect(
            f"http://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket"
        )
        opened = await ws.receive_str(timeout=10)
        assert opened.startswith("0{"), opened
        await ws.send_str("40")
        connected = await ws.receive_str(timeout=10)
        assert connected.startswith("40{"), connected
        return cls(ws, json.loads(connected[2:])["sid"])

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        async for message in self.ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            if message.data == "2":
                self.pings.append(loop.time())
                if self.answering:
                    await self.ws.send_str("3")
            elif message.data.startswith("42"):
                self.events.append(json.loads(message.data[2:]))
        self.closed_at = loop.time()

    async def close(self) -> None:
        await self.ws.close()
        await self._task


async def test_pings_keep_an_answering_client_and_close_a_silent_one(
    redis_server: EmbeddedRedis, redis_client: aioredis.Redis
) -> None:
    with MasterProcess(redis_server.url, workers=1, app=APP).start() as master:
        await master.ready()
        loop = asyncio.get_running_loop()
        async with aiohttp.ClientSession() as session:
            answering = await RawClient.connect(session, master.port_of(0))
            silent = await RawClient.connect(session, master.port_of(0))
            silent.answering = False
            started = loop.time()
            try:
                await until(lambda: silent.closed_at is not None, 10, "the silent client closed")
                assert silent.closed_at is not None
                # its only PING came after one interval; closed one timeout after it
                assert len(silent.pings) == 1
                assert 0.3 <= silent.pings[0] - started <= 2.0  # one interval after its handshake
                assert 0.5 <= silent.closed_at - silent.pings[0] <= 4.0

                await until(lambda: loop.time() - started >= 6, 10, "six ping intervals")
                assert answering.closed_at is None
                gaps = [b - a for a, b in zip(answering.pings, answering.pings[1:], strict=False)]
                assert 4 <= len(answering.pings) <= 7, answering.pings  # one per interval
                assert all(0.8 <= gap <= 2.0 for gap in gaps), gaps  # one timer, never two
                await until(
                    lambda: master.metric('sio_master_connected_sockets{worker="0"}') == 1,
                    10,
                    "the master to forget the silent client",
                )
                await redis_client.publish(
                    "ch:tick", json.dumps({"to": answering.sid, "data": "still"})
                )
                await until(lambda: answering.events == [["tick", "still"]], 10, "the tick")
            finally:
                await answering.close()
                await silent.close()
