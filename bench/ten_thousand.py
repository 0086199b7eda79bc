"""10,000 (or 100,000) concurrent websocket clients on one machine: the two layouts of one
host against each other (issue 24, item 5), or ours against Node and python-socketio (issues
11 and 26).

Each system runs with ``--processes`` server processes (4) and the same tiny app as
``bench/peers.py`` (a ``join`` event), against its own redis-server on a free loopback port,
one system after the other (``--only``, default ``one-port haproxy``):

- ``one-port``: ``python -m sio_cluster --workers 4``, every client on the master's port, which
  hands each connection to a worker (``bench/ten_thousand_layouts.py``);
- ``haproxy``: the same with ``--worker-ports`` behind the real HAProxy, configured by
  ``sio-master balancer-config haproxy --layout worker-ports`` (sticky by source address),
  every client on HAProxy's port (several HAProxy processes on it: see that module);
- ``ours``: ``--worker-ports`` with the clients on the workers' ports directly;
- ``node``: Node socket.io 4.8 + @socket.io/redis-adapter 8.3 (``bench/node/server.js``, one
  process per port, the clients on their ports directly);
- ``pysio``: plain python-socketio, ``AsyncServer`` + ``AsyncRedisManager``, on uvicorn +
  websockets (httptools, uvloop, websockets' sans-I/O protocol: ``bench/pysio_server.py``'s
  ``uvicorn`` stack, the one issue 26 quotes), one process per port, the clients on their
  ports directly.

``--clients`` websocket clients (``bench/node/crowd.js``, over ``--crowds`` Node processes;
client i on port ``i % ports``, from source address ``127.0.0.{1 + (i // ports) %
--sources}``, in room ``r{i % 20}``) then go through four phases, every wait bounded:

1. connect: every client connects and joins its room (at most ``--window`` on their first
   connection at once); the time from the first attempt to the last join acknowledged, and
   each client's own (p50/p99: from its first attempt to its join, retries included);
2. memory: the memory of the servers (our master and workers; the Node processes; the
   python-socketio processes) idle before the clients came and once they are all joined, per
   connection in KiB (the difference over ``--clients``), as PSS (the sum of ``Pss:`` in
   each process's ``/proc/<pid>/smaps_rollup``: a page shared by k processes counts 1/k, so
   the sum is what the system takes from the host; issue 26's target) and as RSS (each
   process's resident pages, shared ones counted in every process); the redis-server's is
   given apart;
3. broadcast: ``--rate`` messages per second to everyone for ``--seconds`` s, each holding
   its number and its publishing time (the system's own external format: our ``ch:*`` JSON,
   the Node emitter's msgpack); every client counts each number it gets, so deliveries are
   exact against clients x messages, duplicates included, and the latency is measured by the
   client from the timestamp (p50/p99/max over every delivery). Deliveries/s is delivered /
   (last delivery - first publish); "fan-out" is how long one broadcast took to reach its
   last client (median and worst over the broadcasts);
4. reconnect storm (``--storm drop``, the default): every client drops its connection at
   once and all of them come back through the front (the master's port, HAProxy's, or the
   workers'); or (``--storm kill``, ours and node only) the server process of the last
   port, holding 1/``--processes`` of the clients, is SIGKILLed (ours: the master respawns the
   worker; Node: the bench starts the killed process again on the same port as soon as it
   has exited). The clients reconnect by themselves with socket.io-client's default backoff
   (first retry 0.5-1.5 s after the drop, doubling to at most 5 s, +-50% at random; the same
   for every system). As each one is joined again the bench publishes a probe to its new
   sid, again every second until it arrives; the storm is over when every dropped client is
   joined AND has its probe. Times are from the SIGKILL or the drop
   (``bench/ten_thousand_storm.py``), so the backoff is in them; the joining attempt's own
   time (from its start to the join acknowledged) is what the front adds. ``--storm none``
   skips this phase (the 100,000-client run measures connect, memory and broadcast only).

The CPU time of the master and of HAProxy (the fronts) is given for the connect phase and the
storm apart, and the clients each worker holds once connected (source-address hashing over a
few addresses is uneven).

Nothing is asserted: the targets (issue 26: PSS per connection at most 8 KiB and below
Node's; every broadcast reaching every client exactly once; at 100,000 clients, all joined
within 60 s; issue 11: broadcast p99 under 50 ms, every client back and routed within 5 s)
are reported beside the figures. A phase
that does not finish within its time limit ends that system's run with the reason in the
table and the JSON (with the clients joined every 10 s and, for the connect phase, the CPU
each group spent), and the bench exits 1. The next system starts once every process of the
last one has exited (SIGKILL after 30 s): a worker closing its connections after its master
has gone would take the next run's cores.

The soft RLIMIT_NOFILE of this process is raised to what the largest process needs (a crowd
process or a server holding its share of the clients, plus a margin), within the hard limit;
every process started here inherits it. On a 2-core machine the servers, the crowd, Redis
and the publisher share the cores: the crowd's CPU is reported so its share is visible.

100,000 clients: the hard RLIMIT_NOFILE here is 20,000 a process and cannot be raised, so
the clients must be spread: ``--processes 8`` (12,500 sockets a server process; ours:
``--worker-ports``, each worker on its port) and ``--crowds 8`` (12,500 a crowd process),
each under 20,000 with the margin. Ports: a crowd client binds its source address before
connecting (``ws``'s ``localAddress``), and the kernel gives a bound port to one socket per
address while the ephemeral range lasts (32768-60999 here: 28,232 ports), so each source
address carries at most that many clients; 16 sources carry 6,250 each (781 per server
port). The bench refuses a run with more clients per source address than the range holds.

    python bench/ten_thousand.py --sources 16    # 10,000 clients, one port then HAProxy
    python bench/ten_thousand.py --quick         # 2,000 clients, under 2 minutes a system
    python bench/ten_thousand.py --only ours node --storm kill   # ours against Node
    python bench/ten_thousand.py --only ours --clients 5000 --out /tmp/bench-out
    python bench/ten_thousand.py --only ours node pysio --storm none --sources 16
    python bench/ten_thousand.py --only ours node --clients 100000 --processes 8 --crowds 8 \\
        --sources 16 --rate 1 --seconds 30 --storm none
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import signal
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # python bench/ten_thousand.py

from bench.crowd import Crowd, PhaseFailed, epoch_ms, failed_attempts  # noqa: E402
from bench.harness import Options, redis_server, write_json  # noqa: E402
from bench.measure import cpu_times, exited, pss_bytes, raise_open_files, rss_bytes  # noqa: E402
from bench.peers import (  # noqa: E402
    ROOMS,
    Node,
    Ours,
    PythonSocketIO,
    PythonSocketIOOnUvicorn,
    System,
    node_modules,
    percentile,
    subscribed,
)
from bench.scaling_load import RawPublisher, cpu_seconds, fixed_rate  # noqa: E402
from bench.ten_thousand_layouts import BehindHaproxy, Layout, OnePort  # noqa: E402
from bench.ten_thousand_report import tables  # noqa: E402
from bench.ten_thousand_storm import storm  # noqa: E402

POLL = 0.05  # seconds between looks at the crowd while waiting on it
PROGRESS = 10.0  # seconds between the connect phase's counts of clients joined
STOP_WAIT = 30.0  # seconds for a stopped system's processes to exit before SIGKILL
SETTLE = 2.0  # seconds of quiet before memory is read
MIB = 1 << 20
SYSTEMS: dict[str, type[System]] = {
    "one-port": OnePort,
    "haproxy": BehindHaproxy,
    "ours": Ours,
    "node": Node,
    "pysio": PythonSocketIOOnUvicorn,
}
EPHEMERAL_PORTS = "/proc/sys/net/ipv4/ip_local_port_range"


def check_sources(clients: int, sources: int) -> dict[str, int]:
    """Refuse more clients per loopback source address than the ephemeral range holds (each
    crowd client binds its source address, and a bound port is one socket's per address)."""
    with open(EPHEMERAL_PORTS) as f:
        low, high = map(int, f.read().split())
    per_source = math.ceil(clients / sources)
    if per_source > high - low + 1:
        raise SystemExit(
            f"{per_source:,} clients per source address, {high - low + 1:,} ephemeral ports "
            f"({low}-{high}): use more --sources"
        )
    return {"ephemeral_ports": high - low + 1, "clients_per_source": per_source}


class CpuWatch:
    """CPU time of the servers (ours: the master also apart; HAProxy's processes apart, not
    among the servers) and the crowd over one phase (schedstat, to the nanosecond), and the
    kernel's share of the servers' (/proc/<pid>/stat, in clock ticks)."""

    def __init__(self, system: System, crowd: Crowd) -> None:
        self.groups = {"servers": system.pids(), "crowd": crowd.pids}
        if isinstance(system, Ours):
            self.groups["master"] = {system.servers.procs[0].pid}
        if isinstance(system, BehindHaproxy):
            self.groups["balancer"] = system.balancer_pids()
        self.start = {k: cpu_seconds(pids) for k, pids in self.groups.items()}
        self.ticks = cpu_times(self.groups["servers"])

    def seconds(self) -> dict[str, float]:
        user, kernel = cpu_times(self.groups["servers"])
        user, kernel = user - self.ticks[0], kernel - self.ticks[1]
        return {
            **{f"{k}_s": round(cpu_seconds(p) - self.start[k], 3) for k, p in self.groups.items()},
            "servers_kernel_share": round(kernel / (user + kernel), 2) if user + kernel else 0,
        }


async def connect(
    crowd: Crowd, system: System, args: argparse.Namespace, progress: dict[str, Any]
) -> dict[str, Any]:
    """Phase 1: every client connected and joined, within ``--connect-timeout``.

    ``progress`` gets the clients joined every :data:`PROGRESS` s and, if the phase fails,
    the CPU each group spent on it, so a failed run still says how far it got and what
    took the cores."""
    cpu = CpuWatch(system, crowd)
    started = time.monotonic()
    await crowd.ask("CONNECT")
    joined_by_time: list[int] = progress.setdefault(f"joined_every_{PROGRESS:g}s", [])
    while True:
        await asyncio.sleep(POLL * 4)
        status = await crowd.ask("STATUS")
        joined = sum(s["joined"] for s in status)
        first = sum(s["first_pending"] for s in status)
        if joined == args.clients and first == 0:
            break
        elapsed = time.monotonic() - started
        if elapsed >= PROGRESS * (len(joined_by_time) + 1):
            joined_by_time.append(joined)
        if elapsed > args.connect_timeout:
            progress["cpu"] = spent = cpu.seconds()
            raise PhaseFailed(
                "connect",
                f"{joined:,} of {args.clients:,} clients joined after {args.connect_timeout:g} s"
                f" (failed attempts: {failed_attempts(status)}; CPU s: "
                + ", ".join(f"{k[:-2]} {v:g}" for k, v in spent.items() if k.endswith("_s"))
                + ")",
            )
    seconds = max(s["last_first_join_at"] for s in status) - min(s["started_at"] for s in status)
    seconds /= 1000
    each = [ms for answer in await crowd.ask("CONNECTS") for ms in answer]
    return {
        "seconds": round(seconds, 2),
        "per_s": round(args.clients / seconds),
        "client_p50_ms": round(percentile(each, 0.50), 1),
        "client_p99_ms": round(percentile(each, 0.99), 1),
        "client_max_ms": round(max(each), 1),
        "failed_attempts": failed_attempts(status),
        "drops": sum(s["drops"] for s in status),
        "cpu": cpu.seconds(),
        f"joined_every_{PROGRESS:g}s": joined_by_time,
    }


async def broadcast(
    crowd: Crowd, system: System, publisher: RawPublisher, args: argparse.Namespace
) -> dict[str, Any]:
    """Phase 3: ``--rate`` numbered broadcasts a second to everyone for ``--seconds`` s."""
    count = max(int(args.rate * args.seconds), 1)
    expected = count * args.clients
    await crowd.ask(f"TRACK {count}")
    published: list[float] = []

    def message(i: int) -> tuple[str, bytes]:
        published.append(epoch_ms())
        return system.message(None, {"b": i, "t": published[-1]})

    drops = (await crowd.total("STATUS", "drops"))["drops"]
    watch = CpuWatch(system, crowd)
    await fixed_rate(publisher, message, count, args.rate)
    got, last_progress = 0, time.monotonic()
    while got < expected and time.monotonic() - last_progress < 5.0:
        await asyncio.sleep(POLL)
        now = (await crowd.total("COUNT", "distinct"))["distinct"]
        if now > got:
            got, last_progress = now, time.monotonic()
    cpu = watch.seconds()
    answers = await crowd.ask("BROADCASTS")
    latencies = [v for a in answers for v in a["latencies_ms"]]
    slowest = [max(a["slowest_ms"][b] for a in answers) for b in range(count)]
    delivered = sum(a["distinct"] for a in answers)
    seconds = (max(p + s for p, s in zip(published, slowest, strict=True)) - published[0]) / 1000
    return {
        "messages": count,
        "rate_per_s": args.rate,
        "expected": expected,
        "delivered": delivered,
        "duplicates": sum(a["duplicates"] for a in answers),
        "unknown": sum(a["unknown"] for a in answers),
        "clients_dropped": (await crowd.total("STATUS", "drops"))["drops"] - drops,
        "deliveries_per_s": round(delivered / seconds) if seconds > 0 else 0,
        "p50_ms": round(percentile(latencies, 0.50), 2),
        "p99_ms": round(percentile(latencies, 0.99), 2),
        "max_ms": round(max(latencies), 2) if latencies else math.nan,
        "fanout_median_ms": round(statistics.median(slowest), 2),
        "fanout_max_ms": round(max(slowest), 2),
        "fanout_ms": slowest,
        "server_cpu_ms_per_1k": round(cpu["servers_s"] * 1e6 / max(delivered, 1), 2),
        "crowd_cpu_cores": round(cpu["crowd_s"] / seconds, 2) if seconds > 0 else 0,
        "cpu": cpu,
    }


def by_process(system: System, size: Callable[[set[int]], int]) -> dict[str, float]:
    """Each server process's ``size`` in MiB, by role and pid (ours: the master apart)."""
    first = system.servers.procs[0].pid
    role = "worker"
    if isinstance(system, Node):
        role = "node"
    elif isinstance(system, PythonSocketIO):
        role = "python-socketio"
    roles = dict.fromkeys(system.pids(), role)
    if isinstance(system, Ours):
        roles[first] = "master"
    return {f"{role} {pid}": round(size({pid}) / MIB, 1) for pid, role in sorted(roles.items())}


def memory(system: System, idle: tuple[int, int], redis_pid: int, clients: int) -> dict[str, Any]:
    """Phase 2: the servers' PSS and RSS now against ``idle`` (PSS, RSS), per connection."""
    pids = system.pids()
    pss, rss = pss_bytes(pids), rss_bytes(pids)
    return {
        "idle_pss_mib": round(idle[0] / MIB, 1),
        "connected_pss_mib": round(pss / MIB, 1),
        "pss_kib_per_connection": round((pss - idle[0]) / clients / 1024, 1),
        "idle_mib": round(idle[1] / MIB, 1),
        "connected_mib": round(rss / MIB, 1),
        "kib_per_connection": round((rss - idle[1]) / clients / 1024, 1),
        "redis_mib": round(rss_bytes({redis_pid}) / MIB, 1),
        "redis_pss_mib": round(pss_bytes({redis_pid}) / MIB, 1),
        "by_process_mib": by_process(system, rss_bytes),
        "by_process_pss_mib": by_process(system, pss_bytes),
    }


async def run_system(cls: type[System], args: argparse.Namespace) -> dict[str, Any]:
    """Every phase on one system, on its own redis-server; stopped whatever happens."""
    processes = args.processes
    result: dict[str, Any] = {"processes": processes}
    async with redis_server(client_name="bench") as (server, r):
        assert server.process is not None
        extra = ["--max-connections", str(max(args.clients, 10_000))]
        if cls is BehindHaproxy:
            front = BehindHaproxy(server.url, processes, extra, clients=args.clients)
            result["haproxy_processes"] = front.count
            system: System = front
        elif issubclass(cls, Ours):
            system = cls(server.url, processes, extra)
        else:
            system = cls(server.url, processes)
        await asyncio.to_thread(system.start)
        publisher: RawPublisher | None = None
        crowd: Crowd | None = None
        try:
            await subscribed([r], system)
            publisher = await RawPublisher.connect(server.host, server.port)
            await asyncio.sleep(SETTLE)
            idle = pss_bytes(system.pids()), rss_bytes(system.pids())
            sources = [f"127.0.0.{1 + k}" for k in range(args.sources)]
            crowd = await Crowd.start(
                system.ports, args.clients, ROOMS, args.crowds, sources, args.window
            )
            try:
                progress = result.setdefault("connect_progress", {})
                result["connect"] = await connect(crowd, system, args, progress)
                if isinstance(system, Layout):
                    result["sockets_by_worker"] = system.sockets_by_worker()
                await asyncio.sleep(SETTLE)
                result["memory"] = memory(system, idle, server.process.pid, args.clients)
                result["broadcast"] = await broadcast(crowd, system, publisher, args)
                result["memory"]["after_broadcasts_mib"] = round(rss_bytes(system.pids()) / MIB, 1)
                result["memory"]["after_broadcasts_pss_mib"] = round(
                    pss_bytes(system.pids()) / MIB, 1
                )
                if args.storm == "none":
                    return result
                watch = CpuWatch(system, crowd)
                result["storm"] = await storm(
                    crowd, system, publisher, args.clients, args.storm_timeout, args.storm
                )
                result["storm"]["cpu"] = watch.seconds()
                if isinstance(system, Layout):
                    result["sockets_by_worker_after_storm"] = system.sockets_by_worker()
                    result["master_connections"] = system.master_connections()
            except PhaseFailed as exc:
                result["failed"] = str(exc)
        finally:
            if crowd is not None:
                await crowd.close()
            if publisher is not None:
                await publisher.close()
            result["stop"] = await asyncio.to_thread(stop, system)
    return result


def stop(system: System) -> dict[str, Any]:
    """Stop ``system`` and wait until every process of it has exited, SIGKILLing what is left
    after :data:`STOP_WAIT` s: a worker that outlives its master (closing thousands of
    connections on its own) would take the cores of the next system's run."""
    pids = system.pids()
    started = time.monotonic()
    system.stop()
    while not all(exited(pid) for pid in pids) and time.monotonic() - started < STOP_WAIT:
        time.sleep(POLL)
    left = [pid for pid in pids if not exited(pid)]
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return {"seconds": round(time.monotonic() - started, 1), "killed": len(left)}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    node_modules()
    results: dict[str, Any] = {
        "clients": args.clients,
        "processes": args.processes,
        "crowds": args.crowds,
        "sources": args.sources,
        "storm": args.storm,
        "machine": f"{os.cpu_count()} cores, {os.uname().machine}",
        "open_files": raise_open_files(
            max(math.ceil(args.clients / args.crowds), math.ceil(args.clients / args.processes))
            + 1024
        ),
        "ports": check_sources(args.clients, args.sources),
        "load_average_before": os.getloadavg(),
        "systems": {},
    }
    for key in args.only:
        cls = SYSTEMS[key]
        print(f"running {cls.name} ...", file=sys.stderr)
        results["systems"][cls.name] = await run_system(cls, args)
    results["load_average_after"] = os.getloadavg()
    return results


def main() -> None:
    options = Options(__doc__, quick={"clients": 2000, "seconds": 3.0})
    options.add_argument("--clients", type=int, default=10_000)
    options.add_argument("--processes", type=int, default=4, help="server processes a system")
    options.add_argument("--crowds", type=int, default=2, help="client processes")
    options.add_argument("--sources", type=int, default=4, help="loopback source addresses")
    options.add_argument("--window", type=int, default=500, help="first connections at once")
    options.add_argument("--rate", type=float, default=5.0, help="broadcasts per second")
    options.add_argument("--seconds", type=float, default=10.0, help="of broadcasts")
    options.add_argument("--connect-timeout", type=float, default=180.0, help="seconds")
    options.add_argument("--storm-timeout", type=float, default=60.0, help="seconds")
    options.add_argument(
        "--only",
        nargs="*",
        choices=tuple(SYSTEMS),
        default=["one-port", "haproxy"],
        help="these systems, in this order",
    )
    options.add_argument(
        "--storm",
        choices=("drop", "kill", "none"),
        default="drop",
        help="drop: every client drops at once; kill: SIGKILL the last port's server process;"
        " none: no storm",
    )
    args = options.parse()
    if args.storm == "kill" and {"one-port", "haproxy", "pysio"} & set(args.only):
        options.error("--storm kill needs a server process per port that it can find: ours or node")
    started = time.perf_counter()
    results = asyncio.run(main_async(args))
    results["wall_seconds"] = round(time.perf_counter() - started, 1)
    path = write_json(args.out, "ten_thousand", results)
    print(tables(results))
    print(
        f"\nload average {results['load_average_before'][0]:.1f} before, "
        f"{results['load_average_after'][0]:.1f} after; wall {results['wall_seconds']} s; "
        f"JSON: {path}"
    )
    if any("failed" in s for s in results["systems"].values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
