"""A 0.9 deployment half-way through its migration: both options on one master.

A socket.io 0.9.19 server on RedisStore keeps some 0.9 clients (``tests/node/v09_server.js``);
other 0.9 clients have moved to our workers (``--allow-v09``, ``tests/node/v09_clients.js``),
beside a current python-socketio client; our master is a member of the 0.9 fleet
(``--redis-store-09``). Whoever sends to a room, everyone in it gets the message exactly once,
on whichever side and in whichever protocol: the guide's "shift traffic" step, for real.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from sio_cluster.master.embedded_redis import EmbeddedRedis
from tests.cluster import MasterProcess, until, until_equal
from tests.node_peer import V09Clients, V09Server, ensure_node_modules, missing_tools

pytestmark = pytest.mark.skipif(
    missing_tools() is not None, reason=f"socket.io 0.9 tests: {missing_tools()}"
)
# a roll call of 1 s: nothing here waits for a lost server, and a shorter one would count a
# 0.9 server paused that long on a loaded machine as lost
OPTIONS = ["--redis-store-09", "--redis-store-09-roll-call", "1", "--allow-v09"]


@pytest.fixture(scope="module")
def master(redis_server: EmbeddedRedis) -> Iterator[MasterProcess]:
    process = MasterProcess(
        redis_server.url, workers=2, extra=OPTIONS, app="tests.v09_app:setup", one_port=True
    )
    with process.start() as started:
        yield started.ready_sync()
        errors = [line for line in started.lines if " ERROR " in line or "Traceback" in line]
        assert errors == [], errors


@pytest.fixture(scope="module")
def fleet(redis_server: EmbeddedRedis, master: MasterProcess) -> Iterator[V09Server]:
    ensure_node_modules()
    with V09Server(redis_server).start() as server:
        yield server


@pytest.fixture(scope="module")
def moved() -> Iterator[V09Clients]:
    ensure_node_modules()
    with V09Clients().start() as clients:
        yield clients


@pytest.mark.parametrize("transport", ["websocket", "xhr-polling"])
async def test_a_room_spanning_both_fleets_gets_every_message_once(
    master: MasterProcess,
    fleet: V09Server,
    moved: V09Clients,
    clients: Callable[..., Any],
    redis_client: aioredis.Redis,
    transport: str,
) -> None:
    room = f"lobby-{transport}"
    stayed = f"stayed-{transport}"
    mover = f"moved-{transport}"
    await fleet.cmd("connect", client=stayed, events=["tick"])
    await fleet.cmd("join", client=stayed, room=room)
    found = await moved.cmd(
        "connect", client=mover, url=master.url(0), transports=[transport], events=["tick"]
    )
    assert found["transport"] == transport
    assert await moved.cmd("call", client=mover, event="join", args=[room]) == [[room]]
    current = await clients(master.url(0), f"current-{transport}")
    assert await current.call("join", room) == [room]

    async def listed_on_the_09_server() -> bool:
        ids = set(await fleet.cmd("clients", room=room))
        return {found["id"], current.sid()} <= ids

    await until(listed_on_the_09_server, 10, "our sockets in the 0.9 server's room")

    await fleet.cmd("emit", room=room, event="tick", args=["from the 0.9 server"])
    spec = {"event": "tick", "args": ["from a moved 0.9 client"], "to": room}
    assert await moved.cmd("call", client=mover, event="emit", args=[spec]) == [True]
    await current.call("emit", {"event": "tick", "args": ["from a current client"], "to": room})
    await redis_client.publish("ch:tick", json.dumps({"to": room, "data": "from ch:*"}))

    sent = ["from a current client", "from a moved 0.9 client", "from the 0.9 server", "from ch:*"]
    expected = sorted(sent)

    def ticks() -> dict[str, list[Any]]:
        return {
            "stayed": sorted(args[0] for args in fleet.got(stayed, "tick")),
            "moved": sorted(args[0] for args in moved.got(mover, "tick")),
            "current": sorted(args[0] for args in current.got("tick")),
        }

    await until(lambda: all(len(got) >= 4 for got in ticks().values()), 10, "four ticks each")
    # a duplicate would come on the same paths as these fences, before them
    await fleet.cmd("emit", room=room, event="tick", args=["fence"])
    await redis_client.publish("ch:tick", json.dumps({"to": room, "data": "fence"}))
    await until(lambda: all(got.count("fence") == 2 for got in ticks().values()), 10, "fences")
    assert ticks() == {who: sorted([*expected, "fence", "fence"]) for who in ticks()}
    await moved.cmd("close", client=mover)
    await fleet.cmd("close", client=stayed)
    await current.close()


async def test_a_moved_0_9_client_leaving_one_namespace_stays_in_the_others(
    master: MasterProcess,
    fleet: V09Server,
    moved: V09Clients,
    clients: Callable[..., Any],
) -> None:
    """A 0.9 client has one id in all its namespaces: leaving ``/chat`` on our worker takes it
    out of the 0.9 server's ``/chat`` only (a ``leave``, as 0.9 publishes it, not a
    ``disconnect``), and an emit of ours to that id stays ours."""
    found = await moved.cmd("connect", client="m", url=master.url(0), events=["tick", "fence"])
    await moved.cmd("of", client="m-chat", on="m", namespace="/chat")
    cid = found["id"]
    assert await moved.cmd("call", client="m", event="join", args=["both"]) == [["both"]]

    async def listed() -> dict[str, bool]:
        return {
            where: cid in await fleet.cmd("clients", nsp=nsp, room=room)
            for where, nsp, room in (
                ("/", "/", None),
                ("both", "/", "both"),
                ("/chat", "/chat", None),
            )
        }

    await until_equal(listed, {"/": True, "both": True, "/chat": True}, "listed by 0.9", 10)
    await moved.cmd("close", client="m-chat")
    await until_equal(listed, {"/": True, "both": True, "/chat": False}, "left /chat only", 10)

    await fleet.cmd("emit", room="both", event="tick", args=["from the 0.9 server"])
    published = 'sio_master_store09_published_total{channel="%s"}'
    before = {c: master.metric(published % c) for c in ("dispatch", "dispatch-remote")}
    current = await clients(master.url(1), "current-ns")
    await current.call("emit", {"event": "tick", "args": ["to its id"], "to": cid})
    await fleet.cmd("emit", room="both", event="fence")
    await current.call("emit", {"event": "fence", "args": [], "to": cid})
    await until(lambda: len(moved.got("m", "fence")) == 2, 10, "both fences")
    assert sorted(args[0] for args in moved.got("m", "tick")) == [
        "from the 0.9 server",
        "to its id",
    ]
    after = {c: master.metric(published % c) for c in ("dispatch", "dispatch-remote")}
    assert after == before  # nothing of it for the 0.9 fleet
    await moved.cmd("close", client="m")
    await current.close()
