"""The soak's cluster and the faults injected into it.

The cluster is one redis-server (restarted on the SAME port after a SIGKILL, so the
masters find it again), master A with two workers for the whole run, and master B
with one worker while it has joined. Every fault opens a ledger window at injection
and closes it once the cluster is healthy again (a readiness probe, a log line)
plus a grace period; the losses and incidents a window explains are counted under
its kind. One fault at a time, so each window has one cause.

Why only worker 1 of A is ever SIGKILLed: worker 0 and the master then live for
the whole run, so their memory and descriptors are followed end to end (a
respawned worker starts a new series).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import random
import signal
import subprocess
import threading
from collections.abc import Awaitable, Callable, Iterator

import aiohttp
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from bench.measure import is_running
from bench.soak_ledger import Ledger, Window
from sio_cluster.master.embedded_redis import EmbeddedRedis, EmbeddedRedisError, die_with_parent
from tests.cluster import REPO, MasterProcess
from tests.cluster import eventually as poll

RECOVERY_TIMEOUT = 60.0
# the soak's checks read HTTP endpoints and logs: every 50 ms is often enough
eventually = functools.partial(poll, interval=0.05)
STOP_SECONDS = (0.5, 2.5)  # how long a worker stays SIGSTOPped
REDIS_DOWN_SECONDS = (0.5, 2.0)
KILLED_WORKER = 1
MIDDLE = ("worker_kill", "worker_stop", "redis_kill")
KINDS = ("master_join", *MIDDLE, "master_leave")


class SoakMaster(MasterProcess):
    """A ``python -m sio_cluster`` that the kernel stops (SIGTERM) if the soak itself dies."""

    def start(self) -> SoakMaster:
        self.proc = subprocess.Popen(
            self.args,
            cwd=REPO,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            preexec_fn=die_with_parent,
        )
        threading.Thread(target=self._read, daemon=True).start()
        return self

    def count(self, pattern: str) -> int:
        return len(self.log_matches(pattern))


class Cluster:
    """Redis and the masters the soak runs; :meth:`close` leaves nothing behind."""

    def __init__(self, store: bool) -> None:
        self.redis = EmbeddedRedis()
        self.extra = ["--store"] if store else []
        self.a: SoakMaster | None = None
        self.b: SoakMaster | None = None
        self.stopped: set[int] = set()  # worker pids SIGSTOPped right now
        self.http: aiohttp.ClientSession | None = None
        self.troubles: list[str] = []  # masters that did not exit 0 on SIGTERM, with logs

    async def start(self) -> SoakMaster:
        await asyncio.to_thread(self.redis.start)
        self.http = aiohttp.ClientSession(  # no keep-alive: probes leave no descriptor open
            connector=aiohttp.TCPConnector(force_close=True),
            timeout=aiohttp.ClientTimeout(total=3),
        )
        self.a = SoakMaster(self.redis.url, workers=2, extra=self.extra).start()
        await self.a.ready(timeout=RECOVERY_TIMEOUT)
        return self.a

    def masters(self) -> list[SoakMaster]:
        return [m for m in (self.a, self.b) if m is not None]

    def urls(self, master: SoakMaster | None) -> list[str]:
        return [] if master is None else [master.url(i) for i in range(master.workers)]

    async def answers(self, url: str) -> bool:
        """True if ``url`` answers 200 now."""
        assert self.http is not None
        try:
            async with self.http.get(url) as response:
                return response.status == 200
        except (aiohttp.ClientError, OSError, TimeoutError):
            return False

    async def ready(self) -> bool:
        """Every running master says it is ready (all workers up, subscribed)."""
        for master in self.masters():
            if not await self.answers(f"http://127.0.0.1:{master.metrics_port}/readyz"):
                return False
        return True

    async def keys(self) -> list[str] | None:
        """Every key in Redis (a soak's handful), or None if Redis does not answer."""
        try:
            async with aioredis.Redis.from_url(self.redis.url, decode_responses=True) as r:
                return sorted([key async for key in r.scan_iter(count=1000)])
        except (RedisError, OSError):
            return None

    async def stop_master(self, master: SoakMaster) -> int | None:
        """SIGTERM and wait for its exit; its exit code, or None if it had to be killed
        (then, or on another code, its last log lines are kept in :attr:`troubles`)."""
        master.signal(signal.SIGTERM)
        code: int | None = None
        if await eventually(lambda: master.proc is not None and master.proc.poll() is not None, 30):
            assert master.proc is not None
            code = master.proc.returncode
        if code != 0:
            tail = "\n".join(master.lines[-40:])
            self.troubles.append(f"master pid {master.pid} exit {code} on SIGTERM:\n{tail}")
        await asyncio.to_thread(master.cleanup)
        return code

    async def close(self) -> None:
        for pid in list(self.stopped):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        for master in self.masters():
            await asyncio.to_thread(master.cleanup)
        if self.http is not None:
            await self.http.close()
        await asyncio.to_thread(self.redis.close)


Hook = Callable[[], Awaitable[None]]


class Faults:
    """Injects one fault after another at random intervals, each in its own window."""

    def __init__(
        self,
        cluster: Cluster,
        ledger: Ledger,
        rng: random.Random,
        interval: tuple[float, float],
        grace: float,
        clock: Callable[[], float],
        *,
        joined: Hook,
        leaving: Hook,
        left: Hook,
    ) -> None:
        self.cluster = cluster
        self.ledger = ledger
        self.rng = rng
        self.interval = interval
        self.grace = grace
        self.clock = clock
        self._joined, self._leaving, self._left = joined, leaving, left
        self.recovery: dict[str, list[float]] = {kind: [] for kind in KINDS}
        self.failures: list[str] = []  # faults that did not recover
        self.exit_codes: list[int | None] = []  # master B's, at each leave

    def schedule(self) -> Iterator[str]:
        """Rounds of: B joins, the other kinds in a random order, B leaves."""
        while True:
            middle = list(MIDDLE)
            self.rng.shuffle(middle)
            yield from ("master_join", *middle, "master_leave")

    async def run(self, until: float, reserve: float) -> None:
        """Inject faults until ``until`` (none starts within ``reserve`` s of it), but at
        least one full round, so every kind happens in any run; B is made to leave at the
        end if it is there."""
        done: set[str] = set()
        for kind in self.schedule():
            first_round = not done.issuperset(KINDS)
            wait = self.rng.uniform(*self.interval)
            if not first_round:
                wait = min(wait, max(0.0, until - self.clock()))
            await asyncio.sleep(wait)
            if not first_round and self.clock() + reserve > until:
                break
            await self.inject(kind)
            done.add(kind)
        if self.cluster.b is not None:
            await self.inject("master_leave")

    async def inject(self, kind: str) -> None:
        """Inject ``kind`` in its own window: the method of that name injects it and says
        whether the cluster is healthy again; the window closes a grace period later."""
        started = self.clock()
        window = self.ledger.open_window(kind, started)
        try:
            recovered = await asyncio.wait_for(getattr(self, kind)(window), RECOVERY_TIMEOUT)
        except TimeoutError:
            recovered = False
        window.recovered = recovered
        if recovered:
            self.recovery[kind].append(self.clock() - started)
        else:
            self.failures.append(f"{kind} at {started:.1f}: not healthy again ({window.detail})")
        if kind == "master_join" and not recovered and self.cluster.b is not None:
            await asyncio.to_thread(self.cluster.b.cleanup)
            self.cluster.b = None
        await asyncio.sleep(self.grace)
        window.end = self.clock()
        if kind == "master_join" and self.cluster.b is not None:
            await self._joined()
        elif kind == "master_leave":
            await self._left()

    async def worker_kill(self, window: Window) -> bool:
        master = self.cluster.a
        assert master is not None
        pid = master.worker_pids()[KILLED_WORKER]
        back = rf"worker {KILLED_WORKER} ready again"
        before = master.count(back)
        window.detail = f"worker {KILLED_WORKER} pid {pid}"
        os.kill(pid, signal.SIGKILL)
        return await eventually(lambda: master.count(back) > before, RECOVERY_TIMEOUT) and (
            await eventually(self.cluster.ready, RECOVERY_TIMEOUT)
        )

    async def worker_stop(self, window: Window) -> bool:
        master = self.cluster.a
        assert master is not None
        worker = self.rng.randrange(master.workers)
        pid = master.worker_pids()[worker]
        seconds = self.rng.uniform(*STOP_SECONDS)
        window.detail = f"worker {worker} pid {pid} for {seconds:.1f} s"
        self.cluster.stopped.add(pid)
        os.kill(pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(seconds)
        finally:
            os.kill(pid, signal.SIGCONT)
            self.cluster.stopped.discard(pid)
        return await eventually(
            lambda: self.cluster.answers(f"{master.url(worker)}/healthz"), RECOVERY_TIMEOUT
        ) and await eventually(self.cluster.ready, RECOVERY_TIMEOUT)

    async def redis_kill(self, window: Window) -> bool:
        masters = self.cluster.masters()
        back = r"Redis is back"
        before = [m.count(back) for m in masters]
        seconds = self.rng.uniform(*REDIS_DOWN_SECONDS)
        window.detail = f"down {seconds:.1f} s, {len(masters)} master(s)"
        await asyncio.to_thread(self.cluster.redis.kill)
        await asyncio.sleep(seconds)
        for _ in range(20):  # the same port; retried if the kernel is slow to free it
            try:
                await asyncio.to_thread(self.cluster.redis.start)
                break
            except EmbeddedRedisError:
                await asyncio.sleep(0.5)
        else:
            return False

        def resubscribed() -> bool:
            return all(m.count(back) > b for m, b in zip(masters, before, strict=True))

        return await eventually(resubscribed, RECOVERY_TIMEOUT) and await eventually(
            self.cluster.ready, RECOVERY_TIMEOUT
        )

    async def master_join(self, window: Window) -> bool:
        b = SoakMaster(self.cluster.redis.url, workers=1, extra=self.cluster.extra)
        self.cluster.b = b.start()
        try:
            await b.ready(timeout=RECOVERY_TIMEOUT)
        except AssertionError as exc:
            window.detail = str(exc)[:300]
            return False
        window.detail = f"pid {b.pid}"
        return await eventually(self.cluster.ready, RECOVERY_TIMEOUT)

    async def master_leave(self, window: Window) -> bool:
        b = self.cluster.b
        if b is None:
            return True
        await self._leaving()
        window.detail = f"pid {b.pid}"
        self.exit_codes.append(await self.cluster.stop_master(b))
        self.cluster.b = None
        return not is_running(b.pid) and await eventually(self.cluster.ready, RECOVERY_TIMEOUT)
