"""ch:* messages and handler emits routed by a real master to real workers, counted exactly.

Exactness without sleeps: after the messages under test, a "fence" message is
sent along the same path to every client under test; per-connection order is
preserved end to end, so once a client has the fence, anything the message
under test could have caused (duplicates included) has already arrived.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import redis.asyncio as aioredis

from tests.cluster import MasterProcess, Recorder, until

REJECTED = "sio-master:rejected"
_tokens = itertools.count()


async def publish(redis: aioredis.Redis, channel: str | bytes, body: Any) -> None:
    raw = body if isinstance(body, bytes | str) else json.dumps(body)
    await redis.publish(channel, raw)


async def fence(redis: aioredis.Redis, *recorders: Recorder, namespace: str = "/") -> None:
    """Send a marker to exactly these clients and wait until each has it."""
    token = next(_tokens)
    await publish(
        redis,
        "ch:fence",
        {"data": token, "to": [r.sid(namespace) for r in recorders], "namespace": namespace},
    )
    for r in recorders:
        await r.wait_count(
            "fence", 1 + sum(1 for a in r.got("fence", namespace) if a != (token,)), namespace
        )
        assert r.got("fence", namespace)[-1] == (token,)


async def four_clients(cluster: MasterProcess, clients: Any) -> list[Recorder]:
    """a0, a1 on worker 0 and b0, b1 on worker 1."""
    return [
        await clients(cluster.url(0), "a0"),
        await clients(cluster.url(0), "a1"),
        await clients(cluster.url(1), "b0"),
        await clients(cluster.url(1), "b1"),
    ]


async def test_room_reaches_exactly_its_members_on_every_worker(
    cluster: MasterProcess, clients: Any, redis_client: aioredis.Redis
) -> None:
    a0, a1, b0, b1 = await four_clients(cluster, clients)
    for member in (a0, b0, b1):
        assert await member.call("join", "news-room") == ["news-room"]
    await publish(redis_client, "ch:news", {"to": "news-room", "data": {"headline": "hi"}})
    await fence(redis_client, a0, a1, b0, b1)
    for member in (a0, b0, b1):
        assert member.got("news") == [({"headline": "hi"},)]
    assert a1.got("news") == []


async def test_sid_target_reaches_only_that_socket(
    cluster: MasterProcess, clients: Any, redis_client: aioredis.Redis
) -> None:
    a0, a1, b0, b1 = await four_clients(cluster, clients)
    await publish(redis_client, "ch:dm", {"to": b1.sid(), "data": "psst"})
    await fence(redis_client, a0, a1, b0, b1)
    assert b1.got("dm") == [("psst",)]
    assert a0.got("dm") == a1.got("dm") == b0.got("dm") == []


async def test_list_union_minus_except_rooms_and_sids(
    cluster: MasterProcess, clients: Any, redis_client: aioredis.Redis
) -> None:
    a0, a1, b0, b1 = await four_clients(cluster, clients)
    await a0.call("join", "red")
    await a1.call("join", "red")
    await a1.call("join", "blue")  # in two target rooms: must still get it once
    await b0.call("join", "blue")
    await b1.call("join", "blue")
    await b1.call("join", "muted")
    await publish(
        redis_client,
        "ch:update",
        {"to": ["red", "blue", b0.sid()], "except": ["muted", a0.sid()], "data": 1},
    )
    await fence(redis_client, a0, a1, b0, b1)
    assert a1.got("update") == [(1,)]
    assert b0.got("update") == [(1,)]
    assert a0.got("update") == []
    assert b1.got("update") == []


async def test_broadcast_reaches_every_socket_once(
    cluster: MasterProcess, clients: Any, redis_client: aioredis.Redis
) -> None:
    everyone = await four_clients(cluster, clients)
    await publish(redis_client, "ch:all", {"data": "x"})
    await publish(redis_client, "ch:all", {"data": "y", "except": everyone[3].sid()})
    await fence(redis_client, *everyone)
    for r in everyone[:3]:
        assert r.got("all") == [("x",), ("y",)]
    assert everyone[3].got("all") == [("x",)]


async def test_args_event_override_and_no_argument(
    cluster: MasterProcess, clients: Any, redis_client: aioredis.Redis
) -> None:
    a0, _, b0, _ = await four_clients(cluster, clients)
    targets = [a0.sid(), b0.sid()]
    await publish(redis_client, "ch:multi", {"to": targets, "args": [1, "two", {"3": [3]}, None]})
    await publish(redis_client, "ch:ignored", {"to": targets, "event": "renamed", "data": [1, 2]})
    await publish(redis_client, "ch:bare", {"to": targets})
    await publish(redis_client, "ch:a:b", {"to": targets, "args": []})
    await fence(redis_client, a0, b0)
    for r in (a0, b0):
        assert r.got("multi") == [(1, "two", {"3": [3]}, None)]
        assert r.got("renamed") == [([1, 2],)]
        assert r.got("ignored") == []
        assert r.got("bare") == [()]
        assert r.got("a:b") == [()]


async def test_namespaces_are_routed_separately(
    cluster: MasterProcess, clients: Any, redis_client: aioredis.Redis
) -> None:
    a0 = await clients(cluster.url(0), "a0", namespaces=("/", "/chat"))
    b0 = await clients(cluster.url(1), "b0", namespaces=("/", "/chat"))
    await b0.call("join", "lobby", namespace="/chat")
    await publish(redis_client, "ch:hello", {"namespace": "/chat", "data": "chat"})
    await publish(redis_client, "ch:hello", {"namespace": "/chat", "to": "lobby", "data": "lobby"})
    await fence(redis_client, a0, b0, namespace="/chat")
    await fence(redis_client, a0, b0)
    assert a0.got("hello", "/chat") == [("chat",)]
    assert b0.got("hello", "/chat") == [("chat",), ("lobby",)]
    assert a0.got("hello") == b0.got("hello") == []


async def test_worker_without_targets_gets_nothing_over_its_pipe(
    cluster: MasterProcess, clients: Any, redis_client: aioredis.Redis
) -> None:
    a0, a1, b0, _ = await four_clients(cluster, clients)
    await a0.call("join", "only-on-0")
    await a1.call("join", "only-on-0")
    await b0.call("join", "elsewhere")
    before = cluster.metrics()
    for i in range(5):
        await publish(redis_client, "ch:tick", {"to": "only-on-0", "data": i})
    await publish(redis_client, "ch:tick", {"to": "only-on-0", "except": "only-on-0"})
    await publish(redis_client, "ch:tick", {"to": [b0.sid(), a0.sid()], "except": b0.sid()})
    await fence(redis_client, a0, a1)
    after = cluster.metrics()
    routed = 'sio_master_messages_routed_total{worker="%d"}'
    assert after.get(routed % 1, 0) == before.get(routed % 1, 0)
    assert after[routed % 0] - before.get(routed % 0, 0) == 5 + 1 + 1  # ticks, last, fence
    assert a0.got("tick") == [(i,) for i in range(5)] + [()]
    assert a1.got("tick") == [(i,) for i in range(5)]
    assert b0.got("tick") == []


async def test_handler_emits_reach_every_worker_exactly_once(
    cluster: MasterProcess, clients: Any, redis_client: aioredis.Redis
) -> None:
    a0, a1, b0, b1 = await four_clients(cluster, clients)
    for r in (a0, b0, b1):
        await r.call("join", "team")
    everyone = (a0, a1, b0, b1)
    await a0.call("emit", {"event": "to-room", "args": ["r"], "to": "team"})
    await b1.call("emit", {"event": "to-all", "args": ["all", 2], "skip_sid": b1.sid()})
    await a1.call("emit", {"event": "to-sid", "args": [{"k": "v"}], "to": b0.sid()})
    await b0.call(
        "emit", {"event": "to-list", "args": [], "to": [a1.sid(), "team"], "skip_sid": [a0.sid()]}
    )
    # fences along the same paths: each emitting worker broadcasts a marker last
    for emitter in (a0, b1, a1, b0):
        await emitter.call("emit", {"event": "mark", "args": [emitter.name]})
    for r in everyone:
        await r.wait_count("mark", 4)
    assert [r.got("to-room") for r in everyone] == [[("r",)], [], [("r",)], [("r",)]]
    assert [r.got("to-all") for r in everyone] == [[("all", 2)]] * 3 + [[]]
    assert [r.got("to-sid") for r in everyone] == [[], [], [({"k": "v"},)], []]
    assert [r.got("to-list") for r in everyone] == [[], [()], [()], [()]]


async def test_bad_bodies_are_rejected_and_valid_traffic_flows(
    cluster: MasterProcess, clients: Any, redis_client: aioredis.Redis
) -> None:
    a0, b0 = await clients(cluster.url(0), "a0"), await clients(cluster.url(1), "b0")
    bad: list[tuple[str | bytes, Any, str]] = [
        ("ch:x", b"\xff\xfe not json", "invalid_json"),
        (b"ch:\xff\xfe", {"data": 1}, "bad_event"),  # a channel (the event) that is not UTF-8
        ("ch:x", '{"data": ' + "[" * 300 + "]" * 300 + "}", "too_deep"),
        ("ch:x", "{not json", "invalid_json"),
        ("ch:x", "[1, 2]", "not_object"),
        ("ch:x", "42", "not_object"),
        ("ch:x", {"room": "typo"}, "unknown_field"),
        ("ch:x", {"to": 5}, "bad_type"),
        ("ch:x", {"to": ["ok", 3]}, "bad_type"),
        ("ch:x", {"args": "not a list"}, "bad_type"),
        ("ch:x", {"data": 1, "args": [1]}, "bad_type"),
        ("ch:x", {"namespace": "chat"}, "bad_type"),
        ("ch:x", {"event": 7}, "bad_event"),
        ("ch:", {"data": 1}, "bad_event"),
        ("ch:disconnect", {}, "reserved_event"),
        ("ch:x", {"namespace": "/nope"}, "unknown_namespace"),
        ("ch:x", json.dumps({"data": "x" * (1024 * 1024)}), "too_large"),
    ]
    before = cluster.metrics()
    kept_before = await redis_client.llen(REJECTED)
    for channel, body, _ in bad:
        await publish(redis_client, channel, body)
    await publish(redis_client, "ch:ok", {"data": "still fine"})
    await fence(redis_client, a0, b0)
    assert a0.got("ok") == b0.got("ok") == [("still fine",)]
    assert a0.got("x") == b0.got("x") == []
    after = cluster.metrics()
    expected: dict[str, int] = {}
    for _, _, reason in bad:
        expected[reason] = expected.get(reason, 0) + 1
    for reason, count in expected.items():
        key = f'sio_master_messages_rejected_total{{reason="{reason}"}}'
        assert after.get(key, 0) - before.get(key, 0) == count, reason

    async def all_kept() -> bool:  # pushed on a command connection, maybe after the fence
        return int(await redis_client.llen(REJECTED)) >= kept_before + len(bad)

    await until(all_kept, what="every rejected message kept")
    stored = [json.loads(e) for e in await redis_client.lrange(REJECTED, 0, -1)]
    assert len(stored) == kept_before + len(bad)
    newest = stored[: len(bad)][::-1]
    shown = [c.decode("utf-8", "replace") if isinstance(c, bytes) else c for c, _, _ in bad]
    assert [(e["channel"], e["reason"]) for e in newest] == list(
        zip(shown, [r for _, _, r in bad], strict=True)
    )
    assert newest[-1]["size"] > 1024 * 1024 and len(newest[-1]["body"]) == 4096
    assert after["sio_master_workers_alive"] == 2
    assert cluster.proc is not None and cluster.proc.poll() is None


async def test_connected_sockets_gauge_follows_connects_and_disconnects(
    cluster: MasterProcess, clients: Any
) -> None:
    def gauge(worker: int) -> float:
        return cluster.metric(f'sio_master_connected_sockets{{worker="{worker}"}}')

    base0, base1 = gauge(0), gauge(1)
    a0 = await clients(cluster.url(0), "a0")
    await clients(cluster.url(1), "b0", namespaces=("/", "/chat"))
    assert (gauge(0), gauge(1)) == (base0 + 1, base1 + 2)  # connect waits for the master
    await a0.close()
    await until(lambda: gauge(0) == base0, what="gauge back after disconnect")
