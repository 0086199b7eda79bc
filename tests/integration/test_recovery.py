"""Connection state recovery (``--connection-state-recovery``) with the real socket.io-client
4.8: a numbered ``ch:*`` stream to a room, and a fault in the middle of it. Every client
must get every number exactly once, in order, and come back with ``recovered`` true and
its old id, whatever the fault: its worker SIGKILLed, its transport closed (a blip), its
next connection sent to another worker, a rolling restart."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis
import socketio

from tests.cluster import MasterProcess, until
from tests.node_peer import RecoveringClients, ensure_node_modules, missing_tools

pytestmark = pytest.mark.skipif(
    missing_tools() is not None, reason=f"the clients are socket.io-client: {missing_tools()}"
)
WINDOW = ["--connection-state-recovery", "30"]
STREAM = 600  # numbered messages per test
RATE = 300.0  # messages per second


@pytest.fixture(scope="module")
def node_clients() -> Iterator[RecoveringClients]:
    ensure_node_modules()
    clients = RecoveringClients().start()
    try:
        yield clients
    finally:
        clients.close()


@pytest.fixture
async def js(node_clients: RecoveringClients) -> AsyncIterator[RecoveringClients]:
    """The module's socket.io-client process, with no client left from another test."""
    yield node_clients
    for name in {c["client"] for c in node_clients.connects}:
        await node_clients.cmd("close", client=name)
    node_clients.connects.clear()
    node_clients.received.clear()
    node_clients.disconnects.clear()


async def stream(
    publisher: aioredis.Redis,
    room: str,
    midway: Callable[[], Coroutine[Any, Any, None]],
    count: int = STREAM,
) -> None:
    """Publish ``count`` numbered messages to ``room`` at ``RATE``; run ``midway`` (the
    fault) after a third of them, while the stream goes on."""
    fault: asyncio.Task[None] | None = None
    loop = asyncio.get_running_loop()
    started = loop.time()
    for number in range(count):
        if number == count // 3:
            fault = asyncio.create_task(midway())
        await publisher.publish("ch:tick", json.dumps({"to": room, "data": number}))
        await asyncio.sleep(max(0.0, started + (number + 1) / RATE - loop.time()))  # pacing
    assert fault is not None
    await fault


def numbers(js: RecoveringClients, client: str) -> list[int]:
    return [args[0] for args in js.got(client, "tick")]


async def joined(js: RecoveringClients, client: str, url: str, room: str, **opts: Any) -> str:
    """Connect ``client`` to ``url`` and have it join ``room``; return its socket id."""
    found = await js.cmd("connect", client=client, url=url, **opts)
    assert found["recovered"] is False
    rooms = await js.cmd("call", client=client, event="join", args=[room])
    assert room in rooms, rooms
    return str(found["id"])


async def js_count(js: RecoveringClients, client: str, event: str, count: int) -> None:
    await until(lambda: len(js.got(client, event)) >= count, what=f"{count} {event} at {client}")


async def check_recovered(
    js: RecoveringClients, client: str, sid: str, count: int = STREAM
) -> None:
    """``client`` got all of the stream once, in order, and its last connection recovered
    its old socket."""
    await until(lambda: len(js.connections(client)) >= 2, 20, f"{client} connected again")
    await until(lambda: len(numbers(js, client)) >= count, 20, f"the whole stream at {client}")
    assert numbers(js, client) == list(range(count))
    last = js.connections(client)[-1]
    assert (last["id"], last["recovered"]) == (sid, True), js.connections(client)
    assert len(js.connections(client)) == 2, js.connections(client)


async def test_a_sigkilled_worker_loses_its_clients_nothing(
    start_master: Any, js: RecoveringClients, redis_client: aioredis.Redis
) -> None:
    cluster: MasterProcess = await start_master(workers=2, extra=WINDOW).ready()
    sid = await joined(js, "a", cluster.url(1), "room")
    stay = await joined(js, "b", cluster.url(0), "room")

    async def kill() -> None:
        os.kill(cluster.worker_pids()[1], signal.SIGKILL)

    await stream(redis_client, "room", kill)
    await check_recovered(js, "a", sid)
    assert numbers(js, "b") == list(range(STREAM)) and len(js.connections("b")) == 1
    assert stay == js.connections("b")[0]["id"]
    recovered = 'sio_master_recoveries_total{outcome="recovered"}'
    await until(lambda: cluster.metric(recovered) == 1, what="the recovery counted")


async def test_a_blip_of_the_transport_loses_nothing(
    start_master: Any, js: RecoveringClients, redis_client: aioredis.Redis
) -> None:
    cluster: MasterProcess = await start_master(workers=2, extra=WINDOW).ready()
    websocket = await joined(js, "ws", cluster.url(0), "room")
    polling = await joined(js, "poll", cluster.url(1), "room", transports=["polling"])

    async def blip() -> None:
        await js.cmd("blip", client="ws")
        await js.cmd("blip", client="poll")

    await stream(redis_client, "room", blip)
    await check_recovered(js, "ws", websocket)
    await check_recovered(js, "poll", polling)


async def test_a_client_sent_to_another_worker_gets_its_socket_there(
    start_master: Any, js: RecoveringClients, redis_client: aioredis.Redis
) -> None:
    cluster: MasterProcess = await start_master(workers=2, extra=WINDOW).ready()
    sid = await joined(js, "a", cluster.url(1), "room")

    async def move_then_kill() -> None:
        await js.cmd("retarget", client="a", url=cluster.url(0))
        os.kill(cluster.worker_pids()[1], signal.SIGKILL)

    await stream(redis_client, "room", move_then_kill)
    await check_recovered(js, "a", sid)
    # its rooms came with it: a handler's emit to the room reaches it on worker 0
    await js.cmd("call", client="a", event="emit", args=[{"event": "hello", "to": "room"}])
    await until(lambda: len(js.got("a", "hello")) == 1, what="the room emit")


async def test_a_rolling_restart_loses_nothing(
    start_master: Any, js: RecoveringClients, redis_client: aioredis.Redis
) -> None:
    cluster: MasterProcess = await start_master(workers=2, extra=WINDOW).ready()
    first = await joined(js, "a", cluster.url(0), "room")
    second = await joined(js, "b", cluster.url(1), "room")

    async def restart() -> None:
        cluster.signal(signal.SIGHUP)
        await cluster.wait_log(r"rolling restart done", timeout=30)

    long = 5 * STREAM  # 10 s: the restart of both workers happens inside the stream
    await stream(redis_client, "room", restart, long)
    await check_recovered(js, "a", first, long)
    await check_recovered(js, "b", second, long)


async def test_after_the_window_a_client_starts_afresh(
    start_master: Any, js: RecoveringClients, redis_client: aioredis.Redis
) -> None:
    cluster: MasterProcess = await start_master(
        workers=1, extra=["--connection-state-recovery", "1"]
    ).ready()
    sid = await joined(js, "a", cluster.url(0), "room")
    await redis_client.publish("ch:tick", json.dumps({"to": "room", "data": 0}))
    await until(lambda: numbers(js, "a") == [0])
    await js.cmd("retarget", client="a", url="http://127.0.0.1:9")  # nothing listens there
    await js.cmd("blip", client="a")
    await until(lambda: cluster.metric("sio_master_recovery_sessions") == 1, what="kept")
    await redis_client.publish("ch:tick", json.dumps({"to": "room", "data": 1}))
    await until(lambda: cluster.metric("sio_master_recovery_sessions") == 0, 5, "expired")
    await js.cmd("retarget", client="a", url=cluster.url(0))
    await until(lambda: len(js.connections("a")) == 2, what="connected again")
    again = js.connections("a")[-1]
    assert again["recovered"] is False and again["id"] != sid
    await redis_client.publish("ch:tick", json.dumps({"to": "room", "data": 2}))
    await redis_client.publish("ch:tick", json.dumps({"data": 3}))  # to everyone
    await until(lambda: numbers(js, "a") == [0, 3], what="only what it can get now")


async def test_the_log_stays_under_its_cap_when_a_client_never_comes_back(
    start_master: Any, js: RecoveringClients, redis_client: aioredis.Redis
) -> None:
    cluster: MasterProcess = await start_master(
        workers=1, extra=[*WINDOW, "--recovery-buffer-bytes", "20000"]
    ).ready()
    await joined(js, "gone", cluster.url(0), "room")
    await redis_client.publish("ch:tick", json.dumps({"to": "room", "data": 0}))
    await until(lambda: numbers(js, "gone") == [0])
    await js.cmd("retarget", client="gone", url="http://127.0.0.1:9")
    await js.cmd("blip", client="gone")
    await until(lambda: cluster.metric("sio_master_recovery_sessions") == 1, what="kept")
    for number in range(1, 1001):  # each counts ~460 bytes (payload and overhead): 23 caps
        await redis_client.publish("ch:tick", json.dumps({"to": "room", "data": number}))
    await until(lambda: cluster.metric("sio_master_recovery_log_packets") > 0, what="logged")
    await redis_client.ping()
    size = cluster.metric("sio_master_recovery_log_bytes")
    assert 0 < size <= 20000, size
    await js.cmd("retarget", client="gone", url=cluster.url(0))
    await until(lambda: len(js.connections("gone")) == 2, what="connected again")
    assert js.connections("gone")[-1]["recovered"] is False
    overflowed = 'sio_master_recoveries_total{outcome="overflowed"}'
    await until(lambda: cluster.metric(overflowed) == 1, what="counted as overflowed")


async def test_python_socketio_clients_see_the_offset_as_a_last_argument(
    start_master: Any, redis_client: aioredis.Redis
) -> None:
    cluster: MasterProcess = await start_master(workers=1, extra=WINDOW).ready()
    client = socketio.AsyncClient(reconnection=False)
    got: list[tuple[Any, ...]] = []

    @client.on("tick")
    async def tick(*args: Any) -> None:
        got.append(args)

    await client.connect(cluster.url(0), transports=["websocket"], wait_timeout=10)
    try:
        await client.call("join", "room", timeout=10)
        await redis_client.publish("ch:tick", json.dumps({"to": "room", "data": {"n": 1}}))
        await redis_client.publish("ch:tick", json.dumps({"to": "room", "args": [1, 2]}))
        await until(lambda: len(got) == 2)
        assert [args[:-1] for args in got] == [({"n": 1},), (1, 2)]
        offsets = [args[-1] for args in got]
        assert all(isinstance(o, str) for o in offsets) and offsets[0] != offsets[1]
        assert await client.call("join", "other", timeout=10)  # acks carry no offset
    finally:
        await client.disconnect()


async def test_a_client_moved_to_another_host_loses_nothing(
    start_master: Any, js: RecoveringClients, redis_client: aioredis.Redis, clients: Any
) -> None:
    """Host A keeps the session; the client comes back on host B. Beside the ``ch:*``
    stream, a handler on each host emits its own numbered stream to the room, so packets
    of every origin cross the handover: Redis's, A's own and B's own."""
    a: MasterProcess = start_master(workers=2, extra=WINDOW)
    b: MasterProcess = start_master(workers=2, extra=WINDOW)
    await a.ready()
    await b.ready()
    sid = await joined(js, "moving", a.url(1), "room")
    emitters = {"from-a": await clients(a.url(0)), "from-b": await clients(b.url(0))}

    async def emit_streams() -> None:
        for number in range(STREAM // 3):
            for event, emitter in emitters.items():
                spec = {"event": event, "to": "room", "args": [number]}
                await emitter.call("emit", spec)
            await asyncio.sleep(0.005)  # pacing: ~200 handler emits per host and second

    async def move() -> None:
        await js.cmd("retarget", client="moving", url=b.url(0))
        await js.cmd("blip", client="moving")

    emitting = asyncio.create_task(emit_streams())
    await stream(redis_client, "room", move)
    await emitting
    await check_recovered(js, "moving", sid)
    for event in emitters:  # a handler's emit returns before its delivery: wait for the last
        await js_count(js, "moving", event, STREAM // 3)
        assert [args[0] for args in js.got("moving", event)] == list(range(STREAM // 3)), event
    recovered = 'sio_master_recoveries_total{outcome="recovered"}'
    await until(lambda: b.metric(recovered) == 1, what="B counted the recovery")
    assert a.metric(recovered) == 0
