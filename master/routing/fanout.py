"""The one route-encode-send path: every delivery the master makes goes through here.

Why one path: ``ch:*`` messages, workers' broadcasts and other hosts' broadcasts
all end the same way. The routing table names the workers holding at least one
recipient; the frame is built once (or forwarded byte for byte, as a worker's
own broadcast is); the same bytes are queued on each target's pipe, counted per
worker; a worker whose pipe is over its bound loses the message, counted and
logged at a limited rate, and never slows the others.

This is also where each event gets its offset when connection state recovery is on
(:class:`master.recovery.log.RecoveryLog`): stamped once, logged, then framed for everyone.
Off, the log is :class:`master.recovery.off.NoPacketLog`, which keeps nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence

from prometheus_client import Counter

from sio_cluster.common.ratelimit import RateLimitedLogger
from sio_cluster.master.metrics import Metrics
from sio_cluster.master.recovery.off import NO_PACKET_LOG, PacketLog
from sio_cluster.master.routing.router import RoutingTable
from sio_cluster.master.supervisor import WorkerPool
from sio_cluster.wire.frames import Broadcast, Room

log = logging.getLogger(__name__)

Parts = Sequence[str | bytes]


class Fanout:
    """Delivers encoded packets to the workers that hold their recipients."""

    def __init__(
        self,
        table: RoutingTable,
        workers: WorkerPool,
        metrics: Metrics,
        pipe_bound: int,
        recovery: PacketLog = NO_PACKET_LOG,
    ) -> None:
        self.table = table
        self.recovery = recovery
        self._workers = workers
        self._metrics = metrics
        self._pipe_bound = pipe_bound
        self._routed = metrics.hot.routed
        self._dropped: dict[int, Counter] = {}
        self._lost = metrics.lost.labels(reason="pipe_full")
        self._drop_log = RateLimitedLogger(log)

    def wanted_here(self, namespace: str, rooms: Sequence[Room]) -> bool:
        """True if a socket of this host is in one of ``rooms``, or a kept session (recovery)
        may be: a message for none of them need not even be decoded."""
        return bool(self.table.route(namespace, rooms)) or self.recovery.wanted(namespace, rooms)

    def deliver(
        self,
        namespace: str,
        rooms: Sequence[Room] | None,
        exclude: Iterable[Room],
        parts: Parts | Callable[[], Parts],
        skip_worker: int | None = None,
        frame: bytes | None = None,
        own: bool = False,
    ) -> int | None:
        """Send the packet to every worker holding a recipient.

        ``parts`` may be a callable, so a packet nobody here receives is never
        encoded; ``frame`` is a ready Broadcast frame to forward as it is. Return the
        sequence number of the packet's offset if it got one (recovery on; ``own``: a
        broadcast of this host's workers).
        """
        exclude = list(exclude)
        targets = self.table.route(namespace, rooms, exclude, skip_worker)
        parts, seq = self.recovery.log_packet(namespace, rooms, exclude, parts, bool(targets), own)
        if seq is not None:
            frame = None  # stamped: the worker's own frame no longer fits
        if not targets:
            return seq
        if frame is None:
            encoded = parts() if callable(parts) else parts
            frame = Broadcast.build(namespace, rooms, exclude, encoded)
        send = self._workers.send
        routed = self._routed
        for worker in targets:
            if send(worker, frame):
                routed[worker] = routed.get(worker, 0) + 1
            else:
                self._drop(worker)
        return seq

    def _drop(self, worker: int) -> None:
        counter = self._dropped.get(worker)
        if counter is None:
            counter = self._dropped[worker] = self._metrics.dropped.labels(str(worker))
        counter.inc()
        self._lost.inc()
        self._drop_log.log(
            logging.WARNING,
            worker,
            "worker %d is not keeping up (pipe backlog over %d bytes): dropping messages",
            worker,
            self._pipe_bound,
        )
