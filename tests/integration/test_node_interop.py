"""Our master and REAL Node.js peers on one Redis: socket.io 4.8 + @socket.io/redis-adapter 8.3,
socket.io-client 4.8 and @socket.io/redis-emitter 5.1 (pinned in tests/node/package-lock.json).

One master (two workers, ``tests.node_peer:setup_app``) and one Node server
(``tests/node/peer.js``) share the module's Redis; python-socketio clients connect to our
workers, socket.io-client clients to the Node server. Deliveries are checked exactly with a
fence along the same path; a Node server applies adapter requests in the order it reads them,
so a later request that it answers (a fetch) proves that an earlier one was applied.

The decode tests capture the bytes the Node packages publish (redis-py SUBSCRIBE on a Redis
of their own) and feed them to :mod:`master.bus.classic_wire`; the test plays the other server
where an answer is needed.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from functools import partial
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import aiohttp
import msgpack
import pytest
import redis
import redis.asyncio as aioredis
import socketio

from sio_cluster.master.bus.classic_wire import decode_broadcast, decode_request
from sio_cluster.master.embedded_redis import EmbeddedRedis
from tests.cluster import MasterProcess, Recorder, running_redis, until, until_equal
from tests.node_peer import NodePeer, NodePeerError, ensure_node_modules, missing_tools, run_emitter

pytestmark = pytest.mark.skipif(
    missing_tools() is not None, reason=f"Node.js interop tests: {missing_tools()}"
)

INTEROP_APP = "tests.node_peer:setup_app"
NAMESPACES = ("/", "/chat")
PROMPT = 2.0  # seconds: well under the 5 s a requester waits for answers that never come
OTHER_LOOPBACK = "127.0.0.2"  # a client address that is not the server's
# socket.io 4.8's Socket.buildHandshake, in its order
HANDSHAKE_FIELDS = "headers time address xdomain secure issued url query auth".split()


# ---- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def node_modules() -> None:
    ensure_node_modules()


@pytest.fixture(scope="module")
def master(redis_server: EmbeddedRedis) -> Iterator[MasterProcess]:
    """One master with two workers, shared by the module (it takes seconds to start)."""
    process = MasterProcess(redis_server.url, workers=2, app=INTEROP_APP).start()
    try:
        yield process.ready_sync()
    finally:
        process.cleanup()


@pytest.fixture(scope="module")
def peer(
    redis_server: EmbeddedRedis, master: MasterProcess, node_modules: None
) -> Iterator[NodePeer]:
    """The Node server, started once; ready when Redis counts both servers per namespace."""
    node = NodePeer(redis_server.url, requests_timeout_ms=3000).start()
    try:
        _wait_for_servers(redis_server.url, 2)
        yield node
    finally:
        node.close()


def _wait_for_servers(url: str, count: int, timeout: float = 10.0) -> None:
    client = redis.Redis.from_url(url)
    try:
        deadline = time.monotonic() + timeout
        channels = [f"socket.io-request#{n}#" for n in NAMESPACES]
        while [n for _, n in client.pubsub_numsub(*channels)] != [count] * len(channels):
            if time.monotonic() > deadline:
                raise AssertionError(f"not {count} servers on {channels}")
            time.sleep(0.02)
    finally:
        client.close()


@pytest.fixture
async def node(peer: NodePeer) -> AsyncIterator[NodePeer]:
    """The module's Node server; its clients are disconnected after each test."""
    try:
        yield peer
    finally:
        await peer.reset()


@pytest.fixture(scope="module")
def capture_redis(node_modules: None) -> Iterator[EmbeddedRedis]:
    """A Redis of the decode tests alone: nothing but what they publish is on it."""
    yield from running_redis()


@pytest.fixture(scope="module")
def capture_peer(capture_redis: EmbeddedRedis) -> Iterator[NodePeer]:
    node = NodePeer(capture_redis.url, requests_timeout_ms=3000).start()
    try:
        yield node
    finally:
        node.close()


# ---- helpers --------------------------------------------------------------------------------


async def op(client: Recorder, name: str, **spec: Any) -> Any:
    """Have ``client``'s worker run a server-side call (``tests/probe_app.py``'s ``op``)."""
    return await client.call("op", {"name": name, **spec})


async def timed(awaitable: Any) -> tuple[Any, float]:
    started = time.monotonic()
    result = await awaitable
    return result, time.monotonic() - started


async def fetched(client: Recorder, **spec: Any) -> list[dict[str, Any]]:
    """Our cluster-wide ``fetch_sockets`` (Node's answers included), run by ``client``'s worker."""
    result = await op(client, "fetch_sockets", **spec)
    if isinstance(result, dict):
        raise AssertionError(f"fetch_sockets failed: {result}")
    return list(result)


async def fetched_ids(client: Recorder, **spec: Any) -> set[str]:
    return {s["id"] for s in await fetched(client, **spec)}


async def settle(client: Recorder, expected: set[str]) -> None:
    """Wait until the cluster holds exactly ``expected`` (earlier tests' sockets are gone)."""

    async def ids() -> set[str] | None:
        try:
            return await fetched_ids(client)
        except AssertionError:  # a leftover socket in an integer room: the probe cannot sort
            return None

    await until_equal(ids, expected, "sockets of the cluster")


async def wait_marks(recorders: list[Recorder], node: NodePeer, names: list[str], n: int) -> None:
    """The fence: every python client and Node client got ``n`` x ``mark``."""
    for r in recorders:
        await r.wait_count("mark", n)
    for name in names:
        await node.wait_count(name, "mark", n)


def answering(recorder: Recorder) -> Recorder:
    """Make a python client answer ``question`` with ``["py", data]``."""

    def question(data: Any) -> list[Any]:
        recorder.events.append(("/", "question", (data,)))
        return ["py", data]

    recorder.client.on("question", question)
    return recorder


class Capture:
    """Every message published on the adapter's channels of a Redis, as ``(channel, body)``.

    Broadcast channels by pattern; the request and response channels of each namespace by
    SUBSCRIBE, so Redis counts this capture as one more server (``PUBSUB NUMSUB``).
    """

    def __init__(self, url: str) -> None:
        self.client = aioredis.Redis.from_url(url)
        self.pubsub = self.client.pubsub()
        self.messages: list[tuple[str, bytes]] = []
        self._subscribed = 0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Capture:
        channels = [f"socket.io-{k}#{n}#" for k in ("request", "response") for n in NAMESPACES]
        await self.pubsub.psubscribe("socket.io#*")
        await self.pubsub.subscribe(*channels)
        self._task = asyncio.create_task(self._read())
        await until(lambda: self._subscribed == 1 + len(channels), what="capture subscribed")
        return self

    async def _read(self) -> None:
        while True:
            message = await self.pubsub.get_message(timeout=1.0)
            if message is None:
                continue
            if message["type"] in ("subscribe", "psubscribe"):
                self._subscribed += 1
            elif message["type"] in ("message", "pmessage"):
                self.messages.append((message["channel"].decode(), message["data"]))

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
        await self.pubsub.aclose()
        await self.client.aclose()

    def on(self, prefix: str) -> list[tuple[str, bytes]]:
        return [(c, b) for c, b in list(self.messages) if c.startswith(prefix)]

    def requests(self) -> list[dict[str, Any]]:
        return [decode_request(b) for _, b in self.on("socket.io-request#")]

    def responses(self) -> list[dict[str, Any]]:
        return [decode_request(b) for _, b in self.on("socket.io-response#")]

    async def request_of_type(self, kind: int, timeout: float = 10.0) -> dict[str, Any]:
        """The first request of ``kind`` published so far (waiting for it)."""
        await until(
            lambda: any(r.get("type") == kind for r in self.requests()), timeout, f"type {kind}"
        )
        return next(r for r in self.requests() if r.get("type") == kind)

    async def publish(self, channel: str, body: bytes) -> None:
        await self.client.publish(channel, body)


def raw(body: bytes) -> Any:
    """A notepack body as plain msgpack (what the Node packages actually wrote)."""
    return msgpack.unpackb(body, raw=False, strict_map_key=False)


# ---- broadcasts between our sockets and Node's ---------------------------------------------


async def test_string_room_and_sid_broadcasts_cross_both_ways(
    master: MasterProcess, node: NodePeer, clients: Any
) -> None:
    p0 = await clients(master.url(0), "p0")
    p1 = await clients(master.url(1), "p1")
    n0 = await node.connect("n0")
    await node.connect("n1")
    await p1.call("join", "s-room")
    await node.cmd("join", client="n0", room="s-room")

    await node.cmd("emit", to="s-room", event="from-node", args=[1, "a"])
    await node.cmd("emit", to=p0.sid(), event="to-py-sid", args=[])
    await node.cmd("emit", event="mark")
    await wait_marks([p0, p1], node, ["n0", "n1"], 1)
    assert [p0.got("from-node"), p1.got("from-node")] == [[], [(1, "a")]]
    assert [node.got("n0", "from-node"), node.got("n1", "from-node")] == [[[1, "a"]], []]
    assert [p0.got("to-py-sid"), p1.got("to-py-sid")] == [[()], []]

    await p0.call("emit", {"event": "from-py", "args": [2], "to": "s-room"})
    await p0.call("emit", {"event": "to-list", "args": [3], "to": ["s-room", n0]})
    await p0.call("emit", {"event": "mark", "args": []})
    await wait_marks([p0, p1], node, ["n0", "n1"], 2)
    assert [p0.got("from-py"), p1.got("from-py")] == [[], [(2,)]]
    assert [node.got("n0", "from-py"), node.got("n1", "from-py")] == [[[2]], []]
    assert [p0.got("to-list"), p1.got("to-list")] == [[], [(3,)]]
    assert [node.got("n0", "to-list"), node.got("n1", "to-list")] == [[[3]], []]


async def test_node_emit_to_an_integer_room_reaches_our_sockets_in_it(
    master: MasterProcess, node: NodePeer, clients: Any
) -> None:
    """Node's ``io.to(42).emit`` publishes on ``socket.io#/#42#`` with ``rooms: [42]``."""
    p0 = await clients(master.url(0), "p0")
    p1 = await clients(master.url(1), "p1")
    await node.connect("n0")
    assert await p0.call("join", 42) == [42]
    assert await p1.call("join", "other") == ["other"]
    await node.cmd("join", client="n0", room=42)

    await node.cmd("emit", to=42, event="int-room", args=[7])
    await node.cmd("emit", event="mark")
    await wait_marks([p0, p1], node, ["n0"], 1)
    assert node.got("n0", "int-room") == [[7]]
    assert p1.got("int-room") == []
    assert p0.got("int-room") == [(7,)], (
        "our socket in the integer room 42 did not get Node's io.to(42).emit "
        "(the master compared the channel's room '42' with the integer 42)"
    )


async def test_our_emit_to_an_integer_room_reaches_node_sockets_in_it(
    master: MasterProcess, node: NodePeer, clients: Any
) -> None:
    p0 = await clients(master.url(0), "p0")
    p1 = await clients(master.url(1), "p1")
    for name in ("n0", "n1", "n2"):
        await node.connect(name)
    assert await p1.call("join", 42) == [42]
    await node.cmd("join", client="n0", room=42)
    await node.cmd("join", client="n1", room="42")

    await p0.call("emit", {"event": "int-room", "args": [8], "to": 42})
    await p0.call("emit", {"event": "mark", "args": []})
    await wait_marks([p0, p1], node, ["n0", "n1", "n2"], 1)
    assert [p0.got("int-room"), p1.got("int-room")] == [[], [(8,)]]
    assert [node.got(n, "int-room") for n in ("n0", "n1", "n2")] == [[[8]], [], []]


async def test_emitter_to_an_integer_room_reaches_our_sockets_in_it(
    master: MasterProcess, node: NodePeer, clients: Any, redis_server: EmbeddedRedis
) -> None:
    p0 = await clients(master.url(0), "p0")
    await node.connect("n0")
    assert await p0.call("join", 42) == [42]
    await node.cmd("join", client="n0", room=42)

    await run_emitter(
        redis_server.url,
        [
            {"op": "emit", "to": 42, "event": "int-room", "args": [9]},
            {"op": "emit", "event": "mark"},
        ],
    )
    await wait_marks([p0], node, ["n0"], 1)
    assert node.got("n0", "int-room") == [[9]]
    assert p0.got("int-room") == [(9,)], "our socket in room 42 missed the emitter's to(42)"


async def test_integer_and_string_rooms_of_one_name_stay_apart_as_in_node(
    master: MasterProcess, node: NodePeer, clients: Any
) -> None:
    """Node keeps 42 and "42" apart; so must we, both ways (a guard for the fix of 42)."""
    p_int = await clients(master.url(0), "p_int")
    p_str = await clients(master.url(1), "p_str")
    await node.connect("n_int")
    await node.connect("n_str")
    assert await p_int.call("join", 42) == [42]
    assert await p_str.call("join", "42") == ["42"]
    await node.cmd("join", client="n_int", room=42)
    await node.cmd("join", client="n_str", room="42")

    await node.cmd("emit", to=42, event="int", args=["node"])
    await node.cmd("emit", to="42", event="str", args=["node"])
    await node.cmd("emit", event="mark")
    await wait_marks([p_int, p_str], node, ["n_int", "n_str"], 1)
    await p_int.call("emit", {"event": "int", "args": ["py"], "to": 42})
    await p_int.call("emit", {"event": "str", "args": ["py"], "to": "42"})
    await p_int.call("emit", {"event": "mark", "args": []})
    await wait_marks([p_int, p_str], node, ["n_int", "n_str"], 2)
    assert [p_int.got("int"), p_int.got("str")] == [[("node",), ("py",)], []]
    assert [p_str.got("int"), p_str.got("str")] == [[], [("node",), ("py",)]]
    assert [node.got("n_int", "int"), node.got("n_int", "str")] == [[["node"], ["py"]], []]
    assert [node.got("n_str", "int"), node.got("n_str", "str")] == [[], [["node"], ["py"]]]


async def test_emitter_broadcasts_reach_our_sockets_as_they_reach_node_sockets(
    master: MasterProcess, node: NodePeer, clients: Any, redis_server: EmbeddedRedis
) -> None:
    """Several rooms with except, a binary payload, another namespace: same deliveries."""
    p0 = await clients(master.url(0), "p0", namespaces=NAMESPACES)
    p1 = await clients(master.url(1), "p1")
    p2 = await clients(master.url(1), "p2")
    for name in ("n0", "n1", "n2"):
        await node.connect(name)
    await node.connect("n0c", nsp="/chat")
    await p0.call("join", "r1")
    await p0.call("join", "c", namespace="/chat")
    await p1.call("join", "r2")
    await p1.call("join", "rx")
    await node.cmd("join", client="n0", room="r1")
    await node.cmd("join", client="n0c", room="c")
    await node.cmd("join", client="n1", room="r2")
    await node.cmd("join", client="n1", room="rx")

    blob = bytes([0, 1, 255, 128])
    await run_emitter(
        redis_server.url,
        [
            {"op": "emit", "to": ["r1", "r2"], "except": "rx", "event": "multi", "args": [1]},
            {"op": "emit", "to": "r1", "event": "bin", "args": [blob, "t"]},
            {"op": "emit", "event": "every", "args": [{"k": [1, None]}]},
            {"op": "emit", "nsp": "/chat", "to": "c", "event": "chat", "args": ["x"]},
            {"op": "emit", "nsp": "/chat", "event": "mark"},
            {"op": "emit", "event": "mark"},
        ],
    )
    await wait_marks([p0, p1, p2], node, ["n0", "n1", "n2", "n0c"], 1)
    await p0.wait_count("mark", 1, namespace="/chat")
    for py, js in ((p0, "n0"), (p1, "n1"), (p2, "n2")):
        assert [py.got(e) for e in ("multi", "bin", "every")] == [
            [tuple(a) for a in node.got(js, e)] for e in ("multi", "bin", "every")
        ], py.name
    assert [p0.got("multi"), p0.got("bin"), p0.got("every")] == [
        [(1,)],
        [(blob, "t")],
        [({"k": [1, None]},)],
    ]
    assert p0.got("chat", namespace="/chat") == [("x",)]
    assert node.got("n0c", "chat") == [["x"]]
    assert [p1.got("every"), p2.got("every")] == [[({"k": [1, None]},)]] * 2


# ---- (b) room-wide operations with a Node server in the cluster ------------------------------


async def _room_grp(
    master: MasterProcess, node: NodePeer, clients: Any
) -> tuple[Recorder, Recorder, Recorder, dict[str, str]]:
    """caller (not in grp) and p0, p1 in grp on our workers; n0, n1 in grp and n2 on Node."""
    caller = await clients(master.url(0), "caller")
    p0 = await clients(master.url(0), "p0")
    p1 = await clients(master.url(1), "p1")
    for p in (p0, p1):
        await p.call("join", "grp")
    ids = {name: await node.connect(name) for name in ("n0", "n1", "n2")}
    for name in ("n0", "n1"):
        await node.cmd("join", client=name, room="grp")
    return caller, p0, p1, ids


async def test_sockets_join_with_a_node_server_counts_its_sockets_and_returns_promptly(
    master: MasterProcess, node: NodePeer, clients: Any
) -> None:
    caller, p0, p1, n = await _room_grp(master, node, clients)
    count, took = await timed(op(caller, "sockets_join", rooms=["joined"], to="grp"))
    assert (count, took < PROMPT) == (4, True), (
        f"sockets_join returned {count} after {took:.1f} s; expected 4 (our 2 + Node's 2) "
        f"within {PROMPT} s. Node never answers a room-wide REMOTE_JOIN; it answers REMOTE_FETCH"
    )
    # our fetch is answered by Node after it applied the join it read before
    assert await fetched_ids(caller, to="joined") == {p0.sid(), p1.sid(), n["n0"], n["n1"]}


async def test_sockets_leave_with_a_node_server_counts_its_sockets_and_returns_promptly(
    master: MasterProcess, node: NodePeer, clients: Any
) -> None:
    caller, p0, p1, n = await _room_grp(master, node, clients)
    for p in (p0, p1):
        await p.call("join", "extra")
    for name in ("n0", "n1", "n2"):
        await node.cmd("join", client=name, room="extra")
    count, took = await timed(op(caller, "sockets_leave", rooms=["extra"], to="grp"))
    assert (count, took < PROMPT) == (4, True), (
        f"sockets_leave returned {count} after {took:.1f} s; expected 4 (our 2 + Node's 2) "
        f"within {PROMPT} s"
    )
    assert await fetched_ids(caller, to="extra") == {n["n2"]}


async def test_disconnect_sockets_with_a_node_server_counts_its_sockets_and_returns_promptly(
    master: MasterProcess, node: NodePeer, clients: Any
) -> None:
    caller, p0, p1, n = await _room_grp(master, node, clients)
    count, took = await timed(op(caller, "disconnect_sockets", to="grp"))
    assert (count, took < PROMPT) == (4, True), (
        f"disconnect_sockets returned {count} after {took:.1f} s; expected 4 (our 2 + Node's 2) "
        f"within {PROMPT} s"
    )
    await until(lambda: not p0.client.connected and not p1.client.connected, what="p0, p1 out")
    await until(lambda: node.disconnected("n0") and node.disconnected("n1"), what="n0, n1 out")
    assert not node.disconnected("n2")
    await settle(caller, {caller.sid(), n["n2"]})


async def test_close_room_with_a_node_server_empties_it_everywhere_promptly(
    master: MasterProcess, node: NodePeer, clients: Any
) -> None:
    caller, p0, p1, n = await _room_grp(master, node, clients)
    result, took = await timed(op(caller, "close_room", room="grp"))
    assert (result, took < PROMPT) == ("ok", True), (
        f"close_room returned {result!r} after {took:.1f} s; expected 'ok' within {PROMPT} s"
    )
    assert await fetched_ids(caller, to="grp") == set()
    assert await node.cmd("rooms", client="n0") == [n["n0"]]
    assert await p0.call("join", "probe") == ["probe"]


async def test_node_socket_operations_reach_our_sockets(
    master: MasterProcess, node: NodePeer, clients: Any
) -> None:
    """Node's room-wide requests carry no requestId and get no answer; we apply them."""
    caller, p0, p1, n = await _room_grp(master, node, clients)
    everyone_in_grp = {p0.sid(), p1.sid(), n["n0"], n["n1"]}

    await node.cmd("socketsJoin", to="grp", rooms=["from-node", "also"])
    for room in ("from-node", "also"):
        await until_equal(partial(fetched_ids, caller, to=room), everyone_in_grp, f"in {room!r}")
    await node.cmd("socketsLeave", to="grp", rooms="from-node")
    await until_equal(lambda: fetched_ids(caller, to="from-node"), set(), "left 'from-node'")
    await node.cmd("disconnectSockets", to="grp", except_="nobody")
    await until(lambda: not p0.client.connected and not p1.client.connected, what="p0, p1 out")
    await until(lambda: node.disconnected("n0") and node.disconnected("n1"), what="n0, n1 out")
    assert caller.client.connected and not node.disconnected("n2")


# ---- fetchSockets / allRooms / serverSideEmit / acks ---------------------------------------


async def test_fetch_sockets_both_ways_ids_and_rooms(
    master: MasterProcess, node: NodePeer, clients: Any
) -> None:
    caller = await clients(master.url(0), "caller")
    p0 = await clients(master.url(0), "p0")
    p1 = await clients(master.url(1), "p1")
    for p in (p0, p1):
        await p.call("join", "f-room")
    await p1.call("join", "g-room")
    n0 = await node.connect("n0")
    n1 = await node.connect("n1")
    await node.cmd("join", client="n0", room="f-room")
    await node.cmd("join", client="n0", room="h-room")

    expected = sorted(
        [
            {"id": p0.sid(), "rooms": sorted([p0.sid(), "f-room"])},
            {"id": n0, "rooms": sorted([n0, "f-room", "h-room"])},
            {"id": p1.sid(), "rooms": sorted([p1.sid(), "f-room", "g-room"])},
        ],
        key=lambda s: s["id"],
    )
    assert await fetched(caller, to="f-room") == expected

    theirs = await node.cmd("fetchSockets", to="f-room")
    assert (
        sorted(
            ({"id": s["id"], "rooms": sorted(s["rooms"])} for s in theirs), key=lambda s: s["id"]
        )
        == expected
    )
    assert {s["id"]: s["local"] for s in theirs} == {p0.sid(): False, p1.sid(): False, n0: True}

    await settle(caller, {caller.sid(), p0.sid(), p1.sid(), n0, n1})
    assert {s["id"] for s in await node.cmd("fetchSockets", except_="f-room")} == {
        caller.sid(),
        n1,
    }


async def test_node_fetch_sockets_sees_our_handshake_and_session_as_data(
    master: MasterProcess, node: NodePeer, clients: Any
) -> None:
    """Node's REMOTE_FETCH answer carries handshake and data; ours must too.

    handshake: what socket.io builds from the HTTP request, here from python-socketio's
    environ and the connection (the client connects from 127.0.0.2, so a constant address
    shows); data: the python-socketio session of that namespace (``save_session``).
    """
    n0 = await node.connect("n0")
    plain = await clients(master.url(0), "plain")
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(OTHER_LOOPBACK, 0)))
    rich = socketio.AsyncClient(reconnection=False, http_session=session)
    started_ms = time.time() * 1000
    try:
        await rich.connect(
            master.url(1) + "/?room=lobby",
            namespaces=["/"],
            transports=["websocket"],
            headers={"X-Probe": "interop"},
            auth={"token": "t-1"},
            wait_timeout=10,
        )
        connected_ms = time.time() * 1000
        assert await rich.call("save_session", {"user": "ann", "level": 3}, timeout=10) is True
        rich_sid = rich.get_sid("/")
        sockets = {s["id"]: s for s in await node.cmd("fetchSockets")}
    finally:
        if rich.connected:
            await rich.disconnect()
        await session.close()

    reference = sockets[n0]["handshake"]  # what a Node server reports of its own socket
    found = sockets.get(rich_sid)
    assert found is not None and found["local"] is False
    handshake = found["handshake"]
    assert sorted(handshake) == sorted(reference), f"handshake {handshake!r}"
    headers = handshake["headers"]
    assert headers.get("x-probe") == "interop"
    assert headers.get("host") == f"127.0.0.1:{master.port_of(1)}"
    assert headers.get("upgrade", "").lower() == "websocket"
    assert all(name == name.lower() for name in headers)
    assert handshake["address"] in (OTHER_LOOPBACK, f"::ffff:{OTHER_LOOPBACK}"), (
        f"address {handshake['address']!r}: not the client's ({OTHER_LOOPBACK})"
    )
    assert (handshake["xdomain"], handshake["secure"]) == (False, False)
    assert started_ms - 1000 <= handshake["issued"] <= connected_ms + 1000
    assert isinstance(handshake["time"], str) and found["timeParsedMs"] is not None
    assert abs(found["timeParsedMs"] - handshake["issued"]) <= 1500
    url = urlsplit(handshake["url"])
    assert url.path == "/socket.io/"
    assert handshake["query"] == dict(parse_qsl(url.query))
    assert {k: handshake["query"].get(k) for k in ("room", "EIO", "transport")} == {
        "room": "lobby",
        "EIO": "4",
        "transport": "websocket",
    }
    # Node gives the client's auth payload here; python-socketio keeps no copy of it, so
    # only the type is required (see the report)
    assert isinstance(handshake["auth"], dict)
    assert found["data"] == {"user": "ann", "level": 3}
    assert found["rooms"] == [rich_sid]

    bare = sockets[plain.sid()]
    assert (bare["handshake"]["address"], bare["data"]) == ("127.0.0.1", {})


async def test_node_all_rooms_includes_our_rooms(
    master: MasterProcess, node: NodePeer, clients: Any
) -> None:
    """ALL_ROOMS (type 1) must be answered: ``{requestId, rooms}`` with every room, sids too."""
    p0 = await clients(master.url(0), "p0")
    p1 = await clients(master.url(1), "p1")
    n0 = await node.connect("n0")
    await settle(p0, {p0.sid(), p1.sid(), n0})
    await p0.call("join", "py-room")
    await p0.call("join", "py-room-2")
    await p1.call("join", 42)  # alone: the probe's join answers the sorted rooms
    await node.cmd("join", client="n0", room="node-room")

    try:
        rooms, took = await timed(node.cmd("allRooms"))
    except NodePeerError as exc:
        raise AssertionError(f"Node's allRooms() failed: {exc} (no answer from us)") from exc
    assert set(rooms) == {p0.sid(), p1.sid(), "py-room", 42, "py-room-2", n0, "node-room"}
    assert len(rooms) == len(set(rooms)) and took < PROMPT


async def test_server_side_emit_both_ways(
    master: MasterProcess, node: NodePeer, clients: Any
) -> None:
    p0 = await clients(master.url(0), "p0")
    p1 = await clients(master.url(1), "p1")

    # ours -> Node: our other worker and the Node server (one server each)
    assert await op(p0, "server_side_emit", args=["hi", 1]) == 2
    await p1.wait_count("announced", 1)
    await until(lambda: len(node.server_events) == 1, what="Node got announce")
    assert node.server_events == [{"nsp": "/", "event": "announce", "args": ["hi", 1]}]

    # Node -> ours, without and with an ack: every worker of ours runs the handler
    assert await node.cmd("serverSideEmit", event="announce", args=["plain"]) is True
    answer, took = await timed(node.cmd("serverSideEmitWithAck", event="announce", args=["ack"]))
    assert "error" not in answer and len(answer["responses"]) == 1 and took < PROMPT, answer
    await p0.wait_count("announced", 2)
    await p1.wait_count("announced", 3)
    assert sorted(a[0]["args"] for a in p0.got("announced")) == [["ack"], ["plain"]]
    assert sorted(a[0]["args"] for a in p1.got("announced")) == [["ack"], ["hi", 1], ["plain"]]


async def test_acks_both_ways(master: MasterProcess, node: NodePeer, clients: Any) -> None:
    p0 = answering(await clients(master.url(0), "p0"))
    p1 = answering(await clients(master.url(1), "p1"))
    n0 = await node.connect("n0")
    await p0.call("join", "ack-room")
    await node.cmd("join", client="n0", room="ack-room")

    answer, took = await timed(
        node.cmd("emitWithAck", to="ack-room", event="question", args=[5], ackTimeout=3000)
    )
    assert "error" not in answer and took < PROMPT, answer
    assert sorted(answer["responses"], key=json.dumps) == sorted(
        [["py", 5], {"client": "n0", "event": "question", "args": [5]}], key=json.dumps
    )
    assert p1.got("question") == []

    assert await op(p1, "call", sid=n0, event="question", data=6) == {
        "client": "n0",
        "event": "question",
        "args": [6],
    }


# ---- decoding what the real Node packages publish -------------------------------------------


async def test_emitter_messages_decode_exactly(capture_redis: EmbeddedRedis) -> None:
    """@socket.io/redis-emitter 5.1: bytes captured on Redis, decoded by adapter_wire."""
    blob = bytes([0, 1, 255])
    actions: list[dict[str, Any]] = [
        {"op": "emit", "to": "room1", "event": "e1", "args": [1]},
        {
            "op": "emit",
            "to": ["r1", "r2"],
            "except": ["rx", "ry"],
            "event": "e2",
            "args": [{"a": [1, 2.5]}],
        },
        {"op": "emit", "to": 42, "event": "e3"},
        {"op": "emit", "event": "bin", "args": [blob, None]},
        {"op": "emit", "nsp": "/chat", "to": "c", "except": 7, "event": "e4", "args": ["x"]},
        {"op": "emit", "volatile": True, "event": "v"},
        {"op": "socketsJoin", "to": "r1", "rooms": "j"},
        {"op": "socketsLeave", "except": "x", "rooms": ["a", 7]},
        {"op": "disconnectSockets", "nsp": "/chat", "to": "r9", "close": True},
        {"op": "serverSideEmit", "args": ["announce", 1, {"k": "v"}]},
    ]
    async with Capture(capture_redis.url) as capture:
        await run_emitter(capture_redis.url, actions)
        await until(lambda: len(capture.messages) == len(actions), what="emitter messages")

    broadcasts = capture.on("socket.io#")
    assert [c for c, _ in broadcasts] == [
        "socket.io#/#room1#",
        "socket.io#/#",
        "socket.io#/#42#",
        "socket.io#/#",
        "socket.io#/chat#c#",
        "socket.io#/#",
    ]
    assert raw(broadcasts[1][1]) == [
        "emitter",
        {"type": 2, "data": ["e2", {"a": [1, 2.5]}], "nsp": "/"},
        {"rooms": ["r1", "r2"], "flags": {}, "except": ["rx", "ry"]},
    ]
    decoded = [decode_broadcast(b) for _, b in broadcasts]
    assert [(d.uid, d.namespace, d.data, d.rooms, d.exclude, d.flags) for d in decoded] == [
        ("emitter", "/", ["e1", 1], ["room1"], [], {}),
        ("emitter", "/", ["e2", {"a": [1, 2.5]}], ["r1", "r2"], ["rx", "ry"], {}),
        ("emitter", "/", ["e3"], [42], [], {}),
        ("emitter", "/", ["bin", blob, None], [], [], {}),
        ("emitter", "/chat", ["e4", "x"], ["c"], [7], {}),
        ("emitter", "/", ["v"], [], [], {"volatile": True}),
    ]
    assert raw(broadcasts[3][1])[1]["type"] == 2  # binary stays type 2 (EVENT) on the wire

    # requests: JSON, no requestId (nobody answers), join/leave/disconnect without a uid
    assert [c for c, _ in capture.on("socket.io-request#")] == [
        "socket.io-request#/#",
        "socket.io-request#/#",
        "socket.io-request#/chat#",
        "socket.io-request#/#",
    ]
    assert capture.requests() == [
        {"type": 2, "opts": {"rooms": ["r1"], "except": []}, "rooms": ["j"]},
        {"type": 3, "opts": {"rooms": [], "except": ["x"]}, "rooms": ["a", 7]},
        {"type": 4, "opts": {"rooms": ["r9"], "except": []}, "close": True},
        {"uid": "emitter", "type": 6, "data": ["announce", 1, {"k": "v"}]},
    ]


async def test_adapter_broadcasts_decode_exactly(capture_peer: NodePeer) -> None:
    """@socket.io/redis-adapter 8.3's own broadcasts (``io.to(...).emit``)."""
    peer = capture_peer
    uid, chat_uid = peer.uids["/"], peer.uids["/chat"]
    blob = bytes([0, 1, 255])
    async with Capture(_url_of(peer)) as capture:
        await peer.cmd("emit", to="r1", event="ev", args=[1, "two", {"three": 3}])
        await peer.cmd("emit", to=42, event="int", args=[42])
        await peer.cmd("emit", to=["a", "b"], event="multi", except_="c")
        await peer.cmd("emit", event="bin", args=[blob])
        await peer.cmd("emit", nsp="/chat", to="c", event="chat", args=[None])
        await peer.cmd("emit", event="flags", flags={"volatile": True, "compress": False})
        await until(lambda: len(capture.messages) == 6, what="adapter broadcasts")

    assert [c for c, _ in capture.messages] == [
        "socket.io#/#r1#",
        "socket.io#/#42#",
        "socket.io#/#",
        "socket.io#/#",
        "socket.io#/chat#c#",
        "socket.io#/#",
    ]
    assert raw(capture.messages[1][1]) == [
        uid,
        {"type": 2, "data": ["int", 42], "nsp": "/"},
        {"rooms": [42], "except": [], "flags": {}},
    ]
    decoded = [decode_broadcast(b) for _, b in capture.messages]
    assert [(d.uid, d.namespace, d.data, d.rooms, d.exclude, d.flags) for d in decoded] == [
        (uid, "/", ["ev", 1, "two", {"three": 3}], ["r1"], [], {}),
        (uid, "/", ["int", 42], [42], [], {}),
        (uid, "/", ["multi"], ["a", "b"], ["c"], {}),
        (uid, "/", ["bin", blob], [], [], {}),
        (chat_uid, "/chat", ["chat", None], ["c"], [], {}),
        (uid, "/", ["flags"], [], [], {"volatile": True, "compress": False}),
    ]
    assert raw(capture.messages[3][1])[1]["type"] == 2


def _url_of(peer: NodePeer) -> str:
    return peer.args[3]


async def test_adapter_requests_decode_exactly_and_our_answers_satisfy_node(
    capture_peer: NodePeer,
) -> None:
    """Node as the requester; this test answers as the other server of the cluster."""
    peer = capture_peer
    uid = peer.uids["/"]
    response = "socket.io-response#/#"
    c1 = await peer.connect("c1")
    try:
        await peer.cmd("join", client="c1", room="r")
        async with Capture(_url_of(peer)) as capture:
            # room-wide operations: fire and forget, applied by Node itself on its own echo
            await peer.cmd("socketsJoin", to="r", rooms=["a", 7])
            await peer.cmd("socketsLeave", rooms="a", except_="x")
            await peer.cmd("disconnectSockets", to="nobody", close=True)
            await peer.cmd("serverSideEmit", event="announce", args=[1, {"k": "v"}])
            await until(lambda: len(capture.requests()) == 4, what="4 requests")
            assert capture.requests() == [
                {"uid": uid, "type": 2, "opts": {"rooms": ["r"], "except": []}, "rooms": ["a", 7]},
                {"uid": uid, "type": 3, "opts": {"rooms": [], "except": ["x"]}, "rooms": ["a"]},
                {"uid": uid, "type": 4, "opts": {"rooms": ["nobody"], "except": []}, "close": True},
                {"uid": uid, "type": 6, "data": ["announce", 1, {"k": "v"}]},
            ]
            await until_equal(lambda: _rooms(peer, "c1"), {c1, "r", 7}, "c1 in r and 7, not a")

            # fetchSockets: REMOTE_FETCH with a requestId; answered by {requestId, sockets}
            fetch = asyncio.create_task(peer.cmd("fetchSockets", to="r"))
            request = await capture.request_of_type(5)
            request_id = request["requestId"]
            assert isinstance(request_id, str) and len(request_id) == 6
            assert request == {
                "uid": uid,
                "requestId": request_id,
                "type": 5,
                "opts": {"rooms": ["r"], "except": []},
            }
            handshake = dict(
                headers={"x-a": "1"},
                time="t",
                address="127.0.0.1",
                xdomain=False,
                secure=False,
                issued=1,
                url="/socket.io/",
                query={"EIO": "4"},
                auth={},
            )
            remote = {
                "id": "py-1",
                "handshake": handshake,
                "rooms": ["py-1", "r"],
                "data": {"u": 1},
            }
            await capture.publish(
                response, json.dumps({"requestId": request_id, "sockets": [remote]}).encode()
            )
            sockets = {s["id"]: s for s in await fetch}
            assert set(sockets) == {c1, "py-1"}
            assert {k: sockets["py-1"][k] for k in ("local", "rooms", "handshake", "data")} == {
                "local": False,
                "rooms": ["py-1", "r"],
                "handshake": handshake,
                "data": {"u": 1},
            }

            # allRooms: ALL_ROOMS {uid, requestId, type: 1}; answered by {requestId, rooms}
            rooms = asyncio.create_task(peer.cmd("allRooms"))
            request = await capture.request_of_type(1)
            assert request == {"uid": uid, "requestId": request["requestId"], "type": 1}
            await capture.publish(
                response,
                json.dumps({"requestId": request["requestId"], "rooms": ["py", 42]}).encode(),
            )
            assert set(await rooms) == {c1, "r", 7, "py", 42}

            # serverSideEmitWithAck: SERVER_SIDE_EMIT with a requestId; {type: 6, requestId, data}
            emitted = asyncio.create_task(
                peer.cmd("serverSideEmitWithAck", event="announce", args=[2])
            )
            request = next(r for r in await _wait_requests(capture, 6, 2) if "requestId" in r)
            assert request == {
                "uid": uid,
                "requestId": request["requestId"],
                "type": 6,
                "data": ["announce", 2],
            }
            await capture.publish(
                response,
                json.dumps({"type": 6, "requestId": request["requestId"], "data": "pong"}).encode(),
            )
            assert await emitted == {"responses": ["pong"]}

            # emitWithAck: BROADCAST (msgpack); BROADCAST_CLIENT_COUNT (JSON) + BROADCAST_ACK
            acked = asyncio.create_task(
                peer.cmd("emitWithAck", to="r", event="question", args=[4], ackTimeout=3000)
            )
            request = await capture.request_of_type(7)
            body = next(b for _, b in capture.on("socket.io-request#") if b[:1] != b"{")
            assert raw(body) == request  # notepack, not JSON
            assert request == {
                "uid": uid,
                "requestId": request["requestId"],
                "type": 7,
                "packet": {"type": 2, "data": ["question", 4], "nsp": "/"},
                "opts": {"rooms": ["r"], "except": [], "flags": {"timeout": 3000}},
            }
            request_id = request["requestId"]
            await capture.publish(
                response,
                json.dumps({"type": 8, "requestId": request_id, "clientCount": 1}).encode(),
            )
            await capture.publish(
                response,
                msgpack.packb({"type": 9, "requestId": request_id, "packet": "py-ack"}),
            )
            answer = await acked
            assert "error" not in answer, answer
            assert sorted(answer["responses"], key=json.dumps) == sorted(
                ["py-ack", {"client": "c1", "event": "question", "args": [4]}], key=json.dumps
            )
    finally:
        await peer.reset()


async def _wait_requests(capture: Capture, kind: int, count: int) -> list[dict[str, Any]]:
    def found() -> list[dict[str, Any]]:
        return [r for r in capture.requests() if r.get("type") == kind]

    await until(lambda: len(found()) >= count, what=f"{count} requests of type {kind}")
    return found()


async def _rooms(peer: NodePeer, client: str) -> set[Any]:
    return set(await peer.cmd("rooms", client=client) or [])


async def test_node_answers_requests_decode_exactly_and_room_wide_ones_go_unanswered(
    capture_peer: NodePeer,
) -> None:
    """Node as the answering server: what each request type gets back, byte for byte.

    A room-wide REMOTE_JOIN/LEAVE/DISCONNECT is applied but never answered, even when it
    carries a requestId; a per-socket one is answered ``{requestId}`` by the owner only.
    Requests are read in order and those three answer synchronously, so the answer to a
    later request (the fence) proves that no answer to them is coming.
    """
    peer = capture_peer
    c1 = await peer.connect("c1")
    request_channel, uid = "socket.io-request#/#", "py-fake"
    try:
        await peer.cmd("join", client="c1", room="r")
        async with Capture(_url_of(peer)) as capture:

            async def ask(body: dict[str, Any], packed: bool = False) -> None:
                data = msgpack.packb(body) if packed else json.dumps(body).encode()
                await capture.publish(request_channel, data)

            def answers() -> dict[tuple[str, Any], dict[str, Any]]:
                return {(r["requestId"], r.get("type")): r for r in capture.responses()}

            opts = {"rooms": ["r"], "except": []}
            await ask({"uid": uid, "requestId": "q-fetch", "type": 5, "opts": opts})
            await ask({"uid": uid, "requestId": "q-rooms", "type": 1})
            await until(lambda: len(answers()) == 2, what="fetch and allRooms answers")
            fetched = answers()[("q-fetch", None)]
            assert list(fetched) == ["requestId", "sockets"]
            [socket] = fetched["sockets"]
            assert list(socket) == ["id", "handshake", "rooms", "data"]
            assert (socket["id"], socket["rooms"], socket["data"]) == (
                c1,
                [c1, "r"],
                {"peer": "node", "nsp": "/"},
            )
            assert list(socket["handshake"]) == HANDSHAKE_FIELDS
            assert answers()[("q-rooms", None)] == {"requestId": "q-rooms", "rooms": [c1, "r"]}

            room_wide = [
                {"type": 2, "opts": opts, "rooms": ["j", "k"]},
                {"type": 3, "opts": opts, "rooms": ["k"]},
                {"type": 4, "opts": {"rooms": ["nobody"], "except": []}, "close": False},
            ]
            for n, request in enumerate(room_wide):
                await ask({"uid": uid, "requestId": f"q-room-wide-{n}", **request})
            for sid in (c1, "ghost"):  # per socket: only the owner answers
                await ask(
                    {"uid": uid, "requestId": f"q-one-{sid}", "type": 2, "sid": sid, "room": "solo"}
                )
            await ask({"uid": uid, "requestId": "q-sse", "type": 6, "data": ["announce", 1]})
            await ask({"uid": uid, "type": 6, "data": ["announce", "no-ack"]})
            await ask(
                {
                    "uid": uid,
                    "requestId": "q-ack",
                    "type": 7,
                    "packet": {"type": 2, "data": ["question", 3], "nsp": "/"},
                    "opts": {"rooms": ["r"], "except": [], "flags": {"timeout": 3000}},
                },
                packed=True,
            )
            await ask({"uid": uid, "requestId": "q-fence", "type": 1})
            await until(
                lambda: ("q-fence", None) in answers() and ("q-ack", 9) in answers(),
                what="the fence and the client's ack",
            )

            ack_body = next(b for _, b in capture.on("socket.io-response#") if b[:1] != b"{")
            assert raw(ack_body)["type"] == 9  # BROADCAST_ACK is notepack, the rest JSON
            got = answers()
            assert {k for k in got if k[0] not in ("q-fetch", "q-rooms")} == set(
                [
                    (f"q-one-{c1}", None),
                    ("q-sse", 6),
                    ("q-ack", 8),
                    ("q-ack", 9),
                    ("q-fence", None),
                ]
            ), "Node answered a room-wide request, or missed one it answers"
            assert got[(f"q-one-{c1}", None)] == {"requestId": f"q-one-{c1}"}
            assert got[("q-sse", 6)] == {
                "type": 6,
                "requestId": "q-sse",
                "data": {"from": "node", "args": [1]},
            }
            assert got[("q-ack", 8)] == {"type": 8, "requestId": "q-ack", "clientCount": 1}
            assert got[("q-ack", 9)] == {
                "type": 9,
                "requestId": "q-ack",
                "packet": {"client": "c1", "event": "question", "args": [3]},
            }
            assert set(got[("q-fence", None)]["rooms"]) == {c1, "r", "j", "solo"}
            await until(lambda: len(peer.server_events) == 2, what="Node ran both emits")
            assert [e["args"] for e in peer.server_events] == [[1], ["no-ack"]]
    finally:
        await peer.reset()
