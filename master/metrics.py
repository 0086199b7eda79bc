"""The master's Prometheus metrics and the tiny HTTP endpoint that serves them.

The two counters every routed message touches (received, routed per worker) are
plain integers (:class:`HotCounts`) read at scrape time: a prometheus-client
``Counter.inc`` takes a lock, and the master's cost per message is the host's ceiling.
The rarer counters are prometheus-client's own. Gauges that describe current state
(sockets per worker, workers alive) are read from the master at scrape time, so they
can never drift from the routing table.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from sio_cluster.master.recovery.log import Outcome, RecoveryLog
from sio_cluster.wire.frames import (
    BAD_CLIENTS_DROPPED,
    CLIENTS_GONE_MID_ANSWER,
    CONNECTIONS_REFUSED,
    EIO3_CLIENTS,
    HEADER_TIMEOUTS,
    SLOW_CLIENT_BYTES_DROPPED,
    SLOW_CLIENTS_DROPPED,
    V09_BAD_FRAMES,
    V09_CLIENTS,
)

log = logging.getLogger(__name__)

PREFIX = "sio_master"


class HotCounts:
    """What every message increments, as bare integers; only the event loop's thread
    writes them, and a scrape (the same thread) reads them."""

    def __init__(self) -> None:
        self.received = 0
        self.routed: dict[int, int] = {}


class _HotCollector(Collector):
    def __init__(self, counts: HotCounts) -> None:
        self._counts = counts

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(
            f"{PREFIX}_messages_received",
            "Messages read from Redis pub/sub",
            value=self._counts.received,
        )
        routed = CounterMetricFamily(
            f"{PREFIX}_messages_routed",
            "Messages written to a worker's pipe (Redis and sibling broadcasts)",
            labels=["worker"],
        )
        for worker, count in sorted(self._counts.routed.items()):
            routed.add_metric([str(worker)], count)
        yield routed


class _ListenersCollector(Collector):
    def __init__(self, known: Callable[[], Mapping[str, int]]) -> None:
        self._known = known

    def collect(self) -> Iterator[GaugeMetricFamily]:
        listening = GaugeMetricFamily(
            f"{PREFIX}_bus_listeners",
            "Servers (this master included) subscribed to each namespace's channel of the"
            " cross-host bus, as last counted while Redis was healthy; publishes held through"
            " an outage wait for them",
            labels=["channel"],
        )
        for channel, count in sorted(self._known().items()):
            listening.add_metric([channel], count)
        yield listening


class _BacklogCollector(Collector):
    def __init__(self, backlogs: Callable[[], Mapping[int, int]]) -> None:
        self._backlogs = backlogs

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            f"{PREFIX}_worker_backlog_bytes",
            "Bytes queued in the master for a worker's pipe, not yet taken by the worker "
            "(over --worker-buffer-bytes, its messages are dropped)",
            labels=["worker"],
        )
        for worker, size in sorted(self._backlogs().items()):
            family.add_metric([str(worker)], size)
        yield family


class _StateCollector(Collector):
    def __init__(
        self,
        sockets: Callable[[], Mapping[int, int]],
        alive: Callable[[], int],
        worker_stats: Callable[[], Mapping[int, Mapping[str, Any]]],
    ) -> None:
        self._sockets = sockets
        self._alive = alive
        self._worker_stats = worker_stats

    def collect(self) -> Iterator[GaugeMetricFamily]:
        sockets = GaugeMetricFamily(
            f"{PREFIX}_connected_sockets",
            "Socket.IO connections (one per namespace) held by each worker",
            labels=["worker"],
        )
        for worker, count in sorted(self._sockets().items()):
            sockets.add_metric([str(worker)], count)
        yield sockets
        yield GaugeMetricFamily(
            f"{PREFIX}_workers_alive", "Worker processes currently running", value=self._alive()
        )
        slow = GaugeMetricFamily(
            f"{PREFIX}_slow_clients_dropped",
            "Connections a worker aborted for not reading (since that worker started)",
            labels=["worker"],
        )
        slow_bytes = GaugeMetricFamily(
            f"{PREFIX}_slow_client_bytes_dropped",
            "Bytes those connections had unsent when aborted: what they lost (since that "
            "worker started)",
            labels=["worker"],
        )
        bad = GaugeMetricFamily(
            f"{PREFIX}_bad_clients_dropped",
            "Websockets a worker closed for a packet it cannot decode (since it started)",
            labels=["worker"],
        )
        full = GaugeMetricFamily(
            f"{PREFIX}_connections_refused",
            "Connections a worker refused at --max-connections (since it started)",
            labels=["worker"],
        )
        late = GaugeMetricFamily(
            f"{PREFIX}_header_timeouts",
            "Connections a worker closed for not sending a request's headers within "
            "--header-timeout (since it started)",
            labels=["worker"],
        )
        gone = GaugeMetricFamily(
            f"{PREFIX}_clients_gone_mid_answer",
            "Connections their clients closed while a worker was answering a request, e.g. an "
            "abandoned websocket upgrade (since that worker started)",
            labels=["worker"],
        )
        old = GaugeMetricFamily(
            f"{PREFIX}_eio3_clients",
            "Engine.IO 3 clients (socket.io-client 1.x/2.x, --allow-eio3) connected to each "
            "worker, as of its last health check",
            labels=["worker"],
        )
        oldest = GaugeMetricFamily(
            f"{PREFIX}_v09_clients",
            "socket.io 0.9 clients (protocol 1, --allow-v09) connected to each worker, as of "
            "its last health check",
            labels=["worker"],
        )
        oldest_bad = GaugeMetricFamily(
            f"{PREFIX}_v09_bad_frames",
            "socket.io 0.9 frames a worker could not read, each closing its client (since "
            "that worker started)",
            labels=["worker"],
        )
        for worker, stats in sorted(self._worker_stats().items()):
            oldest.add_metric([str(worker)], stats.get(V09_CLIENTS, 0))
            oldest_bad.add_metric([str(worker)], stats.get(V09_BAD_FRAMES, 0))
            old.add_metric([str(worker)], stats.get(EIO3_CLIENTS, 0))
            slow.add_metric([str(worker)], stats.get(SLOW_CLIENTS_DROPPED, 0))
            slow_bytes.add_metric([str(worker)], stats.get(SLOW_CLIENT_BYTES_DROPPED, 0))
            bad.add_metric([str(worker)], stats.get(BAD_CLIENTS_DROPPED, 0))
            full.add_metric([str(worker)], stats.get(CONNECTIONS_REFUSED, 0))
            late.add_metric([str(worker)], stats.get(HEADER_TIMEOUTS, 0))
            gone.add_metric([str(worker)], stats.get(CLIENTS_GONE_MID_ANSWER, 0))
        yield slow
        yield slow_bytes
        yield bad
        yield full
        yield late
        yield gone
        yield old
        yield oldest
        yield oldest_bad


class _RecoveryCollector(Collector):
    """Recoveries by outcome, and what the master holds for clients that may come back."""

    def __init__(self, recovery: RecoveryLog) -> None:
        self._recovery = recovery

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        recovery = self._recovery
        outcomes = CounterMetricFamily(
            f"{PREFIX}_recoveries",
            "Connection state recoveries asked of this host, by outcome",
            labels=["outcome"],
        )
        for outcome in Outcome:
            outcomes.add_metric([outcome.value], recovery.outcomes[outcome])
        yield outcomes
        yield GaugeMetricFamily(
            f"{PREFIX}_recovery_sessions",
            "Sessions of disconnected sockets kept for recovery",
            value=recovery.sessions,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_recovery_log_bytes",
            "Bytes of packets kept for recovering clients (capped by --recovery-buffer-bytes)",
            value=recovery.log_bytes,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_recovery_log_packets",
            "Packets kept for recovering clients",
            value=recovery.log_packets,
        )


class Metrics:
    """Every counter the master keeps, on a private registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.hot = HotCounts()
        r.register(_HotCollector(self.hot))
        self.rejected = Counter(
            f"{PREFIX}_messages_rejected", "Messages rejected, by reason", ["reason"], registry=r
        )
        self.dropped = Counter(
            f"{PREFIX}_messages_dropped",
            "Messages dropped because a worker's pipe backlog was full",
            ["worker"],
            registry=r,
        )
        self.worker_broadcasts = Counter(
            f"{PREFIX}_worker_broadcasts", "Broadcasts emitted by workers' handlers", registry=r
        )
        self.restarts = Counter(
            f"{PREFIX}_worker_restarts", "Workers respawned after dying", ["worker"], registry=r
        )
        self.redis_buffer_dropped = Counter(
            f"{PREFIX}_redis_buffer_dropped",
            "Outbound Redis messages dropped because the outage buffer was full",
            registry=r,
        )
        self.redis_outbox = Gauge(
            f"{PREFIX}_redis_outbox_messages",
            "Messages waiting to be published to Redis (grows during an outage)",
            registry=r,
        )
        self.redis_reconnects = Counter(
            f"{PREFIX}_redis_reconnects", "Times the subscriber subscribed again", registry=r
        )
        self.bad_frames = Counter(
            f"{PREFIX}_bad_frames", "Unreadable frames received from workers", registry=r
        )
        self.lost = Counter(
            f"{PREFIX}_messages_lost",
            "Messages lost, by reason: pipe_full (exact), worker_lost, subscriber_cut and "
            "subscriber_stall (estimates; see README's Guarantees)",
            ["reason"],
            registry=r,
        )
        self.loss_events = Counter(
            f"{PREFIX}_loss_events",
            "Events that lost messages whose number is estimated: a worker lost, the "
            "subscriber cut by Redis or remade after a stall",
            ["reason"],
            registry=r,
        )
        self.health_kills = Counter(
            f"{PREFIX}_workers_killed",
            "Workers killed for not answering health pings within --worker-health-timeout",
            ["worker"],
            registry=r,
        )
        self.connections = Counter(
            f"{PREFIX}_connections",
            "Connections accepted on the one port, by outcome (handed to a worker, "
            "header_timeout, closed_early, no_worker, worker_busy, bad_proxy_header; "
            "handed_back by a stopping worker, then routed again)",
            ["outcome"],
            registry=r,
        )

        self.store09_received = Counter(
            f"{PREFIX}_store09_received",
            "socket.io 0.9 RedisStore messages read (--redis-store-09), by channel",
            ["channel"],
            registry=r,
        )
        self.store09_published = Counter(
            f"{PREFIX}_store09_published",
            "socket.io 0.9 RedisStore messages published (--redis-store-09), by channel",
            ["channel"],
            registry=r,
        )
        self.store09_malformed = Counter(
            f"{PREFIX}_store09_malformed",
            "socket.io 0.9 RedisStore messages that could not be read and were ignored, by channel",
            ["channel"],
            registry=r,
        )
        self.store09_unsendable = Counter(
            f"{PREFIX}_store09_unsendable",
            "Emits the 0.9 fleet cannot carry (binary arguments): not passed on to it",
            registry=r,
        )
        self.store09_servers_lost = Counter(
            f"{PREFIX}_store09_servers_lost",
            "0.9 servers that stopped answering the roll call (their clients forgotten)",
            registry=r,
        )

    def watch_state(
        self,
        sockets: Callable[[], Mapping[int, int]],
        alive: Callable[[], int],
        worker_stats: Callable[[], Mapping[int, Mapping[str, Any]]],
    ) -> None:
        """Expose the current-state gauges, read from the master at scrape time."""
        self.registry.register(_StateCollector(sockets, alive, worker_stats))

    def watch_backlogs(self, backlogs: Callable[[], Mapping[int, int]]) -> None:
        """Expose each worker pipe's backlog in the master, read at scrape time."""
        self.registry.register(_BacklogCollector(backlogs))

    def watch_listeners(self, known: Callable[[], Mapping[str, int]]) -> None:
        """Expose the cross-host bus's count of listening servers, read at scrape time."""
        self.registry.register(_ListenersCollector(known))

    def watch_recovery(self, recovery: RecoveryLog) -> None:
        """Expose connection state recovery's counters and sizes, read at scrape time."""
        self.registry.register(_RecoveryCollector(recovery))

    def watch_store09(self, clients: Callable[[], int], servers: Callable[[], int]) -> None:
        """Expose the 0.9 fleet as this master sees it, read at scrape time."""
        Gauge(
            f"{PREFIX}_store09_clients",
            "0.9 clients of the 0.9 servers this master knows of",
            registry=self.registry,
        ).set_function(clients)
        Gauge(
            f"{PREFIX}_store09_servers",
            "0.9 servers heard from (and not lost)",
            registry=self.registry,
        ).set_function(servers)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


Readiness = Callable[[], dict[str, Any]]  # {"ready": bool, ...what it was judged on}


async def serve_metrics(
    metrics: Metrics, host: str, port: int, readiness: Readiness
) -> web.AppRunner:
    """Serve ``GET /metrics``, and the probes ``GET /healthz`` (the master runs) and
    ``GET /readyz`` (200 only when ``readiness()`` says ready, else 503; both with the
    JSON it returned), on ``host:port``; the caller cleans the runner up."""

    async def handle(_: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), content_type="text/plain", charset="utf-8")

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "pid": os.getpid()})

    async def readyz(_: web.Request) -> web.Response:
        state = readiness()
        return web.json_response(state, status=200 if state.get("ready") else 503)

    app = web.Application()
    app.router.add_get("/metrics", handle)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, host, port, reuse_address=True).start()
    log.info("metrics on http://%s:%d/metrics", host, port)
    return runner
