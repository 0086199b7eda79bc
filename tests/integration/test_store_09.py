"""``--redis-store-09``: our master in a REAL socket.io 0.9 fleet (RedisStore) on one Redis.

socket.io 0.9.19 servers on RedisStore (``tests/node/v09_server.js``, with socket.io-client
0.9.16 clients of their own) and one master (two workers, the probe app) share the module's
Redis; python-socketio clients connect to our workers. Deliveries are checked exactly with a
fence sent after them along the same path (a 0.9 server publishes, and our master delivers, in
order). Memberships are checked where they are used: in the 0.9 server's own
``io.sockets.clients(room)`` and in our ``fetch_sockets``.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from sio_cluster.master.embedded_redis import EmbeddedRedis
from tests.cluster import MasterProcess, Recorder, op, until, until_equal
from tests.node_peer import V09Server, ensure_node_modules, missing_tools

pytestmark = pytest.mark.skipif(
    missing_tools() is not None, reason=f"socket.io 0.9 tests: {missing_tools()}"
)

# seconds: a killed 0.9 server is lost after 2.5 s; a shorter one would count a 0.9 server or
# a master paused that long on a loaded machine as lost, and the lost counts here are exact
ROLL_CALL = 1.0


@pytest.fixture(scope="module")
def master(redis_server: EmbeddedRedis) -> Iterator[MasterProcess]:
    extra = ["--redis-store-09", "--redis-store-09-roll-call", str(ROLL_CALL)]
    process = MasterProcess(redis_server.url, workers=2, extra=extra).start()
    try:
        yield process.ready_sync()
    finally:
        process.cleanup()


@pytest.fixture(scope="module")
def v09(redis_server: EmbeddedRedis, master: MasterProcess) -> Iterator[V09Server]:
    ensure_node_modules()
    with V09Server(redis_server).start() as server:
        yield server


@pytest.fixture
async def ours(master: MasterProcess) -> AsyncIterator[list[Recorder]]:
    """Our clients of one test, closed after it."""
    clients: list[Recorder] = []
    yield clients
    for client in clients:
        await client.close()


async def connect(
    clients: list[Recorder],
    master: MasterProcess,
    worker: int,
    namespaces: tuple[str, ...] = ("/",),
) -> Recorder:
    client = await Recorder(f"c{len(clients)}").connect(master.url(worker), namespaces)
    clients.append(client)
    return client


async def members(v09: V09Server, room: str | None, nsp: str = "/") -> list[str]:
    listed: list[str] = await v09.cmd("clients", nsp=nsp, room=room)
    return listed


async def join(v09: V09Server, client: Recorder, room: str, namespace: str = "/") -> None:
    """Our client joins ``room``; done once the 0.9 server lists it there."""
    await client.call("join", room, namespace=namespace)
    sid = client.sid(namespace)
    await until(lambda: _listed(v09, room, namespace, sid), 5, f"{sid} in 0.9's {namespace} {room}")


async def _listed(v09: V09Server, room: str, namespace: str, sid: str) -> bool:
    return sid in await members(v09, room, namespace)


async def fetched(client: Recorder, room: str) -> list[dict[str, Any]]:
    sockets: list[dict[str, Any]] = await op(client, "fetch_sockets", to=room)
    return sockets


def got(v09: V09Server, client: str, event: str) -> list[list[Any]]:
    return v09.got(client, event)


async def test_09_broadcasts_reach_our_sockets_once(
    master: MasterProcess, v09: V09Server, ours: list[Recorder]
) -> None:
    inside = await connect(ours, master, 0)
    outside = await connect(ours, master, 1)
    chat = await connect(ours, master, 1, ("/chat",))
    excepted = await connect(ours, master, 1)
    await join(v09, inside, "b1")
    await join(v09, excepted, "b1")
    await join(v09, chat, "b1", "/chat")
    await v09.cmd("connect", client="a1")
    await v09.cmd("join", client="a1", room="b1")

    await v09.cmd("emit", room="b1", event="news", args=[1, {"k": "v"}])
    await v09.cmd("emit", room="b1", event="news", args=[2], except_=[excepted.sid()])
    await v09.cmd("emit", room="b1", event="vol", args=[3], volatile=True)
    await v09.cmd("emit", nsp="/chat", room="b1", event="news", args=[4])
    await v09.cmd("emit", event="all", args=[5], except_=[outside.sid()])
    await v09.cmd("broadcast_from", client="a1", room="b1", event="from09", args=[6])
    await v09.cmd("emit", event="fence")
    await v09.cmd("emit", nsp="/chat", event="fence")
    for client in ours:
        namespace = "/chat" if client is chat else "/"
        await client.wait_count("fence", 1, namespace)

    assert inside.got("news") == [(1, {"k": "v"}), (2,)]
    assert excepted.got("news") == [(1, {"k": "v"})]
    assert inside.got("vol") == [(3,)] and excepted.got("vol") == [(3,)]
    assert outside.got("news") == [] and outside.got("vol") == [] and outside.got("all") == []
    assert chat.got("news", "/chat") == [(4,)] and chat.got("all", "/chat") == []
    assert inside.got("all") == [(5,)] and excepted.got("all") == [(5,)]
    assert inside.got("from09") == [(6,)] and excepted.got("from09") == [(6,)]
    assert outside.got("from09") == []


async def test_our_emits_and_channel_messages_reach_09_clients_once(
    master: MasterProcess,
    v09: V09Server,
    ours: list[Recorder],
    redis_client: aioredis.Redis,
) -> None:
    sender = await connect(ours, master, 0)
    a_id = await v09.cmd("connect", client="a2", events=["hello", "many", "ch2", "fence"])
    b_id = await v09.cmd("connect", client="b2", nsp="/chat", events=["hello", "fence"])
    await v09.cmd("join", client="a2", room="r2")
    await v09.cmd("join", client="a2", room="r3")
    await v09.cmd("join", client="b2", nsp="/chat", room="r2")
    await until_equal(
        lambda: fetched(sender, "r3"), [{"id": a_id, "rooms": sorted([a_id, "r2", "r3"])}], "fetch"
    )

    await sender.call("emit", {"event": "hello", "args": [1, "x"], "to": "r2"})
    await sender.call("emit", {"event": "many", "args": [2], "to": ["r2", "r3"]})
    await sender.call("emit", {"event": "hello", "args": [3], "to": a_id})
    await sender.call("emit", {"event": "hello", "args": [4]})
    await sender.call("emit", {"event": "hello", "args": [5], "to": "r2", "namespace": "/chat"})
    await redis_client.publish("ch:ch2", json.dumps({"to": "r3", "data": {"n": 6}}))
    await redis_client.publish("ch:fence", json.dumps({}))
    await sender.call("emit", {"event": "fence", "args": []})
    await sender.call("emit", {"event": "fence", "args": [], "namespace": "/chat"})
    await until(lambda: len(got(v09, "a2", "fence")) == 2, 5, "a2's fences")
    await until(lambda: len(got(v09, "b2", "fence")) == 1, 5, "b2's fence")

    assert got(v09, "a2", "hello") == [[1, "x"], [3], [4]]
    assert got(v09, "a2", "many") == [[2]]
    assert got(v09, "a2", "ch2") == [[{"n": 6}]]
    assert got(v09, "b2", "hello") == [[5]]
    assert b_id != a_id


async def test_single_socket_emits_from_09(
    master: MasterProcess, v09: V09Server, ours: list[Recorder]
) -> None:
    target = await connect(ours, master, 1)
    chat = await connect(ours, master, 0, ("/chat",))
    bystander = await connect(ours, master, 0)
    await join(v09, target, "s1")
    await join(v09, chat, "s1", "/chat")
    await v09.cmd("emit_socket", sid=target.sid(), event="direct", args=[1])
    await v09.cmd("emit_socket", nsp="/chat", sid=chat.sid("/chat"), event="direct", args=[2])
    await v09.cmd("emit_socket", sid=target.sid(), event="fence")
    await v09.cmd("emit_socket", nsp="/chat", sid=chat.sid("/chat"), event="fence")
    await target.wait_count("fence", 1)
    await chat.wait_count("fence", 1, "/chat")
    assert target.got("direct") == [(1,)]
    assert chat.got("direct", "/chat") == [(2,)]
    assert bystander.got("direct") == []


async def test_09_room_counts_include_our_sockets(
    master: MasterProcess, v09: V09Server, ours: list[Recorder]
) -> None:
    stays = await connect(ours, master, 0)
    leaves = await connect(ours, master, 1)
    goes = await connect(ours, master, 1)
    for client in (stays, leaves, goes):
        await join(v09, client, "k1")
    gone = goes.sid()
    a_id = await v09.cmd("connect", client="a4")
    await v09.cmd("join", client="a4", room="k1")
    everyone = sorted([stays.sid(), leaves.sid(), goes.sid(), a_id])
    assert await members(v09, "k1") == everyone
    assert set(everyone) <= set(await members(v09, None))

    await leaves.call("leave", "k1")
    await goes.close()
    expected = sorted([stays.sid(), a_id])
    await until_equal(lambda: members(v09, "k1"), expected, "0.9's k1")
    assert leaves.sid() in await members(v09, None)
    assert gone not in await members(v09, None)
    await until_equal(
        lambda: fetched(stays, "k1"),
        sorted(
            [
                {"id": stays.sid(), "rooms": sorted([stays.sid(), "k1"])},
                {"id": a_id, "rooms": sorted([a_id, "k1"])},
            ],
            key=lambda s: s["id"],
        ),
        "our fetch of k1",
    )


async def test_09_server_killed(
    master: MasterProcess, v09: V09Server, ours: list[Recorder], redis_server: EmbeddedRedis
) -> None:
    asker = await connect(ours, master, 0)
    lost_before = master.metric("sio_master_store09_servers_lost_total")
    doomed = V09Server(redis_server).start()
    try:
        d_id = await doomed.cmd("connect", client="d5")
        await doomed.cmd("join", client="d5", room="k5")
        await until_equal(lambda: members(v09, "k5"), [d_id], "the survivor's k5")
        await until_equal(
            lambda: fetched(asker, "k5"), [{"id": d_id, "rooms": sorted([d_id, "k5"])}], "fetch"
        )
        doomed.kill()
        await until_equal(lambda: members(v09, "k5"), [], "the survivor's k5 after the kill")
        await until_equal(lambda: fetched(asker, "k5"), [], "our fetch after the kill")
        assert d_id not in await members(v09, None)
        assert master.metric("sio_master_store09_servers_lost_total") == lost_before + 1
    finally:
        doomed.close()


async def test_a_master_that_could_not_hear_the_fleet_loses_nobody(
    master: MasterProcess, v09: V09Server, ours: list[Recorder]
) -> None:
    """Our master paused longer than a 0.9 server may be silent (as it would be deaf through a
    Redis outage): when it resumes, the 0.9 server it could not hear is not lost, no
    ``disconnect`` goes out, and its client keeps its rooms and gets our emits."""
    sender = await connect(ours, master, 0)
    a_id = await v09.cmd("connect", client="a8", events=["after", "fence"])
    await v09.cmd("join", client="a8", room="p8")
    await until_equal(
        lambda: fetched(sender, "p8"), [{"id": a_id, "rooms": sorted([a_id, "p8"])}], "fetch"
    )
    lost = master.metric("sio_master_store09_servers_lost_total")
    disconnects = 'sio_master_store09_published_total{channel="disconnect"}'
    disconnected = master.metric(disconnects)

    master.signal(signal.SIGSTOP)
    try:
        await asyncio.sleep(ROLL_CALL * 2.5 + 1.0)  # the pause itself, not a wait for anything
    finally:
        master.signal(signal.SIGCONT)
    roll_calls = 'sio_master_store09_published_total{channel="message-remote"}'
    called = master.metric(roll_calls)
    # the round the pause stretched, then two more judged with the 0.9 server's answers in
    await until(lambda: master.metric(roll_calls) >= called + 3, 15, "three more roll calls")

    assert master.metric("sio_master_store09_servers_lost_total") == lost
    assert master.metric(disconnects) == disconnected
    assert await members(v09, "p8") == [a_id]
    assert await fetched(sender, "p8") == [{"id": a_id, "rooms": sorted([a_id, "p8"])}]
    await sender.call("emit", {"event": "after", "args": [1], "to": "p8"})
    await sender.call("emit", {"event": "fence", "args": [], "to": a_id})
    await until(lambda: len(got(v09, "a8", "fence")) == 1, 5, "a8's fence")
    assert got(v09, "a8", "after") == [[1]]
    await v09.cmd("close", client="a8")


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["stopped", "killed"])
async def test_a_host_of_ours_gone(
    master: MasterProcess,
    v09: V09Server,
    redis_server: EmbeddedRedis,
    redis_client: aioredis.Redis,
    how: signal.Signals,
) -> None:
    """With two hosts, a ch:* message reaches a 0.9 client once (one master relays them).
    Then one host goes: its sockets leave the 0.9 rooms, told by the host as it stops, or by
    our other master when the host no longer answers the roll call."""
    extra = ["--redis-store-09", "--redis-store-09-roll-call", str(ROLL_CALL)]
    room, watcher = f"g-{how.name}", f"w-{how.name}"
    with MasterProcess(redis_server.url, workers=1, extra=extra).start() as other:
        await other.ready()
        client = await Recorder("g").connect(other.url(0))
        try:
            await join(v09, client, room)
            w_id = await v09.cmd("connect", client=watcher, events=["chg", "fence"])
            await v09.cmd("join", client=watcher, room=room)
            await redis_client.publish("ch:chg", json.dumps({"to": room, "data": 1}))
            await redis_client.publish("ch:fence", json.dumps({"to": room}))
            await until(lambda: len(got(v09, watcher, "fence")) == 1, 5, "the fence")
            assert got(v09, watcher, "chg") == [[1]]
            await client.wait_count("fence", 1)
            assert client.got("chg") == [(1,)]
            await v09.cmd("emit", room=room, event="from09", args=[2])
            await v09.cmd("emit", room=room, event="fence09")
            await client.wait_count("fence09", 1)
            assert client.got("from09") == [(2,)]  # once, by the master holding it

            lost = r"master of ours \S+ silent for [\d.]+ s: lost"
            before = len(master.log_matches(lost))
            sid = client.sid()
            other.signal(how)
            await until_equal(lambda: members(v09, room), [w_id], "0.9's room", 10)
            assert sid not in await members(v09, None)
            # noticed by the roll call in both cases (a stopped host has also said so itself,
            # which of the two comes first is a matter of timing)
            await master.wait_log(lost, 10, before + 1)
        finally:
            await client.close()
            await v09.cmd("close", client=watcher)


async def test_malformed_store_messages_counted_and_ignored(
    master: MasterProcess,
    v09: V09Server,
    ours: list[Recorder],
    redis_client: aioredis.Redis,
) -> None:
    client = await connect(ours, master, 0)
    await join(v09, client, "m1")
    bad = [
        ("dispatch", b"not json"),
        ("dispatch", b'{"nodeId": 1}'),
        ("dispatch", b'{"nodeId": true, "args": []}'),
        ("dispatch", b'{"nodeId": 1, "args": ["/m1"]}'),
        ("dispatch", b'{"nodeId": 1, "args": ["/m1", "9:::x", null, []]}'),
        ("dispatch", b'{"nodeId": 1, "args": ["/m1", "5::/chat:{\\"name\\":\\"x\\"}", null, []]}'),
        ("dispatch", b'{"nodeId": 1, "args": ["/m1", "5:::{\\"name\\":\\"x\\"}", null, "no"]}'),
        ("dispatch-remote", b'{"nodeId": 1, "args": [[], "5:::{\\"name\\":\\"x\\"}"]}'),
        ("join", b'{"nodeId": 1, "args": ["id"]}'),
        ("leave", b'{"nodeId": 1, "args": [7, {}]}'),
        ("disconnect-remote", b'{"nodeId": 1, "args": [null]}'),
        ("join", b"\xff\xfe"),
    ]
    before = master.metrics()
    for channel, body in bad:
        await redis_client.publish(channel, body)
    await v09.cmd("emit", room="m1", event="after", args=[1])
    await client.wait_count("after", 1)
    after = master.metrics()

    def malformed(samples: dict[str, float], channel: str) -> float:
        return samples.get(f'sio_master_store09_malformed_total{{channel="{channel}"}}', 0.0)

    for channel in ("dispatch", "dispatch-remote", "join", "leave", "disconnect-remote"):
        expected = sum(1 for c, _ in bad if c == channel)
        assert malformed(after, channel) - malformed(before, channel) == expected, channel
    assert client.got("after") == [(1,)] and client.got("x") == []
    assert master.proc is not None and master.proc.poll() is None
