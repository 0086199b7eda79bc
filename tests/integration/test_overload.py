"""Overload: a flood that outlasts the health timeout kills no busy worker, and every loss
is counted; a stuck worker is still killed."""

from __future__ import annotations

import time
from typing import Any

from sio_cluster.master.embedded_redis import EmbeddedRedis
from tests.cluster import MasterProcess, until
from tests.flood import CountingClient, PacedPublisher

HEALTH_TIMEOUT = 3
FLOOD_RATE = 40_000  # messages/s: more than two workers deliver to 25 clients each here
FLOOD_SECONDS = 10


def backlog(cluster: MasterProcess) -> int:
    """Bytes queued in the master for both workers."""
    return sum(
        int(cluster.metric(f'sio_master_worker_backlog_bytes{{worker="{worker}"}}'))
        for worker in (0, 1)
    )


def dropped(cluster: MasterProcess, worker: int) -> int:
    """Messages the master dropped for ``worker`` (its pipe over the bound)."""
    return int(cluster.metric(f'sio_master_messages_dropped_total{{worker="{worker}"}}'))


async def test_a_flood_longer_than_the_health_timeout_kills_no_worker(
    start_master: Any, redis_server: EmbeddedRedis
) -> None:
    cluster = await start_master(
        workers=2, extra=["--worker-health-timeout", str(HEALTH_TIMEOUT)]
    ).ready()
    pids = cluster.worker_pids()
    readers = [await CountingClient.join(cluster.port_of(i % 2), "flood") for i in range(49)]
    deaf = await CountingClient.join(cluster.port_of(0), "flood", reading=False)
    try:
        publisher = PacedPublisher(redis_server.host, redis_server.port, "flood", pad=24)
        await publisher.run(FLOOD_RATE, FLOOD_SECONDS)
        published_at = time.monotonic()
        total = publisher.sent
        await until(lambda: backlog(cluster) == 0, 90, "the master's backlog drained", 0.2)
        backlog_after = time.monotonic() - published_at

        def missing() -> list[int]:
            return [
                total - c.count - dropped(cluster, i % 2)
                for i, c in enumerate(readers)
                if c.count + dropped(cluster, i % 2) != total
            ]

        def settled() -> bool:
            return not missing() or any(c.closed for c in readers)

        await until(settled, 90, "every reader has every message or its loss", interval=0.5)
        drained_after = time.monotonic() - published_at
        kills = [m.string for m in cluster.log_matches(r"killing it")]
        drops = [dropped(cluster, 0), dropped(cluster, 1)]
        print(
            f"\nflood: {total} messages, the master's backlog drained {backlog_after:.1f} s "
            f"and every reader settled {drained_after:.1f} s after the "
            f"last; short: {missing()}; readers cut: {sum(c.closed for c in readers)}; "
            f"dropped (pipe full) per worker: {drops}; kills: {kills}"
        )
        # the point of the test: the backlog in the master outlasted the health timeout
        assert backlog_after > HEALTH_TIMEOUT, backlog_after
        assert kills == []
        assert cluster.worker_pids() == pids
        assert not any(c.closed for c in readers)
        for worker in (0, 1):
            assert cluster.metric(f'sio_master_workers_killed_total{{worker="{worker}"}}') == 0
            assert cluster.metric(f'sio_master_worker_restarts_total{{worker="{worker}"}}') == 0
        assert cluster.metric('sio_master_messages_lost_total{reason="pipe_full"}') == sum(drops)
        # the client that never read was aborted, and what it had unsent is counted
        slow = 'sio_master_slow_clients_dropped{worker="0"}'
        await until(lambda: cluster.metric(slow) == 1, 5, "the deaf client counted")
        assert cluster.metric('sio_master_slow_client_bytes_dropped{worker="0"}') > 4 * 2**20
    finally:
        for client in [*readers, deaf]:
            await client.close()
