"""Every code example of the documentation runs, for real: the apps on a real cluster with real
python-socketio clients, the publisher and the store example against a real redis-server.

The examples are read from the pages (:mod:`tests.docs.examples`), never copied here, so an
example that stops working fails this test.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
import socketio

from sio_cluster.master.embedded_redis import EmbeddedRedis
from sio_cluster.master.routing.messages import parse_message
from tests.cluster import MasterProcess, Recorder, until
from tests.docs.examples import all_blocks, shell_publishes, write_examples

DEMO = "sio_cluster.workers.demo:setup"
# every titled Python example, and the test below that runs it
RUN_HERE = {
    "main.py",
    "app.py",
    "ops_app.py",
    "client.py",
    "publish.py",
    "store_example.py",
    "handshake_app.py",
}


@pytest.fixture
def examples(tmp_path: Path) -> dict[str, Path]:
    return write_examples(tmp_path)


def test_every_python_example_is_run_here() -> None:
    python = [block for block in all_blocks() if block.language == "python"]
    assert {block.title for block in python} == RUN_HERE, [
        (block.page, block.title) for block in python
    ]
    by_title: dict[str | None, set[str]] = {}
    for block in python:
        by_title.setdefault(block.title, set()).add(block.text)
    assert {title: len(texts) for title, texts in by_title.items()} == dict.fromkeys(RUN_HERE, 1)


def app_cluster(start: Callable[..., MasterProcess], app: str, where: Path) -> MasterProcess:
    return start(workers=2, app=app, extra=["--app-dir", str(where)])


async def test_the_fastapi_app(
    start_master: Callable[..., MasterProcess],
    clients: Callable[..., Any],
    examples: dict[str, Path],
) -> None:
    """The README's app, as uvicorn would run it: a route on one worker reaches the room's
    sockets on both, once each; the app's own ping interval is the one served."""
    cluster = await app_cluster(start_master, "main:app", examples["main.py"].parent).ready()
    fans: list[Recorder] = [await clients(cluster.url(w), f"fan{w}") for w in (0, 1)]
    other: Recorder = await clients(cluster.url(1), "other")
    assert [await fan.call("join", "sports") for fan in fans] == [["sports"], ["sports"]]
    assert fans[0].client.eio.ping_interval == 10
    async with aiohttp.ClientSession() as http:
        url = cluster.url(0) + "/rooms/sports/news"
        async with http.post(url, json={"score": "3-1"}) as answer:
            assert (answer.status, await answer.json()) == (200, {"sent": "sports"})
    for fan in fans:
        await fan.wait_count("news", 1)
    await other.call("join", "elsewhere")  # a round trip: anything sent to it came first
    assert [fan.got("news") for fan in (*fans, other)] == [
        [({"score": "3-1"},)],
        [({"score": "3-1"},)],
        [],
    ]


async def test_the_chat_app(
    start_master: Callable[..., MasterProcess], examples: dict[str, Path]
) -> None:
    cluster = await app_cluster(start_master, "app:setup", examples["app.py"].parent).ready()
    said: dict[str, list[Any]] = {"ann": [], "bob": []}
    made = []
    for worker, name in enumerate(said):
        client = socketio.AsyncClient(reconnection=False)
        client.on("said", said[name].append)
        await client.connect(
            cluster.url(worker), transports=["websocket"], auth={"name": name}, wait_timeout=10
        )
        made.append(client)
    ann, bob = made
    try:
        assert await ann.call("join", "lobby", timeout=10) == ["lobby"]
        assert await bob.call("join", "lobby", timeout=10) == ["lobby"]
        await ann.emit("say", {"room": "lobby", "text": "hi"})
        await until(lambda: len(said["bob"]) == 1, 10, "bob hears ann")
        await bob.emit("say", {"room": "lobby", "text": "hello"})
        await until(lambda: len(said["ann"]) == 1, 10, "ann hears bob")
        # ann's own line, had skip_sid failed, was delivered locally before bob answered
        assert said == {
            "ann": [{"from": "bob", "text": "hello"}],
            "bob": [{"from": "ann", "text": "hi"}],
        }
    finally:
        for client in made:
            await client.disconnect()


async def test_the_operations_app(
    start_master: Callable[..., MasterProcess],
    clients: Callable[..., Any],
    redis_client: aioredis.Redis,
    examples: dict[str, Path],
) -> None:
    cluster = await app_cluster(
        start_master, "ops_app:setup", examples["ops_app.py"].parent
    ).ready()
    a: Recorder = await clients(cluster.url(0), "a")
    b: Recorder = await clients(cluster.url(1), "b")
    assert [await a.call("join", "lobby"), await b.call("join", "lobby")] == ["ok", "ok"]
    async with aiohttp.ClientSession() as http, http.get(cluster.url(0) + "/lobby") as answer:
        assert await answer.json() == sorted([a.sid(), b.sid()])
    assert await a.call("promote", "lobby") == 2
    await redis_client.publish("ch:news", json.dumps({"to": "vip", "data": "for vip"}))
    for client in (a, b):
        await client.wait_count("news", 1)
        assert client.got("news") == [("for vip",)]


async def run_example(path: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """Run ``path`` with this interpreter in its directory; return its stdout."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(path),
        *args,
        cwd=path.parent,
        env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    return out.decode()


@pytest.mark.parametrize("layer", ["own", "aiohttp"])
async def test_the_handshake_app(
    start_master: Callable[..., MasterProcess], examples: dict[str, Path], layer: str
) -> None:
    """docs/connection-layer.md's app: a handler reads the same handshake whether the worker's
    own layer or aiohttp served the client, on either transport."""
    where = examples["handshake_app.py"].parent
    cluster = await start_master(
        workers=2, app="handshake_app:setup", extra=["--app-dir", str(where), "--ws", layer]
    ).ready()
    answers = {}
    for transport in ("websocket", "polling"):
        client = socketio.AsyncClient(reconnection=False)
        await client.connect(
            cluster.url(0) + "?team=blue",
            headers={"X-Room": "lobby", "User-Agent": "docs-test"},
            transports=[transport],
            wait_timeout=10,
        )
        try:
            answers[transport] = await client.call("whoami", timeout=10)
        finally:
            await client.disconnect()
    common = {"address": "127.0.0.1", "team": "blue", "agent": "docs-test", "room": "lobby"}
    assert answers == {
        "websocket": {"transport": "websocket", **common},
        "polling": {"transport": "polling", **common},
    }


async def test_the_getting_started_client(
    start_master: Callable[..., MasterProcess],
    redis_client: aioredis.Redis,
    examples: dict[str, Path],
) -> None:
    cluster = await start_master(workers=2, app=DEMO).ready()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(examples["client.py"]),
        cluster.url(1),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        first = await asyncio.wait_for(proc.stdout.readline(), 20)
        assert first.decode() == "rooms: ['sports']\n"
        [(_, channel, body)] = shell_publishes("docs/getting-started.md")
        await redis_client.publish(channel, body)  # the page's redis-cli PUBLISH
        rest, err = await asyncio.wait_for(proc.communicate(), 20)
        assert (proc.returncode, rest.decode()) == (0, "news: 3-1\n"), err.decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_the_publisher(
    start_master: Callable[..., MasterProcess],
    clients: Callable[..., Any],
    redis_client: aioredis.Redis,
    redis_server: EmbeddedRedis,
    examples: dict[str, Path],
) -> None:
    cluster = await start_master(workers=2, app=DEMO).ready()
    sports: Recorder = await clients(cluster.url(0), "sports")
    weather: Recorder = await clients(cluster.url(1), "weather")
    nowhere: Recorder = await clients(cluster.url(1), "nowhere")
    await sports.call("join", "sports")
    await weather.call("join", "weather")
    await run_example(examples["publish.py"], env={"REDIS_URL": redis_server.url})
    # a fence after the example's messages: per connection, anything they caused came first
    await redis_client.publish("ch:fence", json.dumps({}))
    for client in (sports, weather, nowhere):
        await client.wait_count("fence", 1)
    assert [c.got("news") for c in (sports, weather, nowhere)] == [
        [({"headline": "3-1"},), ({"headline": "sun"},)],
        [({"headline": "sun"},)],
        [],
    ]
    assert [c.got("notice") for c in (sports, weather, nowhere)] == [
        [],
        [("maintenance", 5)],
        [("maintenance", 5)],
    ]


def test_every_shell_publish_is_a_valid_message() -> None:
    published = shell_publishes()
    assert {page for page, _, _ in published} == {
        "README.md",
        "docs/getting-started.md",
        "docs/sending.md",
    }
    for _, channel, body in published:
        parse_message(channel, body.encode(), "ch:", 1 << 20, "*")  # raises Rejected if not


async def test_the_redis_store_example(
    redis_server: EmbeddedRedis, redis_client: aioredis.Redis, examples: dict[str, Path]
) -> None:
    out = await run_example(examples["store_example.py"], env={"REDIS_URL": redis_server.url})
    assert out == "node b got ('sid123', '/room')\nnick: b'ann' color: False\n"
    assert 0 < await redis_client.ttl("sid123") <= 60
