"""The Socket.IO Admin UI's server protocol (``--admin-ui``), cluster-wide, checked with a
real socket.io-client (the one the UI itself uses) against the cluster's real state."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from sio_cluster.master.embedded_redis import EmbeddedRedis
from tests.cluster import MasterProcess, Recorder, until
from tests.node_peer import NodePeer, NodePeerError, ensure_node_modules, missing_tools

pytestmark = pytest.mark.skipif(
    missing_tools() is not None, reason=f"the admin client is socket.io-client: {missing_tools()}"
)
AUTH = {"username": "admin", "password": "s3cret"}


@pytest.fixture(scope="module")
def master(redis_server: EmbeddedRedis) -> Iterator[MasterProcess]:
    extra = ["--admin-ui", "--admin-auth", "admin:s3cret"]
    process = MasterProcess(redis_server.url, workers=2, extra=extra).start()
    try:
        yield process.ready_sync()
    finally:
        process.cleanup()


@pytest.fixture(scope="module")
def ui() -> Iterator[NodePeer]:
    """socket.io-client clients (the peer's own server runs on a Redis of its own, apart)."""
    ensure_node_modules()
    server = EmbeddedRedis().start()
    peer = NodePeer(server.url).start()
    try:
        yield peer
    finally:
        peer.close()
        server.close()


async def test_a_wrong_password_is_refused(master: MasterProcess, ui: NodePeer) -> None:
    with pytest.raises(NodePeerError, match="invalid credentials"):
        await ui.connect(
            "intruder", nsp="/admin", url=master.url(0), auth={**AUTH, "password": "x"}
        )


async def test_the_ui_sees_every_worker_and_socket_of_the_cluster_and_acts_on_them(
    master: MasterProcess, ui: NodePeer, clients: Any
) -> None:
    p0: Recorder = await clients(master.url(0), "p0")
    p1: Recorder = await clients(master.url(1), "p1")
    await p0.call("join", "red")
    admin = await ui.connect("admin", nsp="/admin", url=master.url(1), auth=AUTH)

    await ui.wait_count("admin", "config", 1)
    features = ui.got("admin", "config")[0][0]["supportedFeatures"]
    assert {"EMIT", "JOIN", "LEAVE", "DISCONNECT", "MJOIN"} <= set(features)
    await ui.wait_count("admin", "all_sockets", 1)
    listed = {(s["nsp"], s["id"]): s for s in ui.got("admin", "all_sockets")[0][0]}
    assert set(listed) == {("/", p0.sid()), ("/", p1.sid()), ("/admin", admin)}
    assert sorted(listed[("/", p0.sid())]["rooms"]) == sorted([p0.sid(), "red"])
    assert listed[("/", p0.sid())]["handshake"]["address"] == "127.0.0.1"

    # server_stats from each worker: two servers, their pids
    pids = set(master.worker_pids().values())

    def servers() -> set[int]:
        return {stats[0]["pid"] for stats in ui.got("admin", "server_stats")}

    await until(lambda: servers() == pids, what="server_stats from both workers")

    # what happens on worker 0 reaches the UI on worker 1
    p2: Recorder = await clients(master.url(0), "p2")
    sid = p2.sid()
    await p2.call("join", "blue")
    await p2.close()
    await until(lambda: any(e[0]["id"] == sid for e in ui.got("admin", "socket_connected")))
    await until(lambda: ["/", "blue", sid] in [e[:3] for e in ui.got("admin", "room_joined")])
    await until(lambda: ["/", sid] in [e[:2] for e in ui.got("admin", "socket_disconnected")])
    connected = next(e[0] for e in ui.got("admin", "socket_connected") if e[0]["id"] == sid)
    assert (connected["nsp"], connected["transport"]) == ("/", "websocket")

    # the UI's charts: worker 0 counts p2's connection, disconnection and packets
    def counted(kind: str) -> int:
        return sum(
            event["count"]
            for stats in ui.got("admin", "server_stats")
            if stats[0]["pid"] == master.worker_pids()[0]
            for event in stats[0]["aggregatedEvents"]
            if event["type"] == kind
        )

    await until(lambda: counted("rawDisconnection") >= 1, what="p2's disconnection counted")
    assert counted("rawConnection") >= 1 and counted("packetsIn") >= 2  # CONNECT and join
    assert "AGGREGATED_EVENTS" in features

    # the UI's actions, carried out cluster-wide
    await ui.cmd("clientEmit", client="admin", event="join", args=["/", "green", p0.sid()])
    await until(lambda: _rooms(p0, "green"), what="p0 joined green")
    await ui.cmd("clientEmit", client="admin", event="emit", args=["/", "green", "hello", 1])
    await p0.wait_count("hello", 1)
    assert p1.got("hello") == []
    await ui.cmd("clientEmit", client="admin", event="_disconnect", args=["/", False, p1.sid()])
    await until(lambda: not p1.client.connected, what="p1 disconnected by the UI")


async def _rooms(client: Recorder, room: str) -> bool:
    return room in await client.call("join", "probe")
