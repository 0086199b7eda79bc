"""Benchmark this cluster against its peers in one run, on one machine.

Systems, each with the same number of server processes and the same tiny app (a
``join`` event that puts the socket in a room):

- ``ours``: ``python -m sio_cluster --workers N --worker-ports`` (worker i on its own port, as
  the peers' processes are; the clients spread over the ports);
- ``ours one-port`` (``--one-port``): the same, every client on the master's one port, which
  hands each connection to a worker (the default layout: what it costs deliveries);
- ``python-socketio``: ``AsyncServer`` + ``AsyncRedisManager``, one process per port;
- ``node``: socket.io 4.x + @socket.io/redis-adapter 8.x (``bench/node``, ``npm ci``).

C websocket clients (a Node load generator speaking engine.io frames) spread over
the ports; client i joins room ``r{i % 20}``. An external publisher sends, in each
system's own format (our ``ch:*`` JSON; python-socketio's pub/sub JSON; the Node
emitter's msgpack), to one random sid, to one room of C/20, and to everyone: at
the highest rate (one pipelined burst), at a fixed rate for latency, and in a closed loop
(``bench/scaling_load.py``: publishing continuously while at most ``--window`` deliveries,
and at least 20 messages, are in flight), whose sustained rate does not depend on how a
system swallows one huge burst. It prints a markdown table, writes JSON and draws a PNG
chart. ``bench/scaling.py`` runs the same systems against their number of processes.

    python bench/peers.py            # full run
    python bench/peers.py --quick    # under 2 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hiredis
import orjson
import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # python bench/peers.py

from bench.harness import (  # noqa: E402
    REPO,
    Options,
    Processes,
    markdown_table,
    redis_server,
    write_json,
)
from bench.measure import cpu_seconds, free_port_block, rss_bytes, wait_port  # noqa: E402
from bench.redis_cluster import RedisCluster  # noqa: E402
from bench.scaling_load import RawPublisher, closed_loop  # noqa: E402
from sio_cluster.master.bus.classic_wire import Channels, Room, broadcast_channel, encode_broadcast  # noqa: E402

NODE_DIR = REPO / "bench" / "node"
ROOMS = 20
SCENARIOS = ("sid", "room", "all")
HEADER = (
    "system|scenario|published/s|delivered/s|delivered|CPU ms per 1k|loadgen CPU|streamed/s|"
    "p50 ms|p99 ms|max ms|RSS KB/conn|Redis conns"
).split("|")


class System:
    """One system under test: start, its server pids, and its publishing format."""

    name = ""
    eio = 4  # the load generator's Engine.IO protocol

    def __init__(self, url: str, processes: int) -> None:
        self.url = url
        self.processes = processes
        self.base = free_port_block(processes + 1)
        self.ports = [self.base + i for i in range(processes)]
        self.servers = Processes()

    def spawn(self) -> None:
        """Start the server processes."""
        raise NotImplementedError

    def start(self) -> None:
        """Start the servers and wait until every port accepts connections."""
        self.spawn()
        try:
            for port in self.ports:
                wait_port(port)
        except BaseException:
            self.stop()
            raise

    def pids(self) -> set[int]:
        return self.servers.pids()

    def stop(self) -> None:
        self.servers.stop()

    def message(self, target: str | None, payload: dict[str, Any]) -> tuple[str, bytes]:
        raise NotImplementedError


class Ours(System):
    name = "ours"
    worker_ports = True  # False: every client on the master's one port (OursOnePort)

    def __init__(
        self, url: str, processes: int, extra: list[str] | None = None, repo: Path = REPO
    ) -> None:
        super().__init__(url, processes)
        self.extra = extra or []
        self.repo = repo  # the checkout whose server runs (bench/hot_path.py --repo)

    def spawn(self) -> None:
        self.servers.start(
            [
                sys.executable,
                "-m",
                "sio_cluster",
                "--workers",
                str(self.processes),
                "--port",
                str(self.base),
                "--redis-url",
                self.url,
                "--app",
                "bench.app:setup",
                "--app-dir",
                str(self.repo),
                "--log-level",
                "warning",
                *self.extra,
            ],
            cwd=self.repo,
            # every worker on its own port, as the peers' processes are, or the one port (by
            # environment: an older checkout run with --repo ignores a variable it does not know)
            env={**os.environ, "SIO_WORKER_PORTS": "1" if self.worker_ports else "0"},
        )

    def message(self, target: str | None, payload: dict[str, Any]) -> tuple[str, bytes]:
        body: dict[str, Any] = {"data": payload}
        if target is not None:
            body["to"] = target
        return "ch:bench", orjson.dumps(body)


class OursOnePort(Ours):
    """Ours with every client on the master's one port (the default layout): the master
    accepts each connection and hands it to a worker; after that it is not in the data path,
    so deliveries should be those of ``ours`` within noise."""

    name = "ours one-port"
    worker_ports = False

    def __init__(
        self, url: str, processes: int, extra: list[str] | None = None, repo: Path = REPO
    ) -> None:
        super().__init__(url, processes, extra, repo)
        self.ports = [self.base]  # the load generator's clients all connect here


class OursAllowingEio3(Ours):
    """Ours with ``--allow-eio3``, current clients: what the option costs them."""

    name = "ours --allow-eio3"

    def __init__(self, url: str, processes: int) -> None:
        super().__init__(url, processes, ["--allow-eio3"])


class OursWithV2Clients(OursAllowingEio3):
    """Ours with ``--allow-eio3`` and every client speaking Engine.IO 3 (socket.io-client 2.x)."""

    name = "ours, v2 clients"
    eio = 3


class OursInA09Fleet(Ours):
    """Ours with ``--redis-store-09``: what joining a socket.io 0.9 fleet costs (a message to
    a room or to everyone is also published once as a 0.9 ``dispatch``; one to a sid of ours
    is not)."""

    name = "ours --redis-store-09"

    def __init__(self, url: str, processes: int) -> None:
        super().__init__(url, processes, ["--redis-store-09"])


class OursAllowingV09(Ours):
    """Ours with ``--allow-v09``, current clients: what the option costs them."""

    name = "ours --allow-v09"

    def __init__(self, url: str, processes: int) -> None:
        super().__init__(url, processes, ["--allow-v09"])


class OursWithV09Clients(OursAllowingV09):
    """Ours with ``--allow-v09`` and every client speaking socket.io 0.9's protocol 1."""

    name = "ours, 0.9 clients"
    eio = 1


class PythonSocketIO(System):
    name = "python-socketio"
    stack = "aiohttp"  # bench/pysio_server.py's server stack

    def spawn(self) -> None:
        server = str(REPO / "bench" / "pysio_server.py")
        for port in self.ports:
            self.servers.start(
                [sys.executable, server, str(port), self.url, self.stack],
                cwd=REPO,
                stdout=subprocess.DEVNULL,
            )

    def message(self, target: str | None, payload: dict[str, Any]) -> tuple[str, bytes]:
        return "socketio", orjson.dumps(
            {
                "method": "emit",
                "event": "bench",
                "data": [payload],
                "binary": False,
                "namespace": "/",
                "room": target,
                "skip_sid": None,
                "callback": None,
                "host_id": "bench-publisher",
            }
        )


class PythonSocketIOOnUvicorn(PythonSocketIO):
    """python-socketio on uvicorn + websockets (``bench/pysio_server.py``): as it is most
    often deployed, the peer of issue 26's memory figures (``bench/ten_thousand.py``)."""

    name = "python-socketio (uvicorn)"
    stack = "uvicorn"


class Node(System):
    name = "node"
    channels = Channels()

    def __init__(self, url: str, processes: int) -> None:
        super().__init__(url, processes)
        self.by_port: dict[int, subprocess.Popen[Any]] = {}

    def spawn(self) -> None:
        for port in self.ports:
            self.spawn_port(port)

    def spawn_port(self, port: int) -> None:
        """Start the server of ``port``: at start, or again after it died."""
        self.by_port[port] = self.servers.start(
            ["node", str(NODE_DIR / "server.js"), str(port), self.url],
            stdout=subprocess.DEVNULL,
        )

    def message(self, target: str | None, payload: dict[str, Any]) -> tuple[str, bytes]:
        rooms: list[Room] | None = None if target is None else [target]
        body = encode_broadcast("emitter", "/", ["bench", payload], rooms, [])
        return broadcast_channel(self.channels, "/", rooms), body


def node_modules() -> None:
    """``npm ci`` in ``bench/node`` unless its install is there and newer than the lock file.

    Not every run: ``npm ci`` deletes ``node_modules`` first, which breaks any other benchmark
    using ``bench/node`` at that moment (seen: a Node server failing on ``@redis/client``).
    """
    installed = NODE_DIR / "node_modules" / ".package-lock.json"
    lock = NODE_DIR / "package-lock.json"
    if installed.exists() and installed.stat().st_mtime >= lock.stat().st_mtime:
        return
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=NODE_DIR, check=True)


class LoadGenerator:
    """The Node websocket clients; counts what they receive and the latencies."""

    def __init__(self, ports: list[int], clients: int, eio: int = 4) -> None:
        config = json.dumps({"ports": ports, "clients": clients, "rooms": ROOMS, "eio": eio})
        self.proc = subprocess.Popen(
            ["node", str(NODE_DIR / "loadgen.js"), config],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("READY "):
            raise RuntimeError(f"load generator failed: {line!r}")
        self.sids: list[str] = json.loads(line[6:])

    def stats(self) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("STATS\n")
        self.proc.stdin.flush()
        result: dict[str, Any] = json.loads(self.proc.stdout.readline())
        return result

    def close(self) -> None:
        """QUIT; killed if it does not exit (or its stdin is gone), so it never outlives us."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write("QUIT\n")
            self.proc.stdin.flush()
            self.proc.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


@dataclass
class Scenario:
    name: str
    per_message: int  # deliveries each message makes

    def target(self, sids: list[str]) -> str | None:
        if self.name == "sid":
            return random.choice(sids)
        if self.name == "room":
            return f"r{random.randrange(ROOMS)}"
        return None


def numbered(system: System, scenario: Scenario, sids: list[str], i: int) -> tuple[str, bytes]:
    """Message ``i`` of a stream to ``scenario``'s targets (a sid or room drawn anew each time)."""
    return system.message(scenario.target(sids), {"i": i})


async def publish(r: aioredis.Redis, messages: list[tuple[str, bytes]]) -> float:
    started = time.perf_counter()
    for i in range(0, len(messages), 1000):
        async with r.pipeline(transaction=False) as pipe:
            for channel, body in messages[i : i + 1000]:
                pipe.publish(channel, body)
            await pipe.execute()
    return time.perf_counter() - started


async def drain(
    load: LoadGenerator, expected: int, started: float, stall: float = 2.0, limit: float = 60
) -> tuple[int, float, list[float]]:
    """Collect deliveries until ``expected`` or no progress for ``stall`` seconds.

    Returns what arrived, the seconds from ``started`` (before publishing began) to the
    last delivery seen, and the latencies the load generator measured.
    """
    received, latencies, last_progress = 0, [], started
    while received < expected:
        await asyncio.sleep(0.01)
        stats = load.stats()
        if stats["received"]:
            received += stats["received"]
            latencies += stats["latencies_ms"]
            last_progress = time.perf_counter()
        elif time.perf_counter() - last_progress > stall or time.perf_counter() - started > limit:
            break
    return received, last_progress - started, latencies


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


async def subscribed(nodes: list[aioredis.Redis], system: System) -> None:
    """Wait until the system's Redis subscriptions exist, so no published message is lost.

    ``nodes``: every node of the Redis (one, or each node of a Cluster: a node counts only
    the subscribers connected to it).
    """
    for _ in range(1000):
        if isinstance(system, Ours):
            patterns = [await node.pubsub_numpat() for node in nodes]
            ready = sum(patterns) >= 2  # unique patterns: ch:* and socket.io#*
        else:
            channel = "socketio" if isinstance(system, PythonSocketIO) else "socket.io-request#/#"
            counts = await nodes[0].pubsub_numsub(channel)
            ready = bool(counts) and counts[0][1] >= system.processes
        if ready:
            return
        await asyncio.sleep(0.01)
    raise RuntimeError(f"{system.name} never subscribed")


async def run_system(
    system: System,
    r: aioredis.Redis,
    args: argparse.Namespace,
    nodes: list[aioredis.Redis] | None = None,
) -> dict[str, Any]:
    """Run every scenario on ``system``; ``r`` publishes, ``nodes`` are counted (default r)."""
    nodes = nodes or [r]
    system.start()
    pids = system.pids()
    idle_rss = rss_bytes(pids)
    try:
        load = LoadGenerator(system.ports, args.clients, system.eio)
    except BaseException:
        system.stop()
        raise

    result: dict[str, Any] = {
        "rss_per_connection_kb": round(
            (rss_bytes(system.pids()) - idle_rss) / args.clients / 1024, 1
        ),
        "scenarios": {},
    }
    kwargs = r.connection_pool.connection_kwargs
    publisher: RawPublisher | None = None
    try:
        publisher = await RawPublisher.connect(kwargs["host"], kwargs["port"])
        await subscribed(nodes, system)
        listed = [await node.client_list() for node in nodes]
        result["redis_connections"] = sum(
            1 for clients in listed for c in clients if c.get("name") != "bench"
        )
        for scenario in (
            Scenario("sid", 1),
            Scenario("room", args.clients // ROOMS),
            Scenario("all", args.clients),
        ):
            count = args.messages[scenario.name]
            messages = [system.message(scenario.target(load.sids), {"i": i}) for i in range(count)]
            pids = system.pids()
            cpu0, load_cpu0 = cpu_seconds(pids), cpu_seconds({load.proc.pid})
            publish_started = time.perf_counter()
            publish_seconds = await publish(r, messages)
            delivered, seconds, _ = await drain(load, count * scenario.per_message, publish_started)
            cpu = cpu_seconds(pids) - cpu0
            load_cpu = cpu_seconds({load.proc.pid}) - load_cpu0
            rate = args.rates[scenario.name]
            latency_count = int(rate * args.latency_seconds)
            sent = 0
            started = time.perf_counter()
            while sent < latency_count:
                due = int((time.perf_counter() - started) * rate) + 1
                batch = [
                    system.message(scenario.target(load.sids), {"t": time.time() * 1000, "i": i})
                    for i in range(sent, min(due, latency_count))
                ]
                if batch:
                    await publish(r, batch)
                    sent += len(batch)
                await asyncio.sleep(0.002)
            _, _, latencies = await drain(
                load, latency_count * scenario.per_message, time.perf_counter()
            )
            window = max(args.window, 20 * scenario.per_message)
            streamed = await closed_loop(
                publisher,
                load,
                functools.partial(numbered, system, scenario, load.sids),
                scenario.per_message,
                window,
                args.stream_seconds,
                {"servers": system.pids(), "loadgen": {load.proc.pid}},
            )
            result["scenarios"][scenario.name] = {
                "published_per_s": round(count / publish_seconds),
                "delivered_per_s": round(delivered / seconds) if seconds else 0,
                "fraction_delivered": round(delivered / (count * scenario.per_message), 4),
                "cpu_ms_per_1k": round(cpu * 1000 / max(delivered, 1) * 1000, 1),
                "loadgen_cpu_share": round(load_cpu / seconds, 2) if seconds else 0,
                "streamed_per_s": round(streamed.deliveries_per_s),
                "stream_window": window,
                "stream_lost": streamed.lost,
                "latency_rate_per_s": rate,
                "p50_ms": round(percentile(latencies, 0.50), 2),
                "p99_ms": round(percentile(latencies, 0.99), 2),
                "max_ms": round(max(latencies), 2) if latencies else float("nan"),
            }
    finally:
        try:
            load.close()
        finally:
            system.stop()
        if publisher is not None:
            await publisher.close()
    return result


def ceiling_stream(count: int) -> list[tuple[str, bytes]]:
    """ch:* messages to sid-like targets: what both readers of the ceiling take."""
    return [
        ("ch:bench", orjson.dumps({"to": f"sid{i % 997:019d}", "data": {"i": i}}))
        for i in range(count)
    ]


async def raw_reader_rate(url: str, r: aioredis.Redis, count: int) -> float:
    """Drain rate of a bare hiredis PSUBSCRIBE reader: messages queued first, then read."""
    host, port = url.split("//", 1)[1].split("/", 1)[0].split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"*2\r\n$10\r\nPSUBSCRIBE\r\n$4\r\nch:*\r\n")
    parser = hiredis.Reader()
    while parser.gets() is False:
        parser.feed(await reader.read(1024))
    await publish(r, ceiling_stream(count))  # queued in Redis and the socket meanwhile
    got = 0
    started = time.perf_counter()
    while got < count:
        parser.feed(await reader.read(1 << 16))
        while parser.gets() is not False:
            got += 1
    seconds = time.perf_counter() - started
    writer.close()
    return count / seconds


async def master_rate(url: str, r: aioredis.Redis, count: int) -> float:
    """Drain rate of our master on the same stream: it is stopped while the stream queues."""
    metrics_port = free_port_block(1)
    system = Ours(url, 2, ["--metrics-port", str(metrics_port)])
    system.start()
    master_pid = system.servers.procs[0].pid

    def received() -> float:
        url_ = f"http://127.0.0.1:{metrics_port}/metrics"
        with urllib.request.urlopen(url_, timeout=5) as response:
            for line in response.read().decode().splitlines():
                if line.startswith("sio_master_messages_received_total"):
                    return float(line.split()[-1])
        return 0.0

    try:
        await subscribed([r], system)
        base = received()
        os.kill(master_pid, signal.SIGSTOP)
        try:
            await publish(r, ceiling_stream(count))
        finally:
            os.kill(master_pid, signal.SIGCONT)
        started = time.perf_counter()
        while received() - base < count and time.perf_counter() - started < 60:
            await asyncio.sleep(0.005)
        return count / (time.perf_counter() - started)
    finally:
        system.stop()


def chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = list(results["systems"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / len(systems)
    for i, name in enumerate(systems):
        scenarios = results["systems"][name]["scenarios"]
        xs = [j + i * width for j in range(len(SCENARIOS))]
        axes[0].bar(xs, [scenarios[s]["delivered_per_s"] for s in SCENARIOS], width, label=name)
        axes[1].bar(xs, [scenarios[s]["p99_ms"] for s in SCENARIOS], width, label=name)
    for ax, title in zip(
        axes, ("delivered messages/s (max rate)", "p99 latency ms (fixed rate)"), strict=True
    ):
        ax.set_xticks([j + width * (len(systems) - 1) / 2 for j in range(len(SCENARIOS))])
        ax.set_xticklabels(["to one sid", "to a room", "to everyone"])
        ax.set_title(title)
        ax.legend()
    fig.suptitle(
        f"{results['clients']} clients, {results['processes']} processes, {results['machine']}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def table(results: dict[str, Any]) -> str:
    rows = []
    for name, system in results["systems"].items():
        for scenario in SCENARIOS:
            s = system["scenarios"][scenario]
            rows.append(
                [
                    name,
                    scenario,
                    f"{s['published_per_s']:,}",
                    f"{s['delivered_per_s']:,}",
                    f"{s['fraction_delivered']:.1%}",
                    s["cpu_ms_per_1k"],
                    f"{s['loadgen_cpu_share']:.0%}",
                    f"{s['streamed_per_s']:,}",
                    s["p50_ms"],
                    s["p99_ms"],
                    s["max_ms"],
                    system["rss_per_connection_kb"],
                    system["redis_connections"],
                ]
            )
    ceiling = results["master_ceiling"]
    return "\n".join(
        [
            markdown_table(HEADER, rows),
            "",
            f"Master ceiling: {ceiling['master_per_s']:,} msgs/s routed vs "
            f"{ceiling['raw_reader_per_s']:,} msgs/s for a raw hiredis PSUBSCRIBE reader "
            f"({ceiling['ratio']:.2f}x).",
        ]
    )


async def run_on_cluster(args: argparse.Namespace) -> dict[str, Any]:
    """Ours on a 3-primary + 3-replica Redis Cluster; published on one node (classic pub/sub
    reaches every node), subscribers and connections counted on all of them."""
    cluster = RedisCluster()
    nodes = [aioredis.Redis(port=n.port, client_name="bench") for n in cluster.nodes]
    try:
        url = "redis+cluster://" + cluster.seeds(cluster.nodes[:2])
        return await run_system(Ours(url, args.processes), nodes[0], args, nodes)
    finally:
        for node in nodes:
            await node.aclose()
        cluster.close()


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    node_modules()
    results: dict[str, Any] = {
        "clients": args.clients,
        "processes": args.processes,
        "machine": f"{os.cpu_count()} cores, {os.uname().machine}",
        "systems": {},
    }
    async with redis_server(client_name="bench") as (server, r):
        eio3: tuple[type[System], ...] = (OursAllowingEio3, OursWithV2Clients) if args.eio3 else ()
        store09: tuple[type[System], ...] = (OursInA09Fleet,) if args.store_09 else ()
        v09: tuple[type[System], ...] = (OursAllowingV09, OursWithV09Clients) if args.v09 else ()
        systems: tuple[type[System], ...] = (
            Ours,
            OursOnePort,
            *eio3,
            *v09,
            *store09,
            PythonSocketIO,
            Node,
        )
        if args.only:  # in the order given: interleave variants differently from run to run
            every: tuple[type[System], ...] = (
                *systems,
                OursAllowingEio3,
                OursWithV2Clients,
                OursAllowingV09,
                OursWithV09Clients,
                OursInA09Fleet,
            )
            known = {c.name: c for c in every}
            systems = tuple(known[name] for name in args.only)
        for cls in systems:
            print(f"running {cls.name} ...", file=sys.stderr)
            results["systems"][cls.name] = await run_system(
                cls(server.url, args.processes), r, args
            )
        if args.cluster:
            print("running ours on a Redis Cluster ...", file=sys.stderr)
            results["systems"]["ours (cluster)"] = await run_on_cluster(args)
        raw = await raw_reader_rate(server.url, r, args.ceiling_messages)
        routed = await master_rate(server.url, r, args.ceiling_messages)
        results["master_ceiling"] = {
            "raw_reader_per_s": round(raw),
            "master_per_s": round(routed),
            "ratio": round(routed / raw, 3),
        }
    return results


def main() -> None:
    options = Options(__doc__, quick_help="smaller counts: under 2 minutes")
    options.add_argument("--processes", type=int, default=2)
    options.add_argument("--clients", type=int, default=200)
    options.add_argument(
        "--only",
        nargs="*",
        choices=(
            *(
                c.name
                for c in (
                    Ours,
                    OursOnePort,
                    OursAllowingEio3,
                    OursWithV2Clients,
                    OursAllowingV09,
                    OursWithV09Clients,
                    OursInA09Fleet,
                )
            ),
            PythonSocketIO.name,
            Node.name,
        ),
        help="run only these systems, in this order",
    )
    options.add_argument("--window", type=int, default=500, help="closed loop: deliveries")
    options.add_argument(
        "--cluster", action="store_true", help="also run ours on a 3+3 Redis Cluster"
    )
    options.add_argument(
        "--eio3",
        action="store_true",
        help="also run ours with --allow-eio3: with current clients, and with v2 (EIO=3) ones",
    )
    options.add_argument(
        "--store-09",
        action="store_true",
        help="also run ours with --redis-store-09 (joining a socket.io 0.9 fleet)",
    )
    options.add_argument(
        "--v09",
        action="store_true",
        help="also run ours with --allow-v09: with current clients, and with 0.9 (protocol 1) ones",
    )
    args = options.parse()
    scale = 0.2 if args.quick else 1.0
    args.messages = {"sid": int(20000 * scale), "room": int(5000 * scale), "all": int(1000 * scale)}
    args.rates = {"sid": 2000, "room": 2000, "all": 100}
    args.latency_seconds = 1.0 if args.quick else 3.0
    args.stream_seconds = 1.0 if args.quick else 3.0
    args.ceiling_messages = int(50000 * scale)
    results = asyncio.run(main_async(args))
    json_path = write_json(args.out, "peers", results)
    chart_path = json_path.with_suffix(".png")
    chart(results, chart_path)
    print(table(results))
    print(f"\nJSON: {json_path}  chart: {chart_path}")


if __name__ == "__main__":
    main()
