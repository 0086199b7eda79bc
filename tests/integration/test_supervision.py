"""The master's process lifecycle: respawn, graceful stop, no orphans, stalled workers."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import urllib.error
import urllib.request
from typing import Any

import aiohttp
import redis.asyncio as aioredis
import socketio

from bench.measure import descendants, is_running
from sio_cluster.master.embedded_redis import EmbeddedRedis
from tests.cluster import until


def port_is_free(port: int) -> bool:
    """True if nothing listens on ``port`` (TIME_WAIT leftovers allowed, as for any server)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


async def test_killed_worker_is_respawned_on_its_port_and_forgotten(
    start_master: Any, clients: Any, redis_client: aioredis.Redis
) -> None:
    cluster = await start_master(workers=2).ready()
    a0 = await clients(cluster.url(0), "a0")
    b0 = await clients(cluster.url(1), "b0")
    await a0.call("join", "r")
    await b0.call("join", "r")
    assert cluster.metric('sio_master_connected_sockets{worker="1"}') == 1
    old_pid = cluster.worker_pids()[1]

    killed_at = time.monotonic()
    os.kill(old_pid, signal.SIGKILL)
    await cluster.wait_log(r"worker 1 ready again", timeout=10)
    respawn_seconds = time.monotonic() - killed_at
    assert respawn_seconds < 2.0, respawn_seconds
    new_pid = cluster.worker_pids()[1]
    assert new_pid != old_pid and not is_running(old_pid)
    assert cluster.metric('sio_master_worker_restarts_total{worker="1"}') == 1
    assert cluster.metric('sio_master_connected_sockets{worker="1"}') == 0

    routed_1 = 'sio_master_messages_routed_total{worker="1"}'
    before = cluster.metric(routed_1)
    await redis_client.publish("ch:news", json.dumps({"to": "r", "data": 1}))
    await a0.wait_count("news", 1)
    assert cluster.metric(routed_1) == before  # the dead worker's room entries are gone

    b1 = await clients(cluster.url(1), "b1")
    assert await b1.call("pid") == new_pid
    await b1.call("join", "r")
    await redis_client.publish("ch:news", json.dumps({"to": "r", "data": 2}))
    await b1.wait_count("news", 1)
    await a0.wait_count("news", 2)
    assert b1.got("news") == [(2,)] and a0.got("news") == [(1,), (2,)]


async def test_sigterm_closes_clients_and_leaves_nothing_behind(
    start_master: Any, clients: Any
) -> None:
    cluster = await start_master(workers=2).ready()
    everyone = [await clients(cluster.url(i), f"c{i}") for i in (0, 1, 1)]
    pids = cluster.known_pids
    assert len(pids) == 3  # master and two workers
    cluster.signal(signal.SIGTERM)
    assert await cluster.wait_exit(timeout=15) == 0
    await until(lambda: not any(r.client.connected for r in everyone), what="clients closed")
    assert not [pid for pid in pids if is_running(pid)]
    assert all(port_is_free(cluster.port_of(i)) for i in (0, 1))
    assert port_is_free(cluster.metrics_port)
    await cluster.wait_log(r"worker-1 .*stopped")


async def test_sigterm_is_prompt_with_websocket_long_polling_and_idle_polling_clients(
    start_master: Any, clients: Any
) -> None:
    """An idle long-polling session (one handshake, then nothing) used to hold a worker for
    the whole graceful timeout (5 s here): nobody came to fetch its CLOSE."""
    cluster = await start_master(workers=2).ready()
    websocket = await clients(cluster.url(0), "ws")
    polling = socketio.AsyncClient(reconnection=False)
    disconnects: list[str] = []
    polling.on("disconnect", lambda *reason: disconnects.append("polling"))
    await polling.connect(cluster.url(1), transports=["polling"], wait_timeout=10)
    async with aiohttp.ClientSession() as http:
        for port in (cluster.port_of(0), cluster.port_of(1)):  # idle: handshake only
            url = f"http://127.0.0.1:{port}/socket.io/?EIO=4&transport=polling"
            async with http.get(url) as response:
                assert (await response.text()).startswith("0{")
        started = time.monotonic()
        cluster.signal(signal.SIGTERM)
        assert await cluster.wait_exit(timeout=15) == 0
        took = time.monotonic() - started
    await until(lambda: not websocket.client.connected, what="the websocket client closed")
    await until(lambda: disconnects == ["polling"], what="the long-polling client closed")
    print(f"\nSIGTERM to exit with websocket, long-polling and idle polling clients: {took:.2f} s")
    assert took < 3.0, cluster.lines[-10:]  # the graceful timeout is 5 s
    assert not cluster.log_matches(r"timed out")
    await polling.disconnect()


async def test_embedded_redis_then_master_kill9_leaves_no_orphans(
    start_master: Any, clients: Any
) -> None:
    cluster = await start_master(redis_url=None, workers=2).ready()
    url = (await cluster.wait_log(r"embedded Redis at (redis://\S+)")).group(1)
    client = await clients(cluster.url(1), "c")
    async with aioredis.Redis.from_url(url) as publisher:
        await publisher.publish("ch:hello", json.dumps({"data": "embedded"}))
        await client.wait_count("hello", 1)
    family = descendants(cluster.pid)
    assert len(family) == 3, family  # two workers and the embedded redis-server

    cluster.signal(signal.SIGKILL)
    await cluster.wait_exit()
    killed_at = time.monotonic()
    await until(lambda: not [p for p in family if is_running(p)], timeout=10, what="orphans exit")
    assert time.monotonic() - killed_at < 2.0, cluster.lines[-10:]


async def test_stalled_worker_never_stalls_the_master_or_its_siblings(
    start_master: Any, clients: Any, redis_client: aioredis.Redis
) -> None:
    cluster = await start_master(
        workers=2,
        extra=["--max-message-bytes", "65536", "--worker-buffer-bytes", str(1024 * 1024)],
    ).ready()
    a0 = await clients(cluster.url(0), "a0")
    await clients(cluster.url(1), "b0")
    stalled = cluster.worker_pids()[1]
    os.kill(stalled, signal.SIGSTOP)
    try:
        payload = "x" * 2000
        batch, count = 100, 2000  # ~4 MB: far more than the pipe's kernel buffer plus 1 MiB
        for start in range(0, count, batch):  # paced by the healthy client, never ahead of it
            async with redis_client.pipeline(transaction=False) as pipe:
                for i in range(start, start + batch):
                    pipe.publish("ch:load", json.dumps({"args": [i, payload]}))
                await pipe.execute()
            await a0.wait_count("load", start + batch)
        assert [args[0] for args in a0.got("load")] == list(range(count))
        dropped = cluster.metric('sio_master_messages_dropped_total{worker="1"}')
        routed = cluster.metric('sio_master_messages_routed_total{worker="1"}')
        assert dropped > 0 and dropped + routed == count
        await cluster.wait_log("worker 1 is not keeping up")
    finally:
        os.kill(stalled, signal.SIGCONT)


async def test_hung_worker_is_killed_and_respawned(start_master: Any) -> None:
    cluster = await start_master(workers=1, extra=["--worker-health-timeout", "1"]).ready()
    hung = cluster.worker_pids()[0]
    os.kill(hung, signal.SIGSTOP)
    await cluster.wait_log(r"worker 0 .* silent for", timeout=10)
    await cluster.wait_log(r"worker 0 ready again", timeout=10)
    assert not is_running(hung)
    assert cluster.worker_pids()[0] != hung


async def test_app_that_cannot_load_fails_startup_cleanly(start_master: Any) -> None:
    cluster = start_master(workers=2, app="tests.no_such_module:setup")
    assert await cluster.wait_exit(timeout=30) == 1
    await cluster.wait_log(r"cannot import 'tests.no_such_module'")
    await cluster.wait_log(r"cluster failed to start")
    assert not descendants(cluster.pid)


async def test_bad_configuration_is_refused_before_starting(start_master: Any) -> None:
    for extra, message in [
        (["--workers", "0"], "--workers must be at least 1"),
        (["--redis-url", "http://x"], "--redis-url must start with"),
        (["--max-message-bytes", "0"], "--max-message-bytes must be"),
    ]:
        cluster = start_master(workers=1, extra=extra)
        assert await cluster.wait_exit() == 2
        await cluster.wait_log(message)  # the reader thread may still hold the last line


async def test_unix_socket_url_with_password(start_master: Any, clients: Any) -> None:
    server = EmbeddedRedis(password="s3cret", unix_socket=True).start()
    try:
        cluster = await start_master(redis_url=server.unix_url, workers=1).ready()
        client = await clients(cluster.url(0), "c")
        async with aioredis.Redis.from_url(server.url) as publisher:
            await publisher.publish("ch:hello", json.dumps({"data": "over unix"}))
            await client.wait_count("hello", 1)
            assert client.got("hello") == [("over unix",)]
            subscribers = await publisher.client_list(_type="pubsub")
            assert [c["addr"].startswith("/") for c in subscribers] == [True]  # over the socket
    finally:
        server.close()


async def test_cors_allowed_origins_reach_the_workers(start_master: Any) -> None:
    cluster = await start_master(
        workers=1, extra=["--cors-allowed-origins", "http://app.example"]
    ).ready()

    def preflight(origin: str) -> str | None:
        request = urllib.request.Request(
            cluster.url(0) + "/socket.io/?EIO=4&transport=polling", headers={"Origin": origin}
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.headers.get("Access-Control-Allow-Origin")
        except urllib.error.HTTPError as error:
            return f"HTTP {error.code}"

    assert preflight("http://app.example") == "http://app.example"
    assert preflight("http://evil.example") == "HTTP 400"
