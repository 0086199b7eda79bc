"""A bounded chaos soak: steady traffic and client churn while faults are injected.

    python bench/soak.py --minutes 10 [--store] [--seed N] [--rate 200] [--clients 40] [--out DIR]

Everything runs on 127.0.0.1 and is started here (a redis-server on a free port, real
``python -m sio_cluster`` processes with ``tests/probe_app.py``, python-socketio clients)
and stopped at the end, on an error or Ctrl-C too:

- a numbered ``ch:*`` stream, ``--rate`` messages/s to 8 rooms plus 10 beacons/s to
  everyone (``bench/soak_publisher.py``);
- handler emits: an emitting client per master has its worker's handler
  ``sio.emit`` numbered events to rooms and beacons, ``--emit-rate`` per second;
- ``--clients`` actors on master A (and a fifth as many on master B while it is
  there) joining and leaving rooms, disconnecting and reconnecting, over
  websocket or long-polling (``bench/soak_clients.py``);
- every ``--fault-interval`` seconds one fault (``bench/soak_faults.py``): a worker
  SIGKILLed, a worker SIGSTOPped then SIGCONTed, Redis SIGKILLed and restarted on
  the same port, a second master joining or leaving (SIGTERM);
- memory and descriptors of master A and its workers sampled every
  ``--sample-every`` seconds (``bench/soak_leaks.py``).

What is checked (``bench/soak_ledger.py`` says how): no socket gets a message twice
or a message of a room it was not in; losses happen only in fault windows (from
the fault until healthy again plus ``--grace``) and are counted by fault; sockets do
not stall; RSS and descriptor slopes stay within limits; with ``--store``, the Redis
keys are back to their baseline once the clients are gone. It prints the tables,
writes ``<out>/soak.json``, and exits 1 when an invariant is broken (0 otherwise).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvloop
from engineio.payload import Payload

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # python bench/soak.py

from bench.harness import Options, write_json  # noqa: E402
from bench.measure import descendants  # noqa: E402
from bench.soak_clients import Actor, Client, Emitter, Plan, pause  # noqa: E402
from bench.soak_faults import Cluster, Faults, SoakMaster, eventually  # noqa: E402
from bench.soak_leaks import IDLE_SLACK, Sampler  # noqa: E402
from bench.soak_ledger import STALL_AFTER, Ledger  # noqa: E402
from bench.soak_publisher import FENCE_TIMEOUT, Publisher  # noqa: E402
from bench.soak_report import Outcome, Report, build  # noqa: E402

ROOMS = [f"room{i}" for i in range(8)]
FAULT_RESERVE = 15.0  # no fault starts this close to the end of the load
# the load goes on at least this long after the last fault's window closed: a first round
# that outlasts a short --minutes (or a slow host) still has clean traffic after it
AFTERMATH = 10.0
SETTLE_TIMEOUT = 30.0


def roles(master: SoakMaster) -> dict[int, str]:
    """Master A and its live workers, by pid."""
    found = {master.pid: "master A"}
    alive = descendants(master.pid)
    for worker, pid in master.worker_pids().items():
        if pid in alive:
            found[pid] = f"worker {worker}"
    return found


async def watch_stalls(ledger: Ledger, stop: asyncio.Event) -> None:
    while not stop.is_set():
        now = time.monotonic()
        for session in ledger.sessions:
            if session.connected is not None and session.ended is None:
                ledger.check_stalls(session, now, STALL_AFTER)
        await pause(1.0, stop)


class Crowd:
    """The clients of one master and their tasks."""

    def __init__(self) -> None:
        self.clients: list[Client] = []
        self.tasks: list[asyncio.Task[None]] = []

    def start(self, clients: list[Client]) -> None:
        self.clients += clients
        self.tasks += [asyncio.create_task(c.run()) for c in clients]

    async def stop(self, timeout: float) -> None:
        for client in self.clients:
            client.finish.set()
        await self.join(timeout)

    async def join(self, timeout: float) -> None:
        if self.tasks:
            _, pending = await asyncio.wait(self.tasks, timeout=timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
        self.clients, self.tasks = [], []


class Soak:
    """One run, built once: the cluster, the ``ch:*`` publisher, the clients, the faults
    and the sampler; then :meth:`load`, :meth:`wind_down` and :meth:`judge`. :meth:`close`
    stops whatever was started, whatever happened."""

    def __init__(self, args: Any) -> None:
        self.args = args
        self.clock = time.monotonic
        self.rng = random.Random(args.seed)
        self.ledger = Ledger(ROOMS)
        self.plan = Plan(ROOMS)
        self.cluster = Cluster(args.store)
        self.crowd_a, self.crowd_b = Crowd(), Crowd()
        self.background: list[asyncio.Task[None]] = []
        self.stop = asyncio.Event()
        self.quiet = asyncio.Event()
        self.faults = Faults(
            self.cluster, self.ledger, self.rng, args.fault_interval, args.grace, self.clock,
            joined=self._b_joined, leaving=self._b_leaving, left=self._b_left,
        )  # fmt: skip
        self.publisher: Publisher | None = None
        self.started = self.until = 0.0

    def phase(self, text: str) -> None:
        print(f"+{self.clock() - self.started:6.1f} s  {text}", flush=True)

    def clients(self, host: str, count: int, urls: Callable[[], list[str]]) -> list[Client]:
        """``count`` actors and one emitter for the master ``host``."""

        def rng() -> random.Random:
            return random.Random(self.rng.random())

        name, ledger, plan, clock = host.lower(), self.ledger, self.plan, self.clock
        made: list[Client] = [
            Actor(f"{name}{i}", host, urls, ledger, rng(), plan, clock) for i in range(count)
        ]
        rate = self.args.emit_rate
        made.append(Emitter(f"emitter-{host}", host, urls, ledger, rng(), plan, clock, rate=rate))
        return made

    async def _b_joined(self) -> None:
        count = max(2, self.args.clients // 5)
        self.crowd_b.start(self.clients("B", count, lambda: self.cluster.urls(self.cluster.b)))

    async def _b_leaving(self) -> None:
        for client in self.crowd_b.clients:
            client.retired = True

    async def _b_left(self) -> None:
        await self.crowd_b.join(SETTLE_TIMEOUT)

    async def load(self) -> tuple[SoakMaster, list[str] | None, Sampler, dict[str, int]]:
        """Start the cluster, then traffic, clients and faults until ``--minutes`` are up
        (and at least ``AFTERMATH`` s after the last fault's window);
        returns master A, the Redis keys before any client (with --store), the sampler and
        each process role's open descriptors before any client."""
        a = await self.cluster.start()
        baseline = await store_baseline(self.cluster) if self.args.store else None
        self.publisher = Publisher(
            self.cluster.redis.url, self.ledger, ROOMS, self.rng, self.args.rate, self.clock
        )
        sampler = Sampler(lambda: roles(a), self.clock)
        idle = {role: fds for role, fds in sampler.descriptors().values()}
        self.started = self.clock()
        self.until = self.started + self.args.minutes * 60
        self.phase("load and faults start")
        self.background += [
            asyncio.create_task(self.publisher.run(self.quiet)),
            asyncio.create_task(sampler.run(self.args.sample_every, self.stop)),
            asyncio.create_task(watch_stalls(self.ledger, self.stop)),
        ]
        self.crowd_a.start(self.clients("A", self.args.clients, lambda: self.cluster.urls(a)))
        await self.faults.run(self.until, FAULT_RESERVE)
        self.until = max(self.until, self.clock() + AFTERMATH)
        await asyncio.sleep(max(0.0, self.until - self.clock()))
        self.phase(f"{len(self.ledger.windows)} faults injected; the last beacons go out")
        return a, baseline, sampler, idle

    async def wind_down(self) -> bool:
        """No more changes; one last beacon of every source must reach every socket
        (True if it did); then every client closes."""
        everyone = self.crowd_a.clients + self.crowd_b.clients
        for client in everyone:
            client.quiet.set()
        self.quiet.set()
        assert self.publisher is not None
        await asyncio.wait_for(self.background[0], FENCE_TIMEOUT + 10)
        emitters = [c for c in everyone if isinstance(c, Emitter)]
        await asyncio.wait([asyncio.create_task(e.fenced.wait()) for e in emitters], timeout=20)
        fences = [("p", self.publisher.fence or 0)] + [e.fence for e in emitters if e.fence]
        ledger = self.ledger
        live = [s for s in ledger.sessions if s.connected is not None and s.ended is None]
        reached = self.publisher.fence is not None and await eventually(
            lambda: all(
                ledger.reached(s, ledger.streams[name], n) for s in live for name, n in fences
            ),
            STALL_AFTER + 5,
        )
        for session in live:
            ledger.check_stalls(session, self.clock(), 0.0)
        self.phase(f"final beacons {'reached' if reached else 'did NOT reach'} every socket")
        await self.crowd_a.stop(SETTLE_TIMEOUT)
        await self.crowd_b.stop(SETTLE_TIMEOUT)
        self.phase("every client closed")
        return reached

    async def keys_back(self, baseline: list[str]) -> dict[str, Any]:
        """Wait for the Redis keys to be the baseline again; what they were at the end."""
        final: list[list[str] | None] = [None]

        async def restored() -> bool:
            final[0] = await self.cluster.keys()
            return final[0] == baseline

        back = await eventually(restored, SETTLE_TIMEOUT, interval=0.5)
        return {"baseline": baseline, "final": final[0], "restored": back}

    async def descriptors_back(self, sampler: Sampler, idle: dict[str, int]) -> dict[str, Any]:
        """Wait for every process to hold no more descriptors than its role did before
        any client (plus ``IDLE_SLACK``); the counts when it did, or at the timeout."""
        last: dict[str, int] = {}

        def back() -> bool:
            now = sampler.descriptors()
            last.clear()
            last.update({f"{role} ({pid})": fds for pid, (role, fds) in now.items()})
            return all(fds <= idle.get(role, 0) + IDLE_SLACK for role, fds in now.values())

        held = await eventually(back, SETTLE_TIMEOUT, interval=0.5)
        return {"idle": idle, "after": dict(last), "back": held}

    async def run(self) -> Report:
        a, baseline, sampler, idle = await self.load()
        reached = await self.wind_down()
        descriptors = await self.descriptors_back(sampler, idle)
        keys = None if baseline is None else await self.keys_back(baseline)
        self.stop.set()
        exit_a = await self.cluster.stop_master(a)
        self.phase(f"master A stopped (exit {exit_a}); judging")
        codes = {"A": exit_a} | {f"B#{i + 1}": c for i, c in enumerate(self.faults.exit_codes)}
        assert self.publisher is not None
        outcome = Outcome(
            config=vars(self.args) | {"fault_interval": list(self.args.fault_interval)},
            recovery=self.faults.recovery,
            fault_failures=self.faults.failures,
            leaks=sampler.verdict(judged_from=(self.until - self.started) / 2),
            fences_reached=reached,
            descriptors=descriptors,
            exit_codes=codes,
            keys=keys,
            publisher={
                "failed_batches": self.publisher.failed_batches,
                "confirmed_with_no_subscriber": self.publisher.unheard,
            },
            troubles=self.cluster.troubles,
        )
        return build(self.ledger, self.ledger.verdict(), outcome)

    async def close(self) -> None:
        self.stop.set()
        self.quiet.set()
        for crowd in (self.crowd_a, self.crowd_b):
            with contextlib.suppress(Exception):
                await crowd.stop(5)
        for task in self.background:
            task.cancel()
        await asyncio.gather(*self.background, return_exceptions=True)
        if self.publisher is not None:
            await self.publisher.close()
        await self.cluster.close()


async def store_baseline(cluster: Cluster) -> list[str] | None:
    """The keys with master A running and no client: its heartbeat once written."""

    async def heartbeat() -> bool:
        return any(":node:" in k for k in await cluster.keys() or [])

    await eventually(heartbeat, SETTLE_TIMEOUT)
    return await cluster.keys()


async def main_async(args: Any) -> int:
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    print(f"soak: {args.minutes} min, seed {args.seed}, {args.clients} clients", flush=True)
    run = Soak(args)
    try:
        report = await run.run()
    finally:
        await run.close()
    print(report.text)
    path = write_json(args.out, "soak", report.data)
    print(f"\n{'PASS' if report.ok else 'FAIL'}: {path}")
    return 0 if report.ok else 1


def interval(text: str) -> tuple[float, float]:
    low, _, high = text.partition(",")
    pair = (float(low), float(high or low))
    if not 0 < pair[0] <= pair[1]:
        raise ValueError(text)
    return pair


def main() -> None:
    options = Options(__doc__, quick={"minutes": 1.0, "fault_interval": (3.0, 5.0)})
    options.add_argument("--minutes", type=float, default=10.0, help="load duration (%(default)s)")
    options.add_argument("--store", action="store_true", help="masters run with --store")
    options.add_argument("--seed", type=int, default=None, help="random seed (default: time)")
    options.add_argument("--rate", type=float, default=200.0, help="ch:* room messages/s")
    options.add_argument("--clients", type=int, default=40, help="actors on master A")
    options.add_argument("--emit-rate", type=float, default=10.0, help="handler emits/s each")
    options.add_argument(
        "--fault-interval", type=interval, default=(20.0, 40.0), help="MIN,MAX seconds"
    )
    options.add_argument("--grace", type=float, default=2.0, help="s after recovery")
    options.add_argument("--sample-every", type=float, default=2.0, help="s between samples")
    args = options.parse()
    for name in ("engineio.client", "socketio.client"):  # a dropped connection is expected
        logging.getLogger(name).setLevel(logging.CRITICAL)
    # python-engineio's client refuses a poll answer of more than 16 packets (a guard of its
    # own, python-engineio issue #142) while servers send whatever is queued: after a stall
    # a polling client would be dropped for a limit browsers do not have
    Payload.max_decode_packets = 1_000_000
    if args.seed is None:
        args.seed = int(time.time())
    try:
        sys.exit(uvloop.run(main_async(args)))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("soak interrupted; everything it started is stopped", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
