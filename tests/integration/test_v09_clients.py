"""``--allow-v09``: socket.io-client 0.9.16 (Socket.IO protocol 1) beside current clients.

One cluster for the module: one port, two workers, socket.io 0.9 heartbeats every second
(``tests/v09_app.py``), so every test also shows 0.9 clients staying connected through many
heartbeats. The 0.9 clients are the real npm package (``tests/node/v09_clients.js``); the
current ones are python-socketio clients. Each test asserts exact deliveries.
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
from sio_cluster.wire.sio09.packets import Ack, decode_packet, decode_payload, encode_payload
from tests.cluster import MasterProcess, op, until, until_equal
from tests.node_peer import NodePeerError, V09Clients, ensure_node_modules, missing_tools

pytestmark = pytest.mark.skipif(
    missing_tools() is not None, reason=f"the 0.9 clients are npm packages: {missing_tools()}"
)
APP = "tests.v09_app:setup"
TRANSPORTS = ["websocket", "xhr-polling"]
EVENTS = ["tick", "shout", "echo"]


@pytest.fixture(scope="module")
def node_clients() -> Iterator[V09Clients]:
    ensure_node_modules()
    with V09Clients().start() as clients:
        yield clients


@pytest.fixture
async def old(node_clients: V09Clients) -> AsyncIterator[V09Clients]:
    """The module's old-client process, with no client left from another test."""
    async with node_clients.for_one_test() as clients:
        yield clients


@pytest.fixture(scope="module")
def v09_cluster(redis_server: EmbeddedRedis) -> Iterator[MasterProcess]:
    master = MasterProcess(
        redis_server.url, workers=2, extra=["--allow-v09"], app=APP, one_port=True
    )
    with master.start() as started:
        yield started.ready_sync()
        errors = [line for line in started.lines if " ERROR " in line or "Traceback" in line]
        assert errors == [], errors


def http(url: str, body: bytes | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def handshake(url: str, query: str = "t=1") -> tuple[int, str]:
    return await asyncio.to_thread(http, f"{url}/socket.io/1/?{query}")


async def on_both_workers(old: V09Clients, url: str, transport: str, prefix: str) -> dict[str, int]:
    """Connect 0.9 clients until each worker holds one (the balancer alternates); name ->
    worker pid."""
    pids: dict[str, int] = {}
    for number in range(6):
        name = f"{prefix}{number}"
        await old.cmd("connect", client=name, url=url, transports=[transport], events=EVENTS)
        (pid,) = await old.cmd("call", client=name, event="pid")
        if pid in pids.values():
            await old.cmd("close", client=name)
            continue
        pids[name] = pid
        if len(pids) == 2:
            return pids
    raise AssertionError(f"0.9 clients all on one worker: {pids}")


async def got_count(old: V09Clients, client: str, event: str, count: int) -> None:
    await until(lambda: len(old.got(client, event)) >= count, 10, f"{count} x {event} at {client}")


def metric_sum(master: MasterProcess, name: str) -> float:
    return sum(master.metric(f'{name}{{worker="{worker}"}}') for worker in (0, 1))


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_v09_and_current_clients_in_one_room_get_each_message_once(
    v09_cluster: MasterProcess,
    old: V09Clients,
    clients: Callable[..., Any],
    redis_client: aioredis.Redis,
    transport: str,
) -> None:
    """0.9 clients on both workers and python-socketio clients in one room: a numbered
    ``ch:*`` stream, a broadcast from a current client's handler and one from a 0.9
    client's, each arrive exactly once at each, in order."""
    room = f"mixed-{transport}"
    url = v09_cluster.url(0)
    names = list(await on_both_workers(old, url, transport, f"mixed-{transport}-"))
    for name in names:
        assert await old.cmd("call", client=name, event="join", args=[room]) == [[room]]
    new = [await clients(url, f"new{number}") for number in range(2)]
    for client in new:
        assert await client.call("join", room) == [room]

    for number in range(20):
        await redis_client.publish("ch:tick", json.dumps({"to": room, "data": number}))
    await new[0].call("emit", {"event": "shout", "args": ["from new", "wörld 😀"], "to": room})
    spec = {"event": "shout", "args": ["from 0.9", {"n": [1, None]}], "to": room}
    assert await old.cmd("call", client=names[0], event="emit", args=[spec]) == [True]
    await redis_client.publish("ch:tick", json.dumps({"to": room, "data": "end"}))
    # fences on the handler broadcasts' path (worker -> master -> workers) too, one from each
    # origin, sent after its shout: a duplicate of a shout would be in before them
    fences = [["fence", "new"], ["fence", "0.9"]]
    await new[0].call("emit", {"event": "shout", "args": fences[0], "to": room})
    spec = {"event": "shout", "args": fences[1], "to": room}
    assert await old.cmd("call", client=names[0], event="emit", args=[spec]) == [True]

    expected = [*range(20), "end"]
    shouts = [["from new", "wörld 😀"], ["from 0.9", {"n": [1, None]}], *fences]

    def fenced() -> bool:
        return all(f in old.got(n, "shout") for f in fences for n in names) and all(
            tuple(f) in c.got("shout") for f in fences for c in new
        )

    for name in names:
        await got_count(old, name, "tick", 21)
    for client in new:
        await client.wait_count("tick", 21)
    await until(fenced, 10, "both fences at every client")
    # the last tick was published after everything: a duplicate would be in before it
    for name in names:
        assert [args[0] for args in old.got(name, "tick")] == expected, name
        assert sorted(old.got(name, "shout"), key=str) == sorted(shouts, key=str), name
    for client in new:
        assert [args[0] for args in client.got("tick")] == expected
        assert sorted((list(a) for a in client.got("shout")), key=str) == sorted(shouts, key=str)
    assert old.disconnects == []


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_acks_both_ways_and_messages(
    v09_cluster: MasterProcess, old: V09Clients, clients: Callable[..., Any], transport: str
) -> None:
    """A 0.9 client's emit with a callback gets the handler's answer; a server ``call`` to a
    0.9 client, made from whichever worker a current client is on, gets the 0.9 client's
    answer; ``send`` and ``json.send`` reach the ``message`` handler."""
    url = v09_cluster.url(0)
    found = await old.cmd("connect", client="asked", url=url, transports=[transport])
    assert found["transport"] == transport
    await old.cmd("answer", client="asked", event="question", reply={"answer": 42})
    asker = await clients(url, "asker")
    answer = await op(asker, "call", sid=found["id"], event="question", data="life?")
    assert answer == {"answer": 42}
    assert old.got("asked", "question") == [["life?"]]
    await old.cmd("connect", client="talker", url=url, transports=[transport], events=["echo"])
    await old.cmd("send", client="talker", data="plain text: with colons")
    await old.cmd("json", client="talker", data={"a": [1, "é"]})
    await until(lambda: len(old.got("talker", "echo")) >= 2, 10, "two echoes")
    assert old.got("talker", "echo") == [["plain text: with colons"], [{"a": [1, "é"]}]]


async def test_namespaces_and_the_handshake_query(
    v09_cluster: MasterProcess, old: V09Clients
) -> None:
    """``/``'s connect handler sees the handshake's query string and gets its fields as auth;
    ``of('/chat')`` connects that namespace with the same auth, and the socket's id is the
    session id in every namespace, as 0.9's ``socket.id`` is."""
    url = v09_cluster.url(0)
    found = await old.cmd("connect", client="main", url=url, query="token=t1&room=a%20b")
    (seen,) = await old.cmd("call", client="main", event="handshake")
    assert seen["query"].startswith("token=t1&room=a%20b&t=")
    assert {key: seen["auth"][key] for key in ("token", "room")} == {"token": "t1", "room": "a b"}
    await old.cmd("of", client="main-chat", on="main", namespace="/chat")
    (whoami,) = await old.cmd("call", client="main-chat", event="whoami")
    assert whoami["sid"] == found["id"]
    assert whoami["auth"] == seen["auth"]
    await old.cmd("close", client="main-chat")  # leaves /chat only
    assert await old.cmd("call", client="main", event="join", args=["still"]) == [["still"]]
    assert old.disconnects == [{"client": "main-chat", "reason": None}]
    await old.cmd("connect", client="bad-token", url=url, query="token=refuse")
    with pytest.raises(NodePeerError, match="connect_failed: unauthorized"):
        await old.cmd("of", client="bad-token-chat", on="bad-token", namespace="/chat")
    assert await old.cmd("call", client="bad-token", event="join", args=["r"]) == [["r"]]


async def test_a_refused_handshake_and_the_transports_offered(
    v09_cluster: MasterProcess, old: V09Clients
) -> None:
    """``/`` refusing answers the handshake 403, which a 0.9 client reports as its error;
    the handshake offers websocket and xhr-polling only; the rest is refused with 400."""
    url = v09_cluster.url(0)
    told = await old.cmd("refused", url=url, query="token=nobody")
    assert told == {"error": "handshake unauthorized"}
    status, body = await handshake(url)
    assert status == 200
    sid, heartbeat, close, transports = body.split(":")
    assert (heartbeat, close, transports) == ("2", "2", "websocket,xhr-polling")
    for transport in ("flashsocket", "htmlfile", "jsonp-polling"):
        status, _ = await asyncio.to_thread(http, f"{url}/socket.io/1/{transport}/{sid}?t=1")
        assert status == 400, transport
    assert (await handshake(url, "t=1&jsonp=0"))[0] == 400
    await asyncio.to_thread(http, f"{url}/socket.io/1/xhr-polling/{sid}/?disconnect=1")


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_disconnects_both_ways(
    v09_cluster: MasterProcess, old: V09Clients, clients: Callable[..., Any], transport: str
) -> None:
    """The server's ``disconnect`` reaches the 0.9 client (0.9's ``booted``, not a lost
    connection it would reconnect after) and empties its rooms; a 0.9 client's own
    disconnect leaves its rooms at once. Over xhr-polling the client is kicked while no GET
    of it is pending: the next one gets its ``0::``."""
    url = v09_cluster.url(0)
    room = f"leaving-{transport}"
    kicked = await old.cmd("connect", client="kicked", url=url, transports=[transport])
    left = await old.cmd("connect", client="left", url=url, transports=[transport])
    for name in ("kicked", "left"):
        assert await old.cmd("call", client=name, event="join", args=[room]) == [[room]]
    admin = await clients(url, "admin")
    members = await op(admin, "fetch_sockets", to=room)
    assert sorted(m["id"] for m in members) == sorted([kicked["id"], left["id"]])
    if transport == "xhr-polling":
        await old.cmd("hold", client="kicked")
    await op(admin, "disconnect", sid=kicked["id"])
    if transport == "xhr-polling":

        async def members_left() -> list[str]:
            return [m["id"] for m in await op(admin, "fetch_sockets", to=room)]

        await until_equal(members_left, [left["id"]], "the kicked one closed")
        await old.cmd("release", client="kicked")
    await until(lambda: old.disconnects != [], 10, "the 0.9 client told")
    assert old.disconnects == [{"client": "kicked", "reason": "booted"}]
    await old.cmd("close", client="left")
    await until_equal(lambda: op(admin, "fetch_sockets", to=room), [], "the room emptied")


async def test_malformed_frames_close_only_their_client_and_are_counted(
    v09_cluster: MasterProcess, old: V09Clients
) -> None:
    """A malformed frame over websocket and a malformed POST each close their client and
    count once; another 0.9 client on the same workers goes on. An event named as
    python-socketio's own ``connect`` is dropped (as 0.9 drops a blacklisted one), not
    counted, and its client goes on; ``error`` is an ordinary event."""
    url = v09_cluster.url(0)
    await old.cmd("connect", client="bystander", url=url, transports=["xhr-polling"])
    bad_before = metric_sum(v09_cluster, "sio_master_v09_bad_frames")
    await old.cmd("connect", client="garbler", url=url)
    await old.cmd("raw", client="garbler", text='5:::{"name":')
    await until(lambda: len(old.disconnects) == 1, 10, "the garbler closed")
    assert old.disconnects == [{"client": "garbler", "reason": "booted"}]
    await old.cmd("connect", client="impostor", url=url, events=["echo"])
    await old.cmd("raw", client="impostor", text='5:::{"name":"connect","args":[{}]}')
    await old.cmd("raw", client="impostor", text='5:::{"name":"disconnect","args":["x"]}')
    await old.cmd("emit", client="impostor", event="error", args=["mine"])
    await until(lambda: old.got("impostor", "echo") != [], 10, "the error event echoed")
    assert old.got("impostor", "echo") == [["mine"]]  # the connect and disconnect: dropped
    assert await old.cmd("call", client="impostor", event="join", args=["r"]) == [["r"]]
    status, body = await handshake(url)
    sid = body.split(":")[0]
    assert (await asyncio.to_thread(http, f"{url}/socket.io/1/xhr-polling/{sid}", b"9::"))[0] == 400
    poll = f"{url}/socket.io/1/xhr-polling/{sid}"
    told = encode_payload(["1::", "0::"])  # the connect it never polled for, and its 0::
    assert await asyncio.to_thread(http, poll) == (200, told)
    assert await asyncio.to_thread(http, poll) == (400, "client not handshaken")  # gone
    await until(
        lambda: metric_sum(v09_cluster, "sio_master_v09_bad_frames") == bad_before + 2,
        20,
        "the two counted",
    )
    assert await old.cmd("call", client="bystander", event="join", args=["fine"]) == [["fine"]]
    assert old.disconnects == [{"client": "garbler", "reason": "booted"}]


async def test_a_silent_session_is_closed_by_heartbeats(
    v09_cluster: MasterProcess, old: V09Clients
) -> None:
    """A session that never answers the server's ``2::`` is closed once the heartbeat
    timeout is over (1 s + 1 s here, not before), while a 0.9 client that answers, connected
    before it, stays through those heartbeats."""
    url = v09_cluster.url(0)
    await old.cmd("connect", client="alive", url=url, transports=["xhr-polling"], events=EVENTS)
    loop = asyncio.get_running_loop()
    started = loop.time()  # before the handshake, where its heartbeats start
    status, body = await handshake(url)
    sid = body.split(":")[0]
    poll = f"{url}/socket.io/1/xhr-polling/{sid}"
    assert await asyncio.to_thread(http, poll) == (200, "1::")  # connected, then silent
    answers = []
    while loop.time() - started < 15:
        answer = await asyncio.to_thread(http, poll)
        answers.append(answer)
        if answer[0] == 400:
            break
    closed_after = loop.time() - started
    assert answers[-1] == (400, "client not handshaken"), answers
    assert (200, "2::") in answers  # the heartbeat it never answered
    assert closed_after >= 2.0  # a heartbeat interval, then its timeout: never sooner
    assert await old.cmd("call", client="alive", event="join", args=["alive"]) == [["alive"]]
    assert old.disconnects == []


async def test_a_raw_polling_session_with_a_payload_of_packets(
    v09_cluster: MasterProcess,
) -> None:
    """Protocol 1 by hand over one port, each request on a new connection (routed by the sid
    in its path): a POST of two packets in one U+FFFD payload gets both acks."""
    url = v09_cluster.url(0)
    status, body = await handshake(url)
    sid = body.split(":")[0]
    endpoint = f"{url}/socket.io/1/xhr-polling/{sid}"
    assert await asyncio.to_thread(http, endpoint) == (200, "1::")
    posted = encode_payload(['5:1+::{"name":"join","args":["raw é"]}', '5:2+::{"name":"pid"}'])
    assert await asyncio.to_thread(http, endpoint, posted.encode()) == (200, "1")
    packets: list[str] = []
    while len([p for p in packets if p.startswith("6:")]) < 2:
        status, body = await asyncio.to_thread(http, endpoint)
        assert status == 200
        packets += decode_payload(body)
    acks = {
        a.ack_id: a.args
        for a in (decode_packet(p) for p in packets if p.startswith("6:"))
        if isinstance(a, Ack)
    }
    assert acks[1] == (["raw é"],)
    assert isinstance(acks[2][0], int)  # a worker's pid (handlers run concurrently: any order)
    await asyncio.to_thread(http, f"{url}/socket.io/1//{sid}/?disconnect=1")
    assert await asyncio.to_thread(http, endpoint) == (400, "client not handshaken")


async def test_gauges_count_v09_clients(v09_cluster: MasterProcess, old: V09Clients) -> None:
    await until(lambda: metric_sum(v09_cluster, "sio_master_v09_clients") == 0.0, 20, "none left")
    for number in range(3):
        await old.cmd("connect", client=f"counted{number}", url=v09_cluster.url(0))
    await until(
        lambda: metric_sum(v09_cluster, "sio_master_v09_clients") == 3.0, 20, "three counted"
    )


async def test_without_the_option_protocol_1_is_not_served(redis_server: EmbeddedRedis) -> None:
    with MasterProcess(redis_server.url, workers=1, app=APP).start() as master:
        await master.ready()
        assert (await handshake(master.url(0)))[0] == 404


async def test_a_query_with_a_sid_of_its_own_still_reaches_the_session(
    v09_cluster: MasterProcess, old: V09Clients
) -> None:
    """socket.io-client 0.9 appends the application's ``query`` to every transport URL: a
    ``sid=`` there is the application's, and every request of the session still reaches the
    session's worker (routed by the sid in its path) over xhr-polling on one port."""
    url = v09_cluster.url(0)
    await old.cmd(
        "connect", client="cookie", url=url, transports=["xhr-polling"], query="sid=usercookie"
    )
    pids = {(await old.cmd("call", client="cookie", event="pid"))[0] for _ in range(8)}
    assert len(pids) == 1
    (seen,) = await old.cmd("call", client="cookie", event="handshake")
    assert seen["auth"]["sid"] == "usercookie"
    assert old.disconnects == []


async def test_bare_handshakes_count_against_max_connections(redis_server: EmbeddedRedis) -> None:
    """python-socketio's connect runs at the 0.9 handshake itself, so a handshake whose client
    never opens a transport holds a socket until its heartbeats time out: a flood of them is
    refused at ``--max-connections`` (503), and counted."""
    extra = ["--allow-v09", "--max-connections", "2"]
    app = "tests.eio3_app:setup"  # 25 s heartbeats: the bare handshakes stay for the test
    with MasterProcess(redis_server.url, workers=1, extra=extra, app=app).start() as master:
        await master.ready()
        answers = [await handshake(master.url(0)) for _ in range(4)]
        assert [status for status, _ in answers] == [200, 200, 503, 503]
        assert answers[2][1] == "this worker is full"
        await until(
            lambda: master.metric('sio_master_connections_refused{worker="0"}') == 2.0,
            20,
            "both refusals counted",
        )
