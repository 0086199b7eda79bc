"""The bounds on binary packets waiting for their attachments (pure, on a real event loop)."""

from __future__ import annotations

import asyncio

from sio_cluster.workers.partial_packets import PartialPackets


def packets(expired: list[str], timeout: float = 60.0) -> PartialPackets:
    return PartialPackets(100, 150, timeout, expired.append)


def timed(expired: list[str], fired: asyncio.Event, timeout: float) -> PartialPackets:
    """Packets whose expiries are noted in ``expired`` and wake ``fired``."""

    def expire(eio_sid: str) -> None:
        expired.append(eio_sid)
        fired.set()

    return PartialPackets(100, 150, timeout, expire)


async def test_a_finished_packet_holds_nothing() -> None:
    expired: list[str] = []
    parked = packets(expired)
    parked.header("a", 3)
    assert parked.attachment("a", 40) is None
    assert parked.attachment("a", 40) is None
    assert parked.held == 80
    assert parked.attachment("a", 90) is None  # the last frame: handed on, not held
    assert (parked.held, len(parked)) == (0, 0)


async def test_a_connection_past_its_bound_is_named_once_and_forgotten() -> None:
    parked = packets([])
    parked.header("a", 10)
    assert parked.attachment("a", 60) is None
    assert parked.attachment("a", 41) == "101 bytes of unfinished binary packets (above 100)"
    assert (parked.held, len(parked)) == (0, 0)
    assert parked.attachment("a", 41) is None  # the frames already on their way


async def test_the_worker_s_bound_closes_the_connection_that_passes_it() -> None:
    parked = packets([])
    parked.header("a", 10)
    parked.header("b", 10)
    assert parked.attachment("a", 90) is None
    assert parked.attachment("b", 61) == (
        "binary frames while this worker held 151 bytes of unfinished packets (above 150)"
    )
    assert parked.held == 90  # "a" keeps its place
    assert parked.attachment("a", 5) is None


async def test_a_new_header_replaces_an_unfinished_packet() -> None:
    parked = packets([])
    parked.header("a", 5)
    assert parked.attachment("a", 50) is None
    parked.header("a", 2)
    assert parked.held == 0
    assert parked.attachment("a", 99) is None
    assert parked.attachment("a", 99) is None  # the second and last of the new packet
    assert len(parked) == 0


async def test_a_packet_unfinished_at_the_timeout_expires_once() -> None:
    expired: list[str] = []
    fired = asyncio.Event()
    parked = timed(expired, fired, 0.05)
    parked.header("slow", 3)
    parked.header("quick", 2)
    assert parked.attachment("slow", 10) is None
    assert parked.attachment("quick", 10) is None
    assert parked.attachment("quick", 10) is None  # finished: its timer is cancelled
    await asyncio.wait_for(fired.wait(), 5)
    assert expired == ["slow"]
    assert (parked.held, len(parked)) == (0, 0)


async def test_a_connection_gone_cancels_its_timer() -> None:
    expired: list[str] = []
    fired = asyncio.Event()
    parked = timed(expired, fired, 0.01)
    parked.header("a", 3)
    parked.forget("a")
    parked.header("b", 2)  # due after "a" would have been
    await asyncio.wait_for(fired.wait(), 5)
    assert expired == ["b"]
