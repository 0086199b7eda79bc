"""Recovery on and off behind one interface: what the fanout and the master get from each.

The master and the fanout call the same methods either way (:mod:`master.recovery.off`);
these tests pin what each side does with a worker's broadcast and a packet."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from sio_cluster.master.metrics import Metrics
from sio_cluster.master.recovery.host import HostRecovery
from sio_cluster.master.recovery.log import RecoveryLog
from sio_cluster.master.recovery.off import NullRecovery, Recovery
from sio_cluster.master.routing.fanout import Fanout
from sio_cluster.master.routing.router import RoutingTable
from sio_cluster.wire.frames import Broadcast, Restore
from tests.memory_cluster import MemoryWorkers

NEWS = Broadcast("/", ["red"], [], ['2["news",1]'])


def two_workers_in_red(log: RecoveryLog | None = None) -> tuple[MemoryWorkers, Fanout]:
    """Two workers with a socket in "red" each, and their fanout (recovery on: ``log``)."""
    table = RoutingTable()
    workers = MemoryWorkers(table, 2)
    workers.connect(0, "/", "a", "red")
    workers.connect(1, "/", "b", "red")
    if log is None:
        return workers, Fanout(table, workers, Metrics(), 1 << 20)
    return workers, Fanout(table, workers, Metrics(), 1 << 20, log)


def received(workers: MemoryWorkers) -> dict[int, list[Broadcast]]:
    return {w: list(m.received) for w, m in workers.workers.items() if m.received}


def bad_frames() -> Counter:
    return Counter("bad_frames", "test", registry=CollectorRegistry())


def test_off_a_workers_broadcast_goes_to_the_others_as_it_came() -> None:
    workers, fanout = two_workers_in_red()
    recovery: Recovery = NullRecovery(bad_frames())
    body = NEWS.encode()[4:]
    assert recovery.deliver_own(fanout, 0, NEWS, body) is None
    assert received(workers) == {1: [NEWS]}  # the origin delivered it itself
    recovery.published(None, b"sent")  # nothing logged, nothing tracked


def test_on_a_workers_broadcast_reaches_every_worker_stamped() -> None:
    log = RecoveryLog(60.0, 1 << 20, tag="h1")
    workers, fanout = two_workers_in_red(log)
    recovery: Recovery = HostRecovery(log, lambda worker, report: None, lambda w, f: True)
    assert recovery.deliver_own(fanout, 0, NEWS, NEWS.encode()[4:]) == 1
    stamped = Broadcast("/", ["red"], [], ['2["news",1,"h1.1"]'])
    assert received(workers) == {0: [stamped], 1: [stamped]}  # the origin delivered nothing


def test_off_a_recovery_frame_is_a_bad_frame() -> None:
    counter = bad_frames()
    NullRecovery(counter).on_frame(0, Restore(1, "/", "pid", "h1.0"))
    assert counter._value.get() == 1


def test_off_nothing_is_decoded_for_a_room_nobody_here_holds() -> None:
    _, fanout = two_workers_in_red()
    assert not fanout.wanted_here("/", ["blue"])

    def never() -> list[str | bytes]:
        raise AssertionError("encoded although nobody receives it")

    assert fanout.deliver("/", ["blue"], [], never) is None


def test_on_only_events_a_socket_here_or_a_kept_session_receives_are_stamped() -> None:
    log = RecoveryLog(60.0, 1 << 20, tag="h1")
    parts: list[str | bytes] = ['2["news",1]']
    assert log.log_packet("/", ["blue"], [], parts, routed=False, own=False) == (parts, None)
    ack: list[str | bytes] = ['212["ask",1]']
    assert log.log_packet("/", ["red"], [], lambda: ack, routed=True, own=False) == (ack, None)
    assert log.log_packet("/", ["red"], [], parts, routed=True, own=False) == (
        ['2["news",1,"h1.1"]'],
        1,  # sequence numbers start at 1
    )
