"""python-socketio's own API on sockets held by another worker, and the cluster-wide API."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import redis.asyncio as aioredis

from tests.cluster import MasterProcess, Recorder, op, until


async def pair(cluster: MasterProcess, clients: Any) -> tuple[Recorder, Recorder]:
    """a on worker 0 drives the API; b on worker 1 is the remote socket."""
    return await clients(cluster.url(0), "a"), await clients(cluster.url(1), "b")


async def test_enter_and_leave_room_of_a_remote_sid_read_your_writes(
    cluster: MasterProcess, clients: Any, redis_client: aioredis.Redis
) -> None:
    a, b = await pair(cluster, clients)
    assert await op(a, "enter_room", sid=b.sid(), room="remote-room") == "ok"
    # once the call returned, a ch:* message read afterwards reaches b...
    await redis_client.publish("ch:after-join", json.dumps({"to": "remote-room", "data": 1}))
    await b.wait_count("after-join", 1)
    # ...and so does an emit made afterwards by a handler on any worker
    await a.call("emit", {"event": "from-a", "args": [2], "to": "remote-room"})
    await b.wait_count("from-a", 1)
    assert await b.call("join", "probe") == ["probe", "remote-room"]

    assert await op(a, "leave_room", sid=b.sid(), room="remote-room") == "ok"
    await redis_client.publish("ch:after-leave", json.dumps({"to": "remote-room", "data": 3}))
    await redis_client.publish("ch:after-leave", json.dumps({"to": b.sid(), "data": "fence"}))
    await b.wait_count("after-leave", 1)
    assert b.got("after-leave") == [("fence",)]


async def test_unknown_sid_is_an_error_not_a_silent_noop(
    cluster: MasterProcess, clients: Any
) -> None:
    a, _ = await pair(cluster, clients)
    result = await op(a, "enter_room", sid="no-such-sid", room="r")
    assert result == {
        "error": "KeyError: \"no socket 'no-such-sid' in namespace '/' in the cluster\""
    }


async def test_close_room_empties_it_on_every_worker(
    cluster: MasterProcess, clients: Any, redis_client: aioredis.Redis
) -> None:
    a, b = await pair(cluster, clients)
    await a.call("join", "doomed")
    await b.call("join", "doomed")
    assert await op(b, "close_room", room="doomed") == "ok"
    assert await a.call("join", "probe") == ["probe"]
    assert await b.call("join", "probe") == ["probe"]


async def test_disconnect_of_a_remote_sid(cluster: MasterProcess, clients: Any) -> None:
    a, b = await pair(cluster, clients)
    assert await op(a, "disconnect", sid=b.sid()) == "ok"
    await until(lambda: not b.client.connected, what="b disconnected")
    assert a.client.connected


async def test_call_to_a_remote_sid_returns_its_ack_and_times_out_like_python_socketio(
    cluster: MasterProcess, clients: Any
) -> None:
    a = await clients(cluster.url(0), "a")
    answering = Recorder("answering")
    answering.client.on("question", lambda data: {"echo": data})
    silent = Recorder("silent")

    async def never(data: Any) -> None:
        await asyncio.sleep(30)

    silent.client.on("question", never)
    try:
        await answering.connect(cluster.url(1))
        await silent.connect(cluster.url(1))
        ack = await op(a, "call", sid=answering.sid(), event="question", data=[1, "x"])
        assert ack == {"echo": [1, "x"]}
        result = await op(a, "call", sid=silent.sid(), event="question", data=1, timeout=0.5)
        assert result == {"error": "TimeoutError: "}
    finally:
        await answering.close()
        await silent.close()


async def test_fetch_sockets_join_leave_and_disconnect_across_workers(
    cluster: MasterProcess, clients: Any
) -> None:
    a, b = await pair(cluster, clients)
    c = await clients(cluster.url(1), "c")
    for member in (a, b):
        await member.call("join", "fetchme")
    fetched = await op(c, "fetch_sockets", to="fetchme")
    assert fetched == sorted(
        [{"id": r.sid(), "rooms": sorted([r.sid(), "fetchme"])} for r in (a, b)],
        key=lambda s: str(s["id"]),
    )
    assert await op(c, "fetch_sockets", to="fetchme", exclude=a.sid()) == [
        {"id": b.sid(), "rooms": sorted([b.sid(), "fetchme"])}
    ]

    assert await op(c, "sockets_join", rooms=["extra", "more"], to="fetchme") == 2
    assert await a.call("join", "probe") == ["extra", "fetchme", "more", "probe"]
    assert await b.call("join", "probe") == ["extra", "fetchme", "more", "probe"]
    assert await op(c, "sockets_leave", rooms="more", to="fetchme") == 2
    assert await b.call("join", "probe") == ["extra", "fetchme", "probe"]

    assert await op(c, "disconnect_sockets", to="extra", exclude=b.sid()) == 1
    await until(lambda: not a.client.connected, what="a disconnected")
    assert b.client.connected and c.client.connected


async def test_server_side_emit_reaches_the_other_workers_only(
    cluster: MasterProcess, clients: Any
) -> None:
    a, b = await pair(cluster, clients)
    assert await op(a, "server_side_emit", args=["hello", 7]) == 1  # one other worker
    await b.wait_count("announced", 1)
    assert b.got("announced")[0][0]["args"] == ["hello", 7]
    await a.call("emit", {"event": "mark", "args": []})  # fence on a's own worker
    await a.wait_count("mark", 1)
    assert a.got("announced") == []
