"""FrameLink over a real socketpair: per-tick batching, the bound, and control frames."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from sio_cluster.wire.frames import Broadcast, Ping, Ready, Sync
from sio_cluster.wire.link import FrameLink
from tests.cluster import until


async def make_pair(max_buffer: int = 1 << 20) -> tuple[FrameLink, FrameLink, list[Any], list[Any]]:
    a_sock, b_sock = socket.socketpair()
    got_a: list[Any] = []
    got_b: list[Any] = []
    a = await FrameLink.open(
        a_sock, lambda frame, body: got_a.append(frame), lambda e: None, max_buffer
    )
    b = await FrameLink.open(
        b_sock, lambda frame, body: got_b.append(frame), lambda e: None, max_buffer
    )
    return a, b, got_a, got_b


async def test_frames_sent_in_one_tick_go_out_in_one_write_and_arrive_in_order() -> None:
    a, b, _, got_b = await make_pair()
    writes: list[int] = []
    transport = a._transport
    assert transport is not None
    original = transport.write

    def counting_write(data: bytes | bytearray | memoryview) -> None:
        writes.append(len(data))
        original(data)

    transport.write = counting_write  # type: ignore[method-assign]
    for i in range(100):
        assert a.send(Ping(i).encode())
    assert writes == []  # nothing written until the next tick
    await until(lambda: len(got_b) == 100)
    assert len(writes) == 1
    assert got_b == [Ping(i) for i in range(100)]
    a.close()
    b.close()


async def test_backlog_bound_refuses_droppable_frames_but_not_control_frames() -> None:
    a, b, _, got_b = await make_pair(max_buffer=64 * 1024)
    b._transport.pause_reading()  # type: ignore[union-attr]  # the peer stops reading
    frame = Broadcast("/", None, [], ["x" * 1000]).encode()
    accepted = 0
    for _ in range(2000):
        accepted += a.send(frame)
        await asyncio.sleep(0)
    assert 0 < accepted < 2000
    assert a.backlog_bytes() <= 64 * 1024 + len(frame)
    assert a.send(Sync(0).encode(), droppable=False)
    b._transport.resume_reading()  # type: ignore[union-attr]
    await until(lambda: len(got_b) == accepted + 1)
    assert got_b[-1] == Sync(0)
    a.close()
    b.close()


async def test_peer_close_is_reported_and_sends_are_refused() -> None:
    lost: list[Any] = []
    a_sock, b_sock = socket.socketpair()
    a = await FrameLink.open(a_sock, lambda frame, body: None, lambda e: lost.append(e), 1 << 20)
    b_sock.close()
    await until(lambda: lost == [None])
    assert a.closed and not a.send(Ping(1).encode())


async def test_garbage_is_counted_and_the_stream_goes_on() -> None:
    bad: list[Any] = []
    got: list[Any] = []
    a_sock, b_sock = socket.socketpair()
    a = await FrameLink.open(
        a_sock, lambda frame, body: got.append(frame), lambda e: None, 1 << 20, bad.append
    )
    b_sock.sendall(b"\x00\x00\x00\x01\xc1" + Ready(1).encode())
    await until(lambda: got == [Ready(1)])
    assert len(bad) == 1
    b_sock.sendall(b"\xff\xff\xff\xff")  # announces 4 GiB: unrecoverable, link closes
    await until(lambda: a.closed)
    b_sock.close()
