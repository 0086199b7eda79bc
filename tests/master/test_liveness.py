"""What a lost subscriber connection is counted as (both subscribers share the rule)."""

from __future__ import annotations

import time

import pytest

from sio_cluster.master.pubsub.liveness import Loss


@pytest.mark.parametrize(
    ("stalled", "failed_reconnects", "reason", "estimate"),
    [
        (True, 0, "subscriber_stall", 20),
        (True, 3, "subscriber_stall", 20),
        (False, 0, "subscriber_cut", 21),  # at least the message that cut it
        (False, 1, "subscriber_lost", 20),
    ],
)
def test_a_loss_is_counted_by_how_the_connection_ended(
    stalled: bool, failed_reconnects: int, reason: str, estimate: int
) -> None:
    counted: list[tuple[str, int]] = []
    loss = Loss("the subscriber", stalled, time.monotonic() - 2.0, rate=10.0)
    loss.failed_reconnects = failed_reconnects
    loss.count(lambda *counts: counted.append(counts))
    assert [r for r, _ in counted] == [reason]
    assert estimate <= counted[0][1] <= estimate + 1  # 10/s x 2 s deaf (and the test's time)
