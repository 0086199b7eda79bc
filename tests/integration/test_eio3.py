"""``--allow-eio3``: socket.io-client 2.5.0 and 1.7.4 (Engine.IO 3) beside current clients.

The old clients are the real npm packages (``tests/node/legacy.js``); the current ones are
python-socketio clients. Each test asserts exact deliveries: who got what, how many times.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from sio_cluster.master.embedded_redis import EmbeddedRedis
from tests.cluster import MasterProcess, op, until
from tests.node_peer import LegacyClients, ensure_node_modules, missing_tools

pytestmark = pytest.mark.skipif(
    missing_tools() is not None, reason=f"the old clients are npm packages: {missing_tools()}"
)
APP = "tests.eio3_app:setup"
ALLOW = ["--allow-eio3"]
TRANSPORTS = {
    "websocket": ["websocket"],
    "polling": ["polling"],
    "upgrade": ["polling", "websocket"],
}
REFUSAL = "The client is using an unsupported version of the Socket.IO or Engine.IO protocols"


@pytest.fixture(scope="module")
def node_clients() -> Iterator[LegacyClients]:
    ensure_node_modules()
    with LegacyClients().start() as clients:
        yield clients


@pytest.fixture
async def old(node_clients: LegacyClients) -> AsyncIterator[LegacyClients]:
    """The module's old-client process, with no client left from another test."""
    async with node_clients.for_one_test() as clients:
        yield clients


@pytest.fixture(scope="module")
def eio3_cluster(redis_server: EmbeddedRedis) -> Iterator[MasterProcess]:
    with MasterProcess(redis_server.url, workers=2, extra=ALLOW, app=APP).start() as master:
        yield master.ready_sync()


@pytest.fixture(scope="module")
def eio3_one_port(redis_server: EmbeddedRedis) -> Iterator[MasterProcess]:
    """Two workers behind the master's one port (the default layout, no --worker-ports)."""
    with MasterProcess(
        redis_server.url, workers=2, extra=ALLOW, app=APP, one_port=True
    ).start() as master:
        yield master.ready_sync()


def http_get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


async def got_count(old: LegacyClients, client: str, event: str, count: int) -> None:
    await until(lambda: len(old.got(client, event)) >= count, 10, f"{count} x {event} at {client}")


def v3_handshake(base: str) -> str:
    """A raw v3 long-polling session's sid (``base``: the endpoint with ``EIO=3``)."""
    status, body = http_get(base + "&t=raw")
    assert status == 200
    opening = v3_records(body.decode())[0]
    return str(json.loads(opening[1:])["sid"])


def v3_close(base: str, sid: str) -> None:
    """End a raw v3 session as a client does: a CLOSE packet."""
    request = urllib.request.Request(f"{base}&sid={sid}", data=b"1:1", method="POST")
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200


def v3_records(body: str) -> list[str]:
    """A v3 text payload's records (ASCII only: the lengths are then character counts)."""
    records = []
    while body:
        length, _, rest = body.partition(":")
        records.append(rest[: int(length)])
        body = rest[int(length) :]
    return records


@pytest.mark.parametrize("transport", ["websocket", "polling", "upgrade"])
async def test_old_and_new_clients_in_one_room_get_each_message_once(
    eio3_cluster: MasterProcess,
    old: LegacyClients,
    clients: Callable[..., Any],
    redis_client: aioredis.Redis,
    transport: str,
) -> None:
    """v2 and v1 clients and python-socketio clients in one room, spread over both workers:
    a numbered ``ch:*`` stream, a handler's broadcast from a new client and one from an old
    client (with binary), each arrive exactly once at each, in order."""
    room = f"mixed-{transport}"
    events = ["tick", "shout"]
    old_clients = {"v2a": (0, 2), "v2b": (1, 2), "v1": (1, 1)}  # name -> (worker, version)
    for name, (worker, version) in old_clients.items():
        await old.cmd(
            "connect",
            client=name,
            url=eio3_cluster.url(worker),
            version=version,
            transports=TRANSPORTS[transport],
            events=events,
        )
        assert await old.cmd("call", client=name, event="join", args=[room]) == [[room]]
    new = [await clients(eio3_cluster.url(w), f"new{w}") for w in (0, 1)]
    for client in new:
        assert await client.call("join", room) == [room]

    for number in range(20):
        await redis_client.publish("ch:tick", json.dumps({"to": room, "data": number}))
    await new[0].call("emit", {"event": "shout", "args": ["from new", "wörld 😀"], "to": room})
    ack = await old.cmd(
        "call",
        client="v2a",
        event="emit",
        args=[{"event": "shout", "args": ["from old", b"\x00\x01\xff"], "to": room}],
    )
    assert ack == [True]

    shouts = [["from new", "wörld 😀"], ["from old", b"\x00\x01\xff"]]
    for name in old_clients:
        await got_count(old, name, "shout", 2)
    for client in new:
        await client.wait_count("shout", 2)
        await client.wait_count("tick", 20)
    for name in old_clients:
        await got_count(old, name, "tick", 20)
    # a last tick after everything: each connection is in order, so a duplicate of anything
    # before it would be in before it
    await redis_client.publish("ch:tick", json.dumps({"to": room, "data": "end"}))
    expected = [*range(20), "end"]
    for name in old_clients:
        await got_count(old, name, "tick", 21)
        assert [args[0] for args in old.got(name, "tick")] == expected, name
        assert old.got(name, "shout") == shouts, name
    for client in new:
        await client.wait_count("tick", 21)
        assert [args[0] for args in client.got("tick")] == expected
        assert [list(args) for args in client.got("shout")] == shouts
    for name in old_clients:
        assert await old.cmd("transport", client=name) == TRANSPORTS[transport][-1]


async def test_every_old_transport_through_the_one_port_on_both_workers(
    eio3_one_port: MasterProcess, old: LegacyClients, redis_client: aioredis.Redis
) -> None:
    """socket.io-client 2.x through the master's one port: polling (every request names its
    v3 sid, which names the worker), websocket, and polling then upgrade (the upgrade request
    names the sid too). Clients of each transport are added until that transport has one on
    each worker; a numbered ``ch:*`` stream to their room then arrives exactly once, in
    order, at every client, and each ends on the transport it asked for."""
    room = "one-port-eio3"
    workers = set(eio3_one_port.worker_pids().values())
    assert len(workers) == 2
    placed: dict[str, dict[int, list[str]]] = {transport: {} for transport in TRANSPORTS}
    for transport, transports in TRANSPORTS.items():
        for n in range(6):  # new sessions alternate between equal workers: 2 are enough
            if set(placed[transport]) == workers:
                break
            name = f"{transport}-{n}"
            url = eio3_one_port.url(0)
            await old.cmd("connect", client=name, url=url, transports=transports, events=["tick"])
            assert await old.cmd("call", client=name, event="join", args=[room]) == [[room]]
            [pid] = await old.cmd("call", client=name, event="pid")
            placed[transport].setdefault(pid, []).append(name)
        assert set(placed[transport]) == workers, placed

    names = [name for by_pid in placed.values() for group in by_pid.values() for name in group]
    for number in range(20):
        await redis_client.publish("ch:tick", json.dumps({"to": room, "data": number}))
    await redis_client.publish("ch:tick", json.dumps({"to": room, "data": "end"}))
    expected = [*range(20), "end"]
    for name in names:
        await got_count(old, name, "tick", 21)
    for name in names:
        assert [args[0] for args in old.got(name, "tick")] == expected, name
        transport = name.rsplit("-", 1)[0]
        assert await old.cmd("transport", client=name) == TRANSPORTS[transport][-1], name
    assert old.disconnects == []


async def test_acks_both_ways_across_workers(
    eio3_cluster: MasterProcess, old: LegacyClients, clients: Callable[..., Any]
) -> None:
    """An old client's emit with ack is answered; the server's ``call`` to an old client,
    made from the other worker, gets the client's answer."""
    found = await old.cmd("connect", client="asked", url=eio3_cluster.url(1), events=[])
    await old.cmd("answer", client="asked", event="question", reply={"answer": 42})
    asker = await clients(eio3_cluster.url(0), "asker")
    answer = await op(asker, "call", sid=found["id"], event="question", data="life?")
    assert answer == {"answer": 42}
    assert old.got("asked", "question") == [["life?"]]
    assert await old.cmd("call", client="asked", event="pid") != [None]


@pytest.mark.parametrize("version", [2, 1])
async def test_a_namespace_connect_query_is_the_auth_and_the_id_is_nodes(
    eio3_cluster: MasterProcess, old: LegacyClients, version: int
) -> None:
    """``io(url + "/chat", {query})``: the server's connect handler gets the query as auth,
    and the socket's id is ``/chat#<engine.io id>``, as with Node's server: what a 2.x client
    believes its ``socket.id`` is (a 1.x client believes it is the bare engine.io id)."""
    found = await old.cmd(
        "connect",
        client="chatter",
        url=eio3_cluster.url(0) + "/chat",
        version=version,
        query={"token": "t1", "room": "a b"},
    )
    sid = f"/chat#{found['engineId']}"
    assert found["id"] == (sid if version == 2 else found["engineId"])
    whoami = await old.cmd("call", client="chatter", event="whoami")
    assert whoami == [{"sid": sid, "auth": {"token": "t1", "room": "a b"}}]


async def test_a_refused_connect_reaches_the_old_client_as_its_error(
    eio3_cluster: MasterProcess, old: LegacyClients
) -> None:
    told = await old.cmd(
        "refused", client="refused", url=eio3_cluster.url(0) + "/chat", query={"token": "refuse"}
    )
    assert told == {"error": {"reason": "bad token"}}


async def test_the_handshake_is_engine_io_3s(eio3_cluster: MasterProcess) -> None:
    """A v3 long-polling handshake is answered with v3 records: OPEN, then the CONNECT to
    ``/`` that socket.io 4 sends a v3 client without being asked."""
    base = eio3_cluster.url(0) + "/socket.io/?EIO=3&transport=polling"
    status, body = http_get(base + "&t=a")
    assert status == 200
    opening, connect = v3_records(body.decode())
    v3_close(base, json.loads(opening[1:])["sid"])
    assert opening.startswith("0{") and set(json.loads(opening[1:])) >= {
        "sid",
        "upgrades",
        "pingInterval",
        "pingTimeout",
    }
    assert connect == "40"


async def test_metrics_count_old_clients(eio3_cluster: MasterProcess, old: LegacyClients) -> None:
    def gauges() -> tuple[float, float]:
        return (
            eio3_cluster.metric('sio_master_eio3_clients{worker="0"}'),
            eio3_cluster.metric('sio_master_eio3_clients{worker="1"}'),
        )

    await until(lambda: gauges() == (0.0, 0.0), 30, "no old client left from other tests")
    for name, worker in (("counted-a", 0), ("counted-b", 1), ("counted-c", 1)):
        await old.cmd("connect", client=name, url=eio3_cluster.url(worker))
    await until(
        lambda: (
            (
                eio3_cluster.metric('sio_master_eio3_clients{worker="0"}'),
                eio3_cluster.metric('sio_master_eio3_clients{worker="1"}'),
            )
            == (1.0, 2.0)
        ),
        20,
        "the eio3 client gauge",
    )


async def test_an_undecodable_payload_closes_only_that_client(
    eio3_cluster: MasterProcess, old: LegacyClients
) -> None:
    await old.cmd("connect", client="bystander", url=eio3_cluster.url(0), events=["tick"])
    before = eio3_cluster.metric('sio_master_bad_clients_dropped{worker="0"}')
    base = eio3_cluster.url(0) + "/socket.io/?EIO=3&transport=polling"
    sid = v3_handshake(base)
    request = urllib.request.Request(
        f"{base}&sid={sid}", data=b"9:4short", method="POST", headers={"Content-Type": "text/plain"}
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    assert refused.value.code == 400
    assert http_get(f"{base}&sid={sid}")[0] == 400  # the session is gone
    await until(
        lambda: eio3_cluster.metric('sio_master_bad_clients_dropped{worker="0"}') == before + 1,
        20,
        "the bad client counted",
    )
    assert await old.cmd("call", client="bystander", event="join", args=["still"]) == [["still"]]
    assert old.disconnects == []


async def test_without_the_option_old_clients_are_refused_as_before(
    redis_server: EmbeddedRedis, old: LegacyClients, clients: Callable[..., Any]
) -> None:
    with MasterProcess(redis_server.url, workers=1, app=APP).start() as master:
        await master.ready()
        status, body = http_get(master.url(0) + "/socket.io/?EIO=3&transport=polling&t=c")
        assert (status, json.loads(body)) == (400, REFUSAL)
        told = await old.cmd("refused", client="turned-away", url=master.url(0))
        assert "connected" not in told and "connectError" in told
        current = await clients(master.url(0), "current")
        assert await current.call("join", "fine") == ["fine"]


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_old_clients_ping_and_stay_while_a_silent_one_is_closed(
    redis_server: EmbeddedRedis,
    old: LegacyClients,
    redis_client: aioredis.Redis,
    transport: str,
) -> None:
    """engine.io pings every second here and waits one more. Old clients ping the server
    instead (the v3 direction) and must stay connected through many of its intervals; a v3
    session that never pings is closed by engine.io's own ping timeout."""
    app = "tests.eio3_app:setup_fast_pings"
    with MasterProcess(redis_server.url, workers=1, extra=ALLOW, app=app).start() as master:
        await master.ready()
        await old.cmd(
            "connect",
            client="pinger",
            url=master.url(0),
            transports=TRANSPORTS[transport],
            events=["tick"],
        )
        assert await old.cmd("call", client="pinger", event="join", args=["alive"]) == [["alive"]]
        base = master.url(0) + "/socket.io/?EIO=3&transport=polling"
        silent = v3_handshake(base)
        # the silent session is closed: a poll gets its CLOSE, or (once gone) a 400
        closed_at = None
        loop = asyncio.get_running_loop()
        started = loop.time()
        while loop.time() - started < 15:
            status, body = await asyncio.to_thread(http_get, f"{base}&sid={silent}")
            if status == 400 or "1" in v3_records(body.decode()):
                closed_at = loop.time() - started
                break
        assert closed_at is not None, "a v3 session that never pings was never closed"
        # the pinging client outlived several of engine.io's intervals, and is still routed
        await until(lambda: loop.time() - started >= 6, 10, "six ping intervals")
        assert old.disconnects == []
        await redis_client.publish("ch:tick", json.dumps({"to": "alive", "data": "still"}))
        await until(lambda: old.got("pinger", "tick") == [["still"]], 10, "the tick")


async def test_an_old_client_is_a_socket_like_any_other_across_hosts(
    redis_server: EmbeddedRedis,
    old: LegacyClients,
    clients: Callable[..., Any],
    redis_client: aioredis.Redis,
) -> None:
    """Two hosts; an old client on host B (with ``--store``): a handler's room emit on host A
    reaches it once, host A's ``call`` to it gets its answer, ``fetch_sockets`` on A lists it
    with its rooms, and the store holds its keys as it holds any socket's."""
    with (
        MasterProcess(redis_server.url, workers=1, extra=ALLOW, app=APP).start() as a,
        MasterProcess(redis_server.url, workers=1, extra=[*ALLOW, "--store"], app=APP).start() as b,
    ):
        await a.ready()
        await b.ready()
        found = await old.cmd("connect", client="far", url=b.url(0), events=["news"])
        sid = found["id"]
        assert await old.cmd("call", client="far", event="join", args=["hosts"]) == [["hosts"]]
        await old.cmd("answer", client="far", event="question", reply="from B")
        near = await clients(a.url(0), "near")
        assert await near.call("join", "hosts") == ["hosts"]

        await near.call("emit", {"event": "news", "args": ["one"], "to": "hosts"})
        await near.call("emit", {"event": "news", "args": ["end"], "to": "hosts"})
        await until(lambda: len(old.got("far", "news")) >= 2, 10, "news on host B")
        assert old.got("far", "news") == [["one"], ["end"]]
        await near.wait_count("news", 2)
        assert [args[0] for args in near.got("news")] == ["one", "end"]

        assert await op(near, "call", sid=sid, event="question", data="hi") == "from B"
        sockets = await op(near, "fetch_sockets", to="hosts")
        expected = [
            {"id": member, "rooms": sorted([member, "hosts"])} for member in (sid, near.sid())
        ]
        assert sockets == sorted(expected, key=lambda s: s["id"])

        async def stored(key: str) -> set[str]:
            return {
                m.decode() if isinstance(m, bytes) else m for m in await redis_client.smembers(key)
            }

        async def keys_written() -> bool:
            return await stored(f"socket.io#{sid}") == {sid, "hosts"}

        await until(keys_written, 10, "the old client's store key")
        assert sid in await stored("socket.io#hosts")
