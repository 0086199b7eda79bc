"""The built-in demo's bounds: a client cannot grow without bound in a public demo."""

from __future__ import annotations

from typing import Any

from sio_cluster.workers.demo import MAX_ROOM_NAME, MAX_ROOMS
from tests.cluster import MasterProcess, Recorder


async def test_rooms_per_socket_and_room_names_are_capped(start_master: Any, clients: Any) -> None:
    cluster: MasterProcess = await start_master(
        workers=1, app="sio_cluster.workers.demo:setup"
    ).ready()
    client: Recorder = await clients(cluster.url(0), "c")
    for i in range(MAX_ROOMS + 5):
        rooms = await client.call("join", f"r{i:03d}")
    assert rooms == [f"r{i:03d}" for i in range(MAX_ROOMS)]  # the last 5 refused
    assert "r000" in await client.call("join", "r000")  # joining one it is in: fine
    await client.call("leave", "r000")
    assert "x" * MAX_ROOM_NAME in await client.call("join", "x" * MAX_ROOM_NAME)
    too_long = "y" * (MAX_ROOM_NAME + 1)
    assert too_long not in await client.call("join", too_long)
