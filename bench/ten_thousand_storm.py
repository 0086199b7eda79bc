"""The reconnect storm of ``bench/ten_thousand.py``: a server process holding a quarter of
the clients is SIGKILLed (``kill``), or every client drops its connection at once (``drop``,
what the layouts of one host are compared on: the whole crowd comes back through the front,
the master's one port or HAProxy); how long until every client that dropped is connected AND
routed again.

Ours: the master respawns the worker on its port. Node: this module starts the killed process
again on the same port as soon as it has exited (what a supervisor such as systemd or pm2
would do, with no delay). The clients reconnect by themselves (``bench/node/crowd.js``,
socket.io-client's backoff). "Routed" is checked, not assumed: as each dropped client is
joined again (its new sid known, its room joined), a probe is published to that sid, in the
system's own format, and published again every :data:`REPROBE` s until it arrives; the
storm is over when every dropped client is joined and has its probe. Every time is from the
SIGKILL (or the drop), in the clock the crowd stamps arrivals with.
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import time
import urllib.request
from typing import Any

import orjson

from bench.crowd import Crowd, PhaseFailed, epoch_ms, failed_attempts
from bench.measure import exited
from bench.peers import Node, System
from bench.scaling_load import RawPublisher, cpu_seconds

POLL = 0.02  # seconds between looks at the crowd: a probe leaves at most this long after a rejoin
REPROBE = 1.0  # seconds before a probe that has not arrived is sent again


def worker_pid(port: int) -> int:
    """The pid of our worker on ``port``, from its ``/healthz``."""
    url = f"http://127.0.0.1:{port}/healthz"
    with urllib.request.urlopen(url, timeout=5) as response:
        return int(orjson.loads(response.read())["pid"])


async def kill_server(system: System, port: int) -> float:
    """SIGKILL the server process of ``port`` and wait until it is gone (Node's is then
    started again on the same port); returns the kill's time (:func:`epoch_ms`)."""
    if isinstance(system, Node):
        proc = system.by_port[port]
        killed_at = epoch_ms()
        proc.kill()
        proc.wait(10)
        system.spawn_port(port)
        return killed_at
    pid = await asyncio.to_thread(worker_pid, port)
    killed_at = epoch_ms()
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while not exited(pid):
        if time.monotonic() > deadline:
            raise PhaseFailed("reconnect storm", f"worker pid {pid} still alive 10 s after SIGKILL")
        await asyncio.sleep(0.001)
    return killed_at


async def listening_again(port: int, killed_at: float, limit: float) -> float | None:
    """Seconds from the kill until ``port`` accepts connections again; None past ``limit``."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.01)
            continue
        back = (epoch_ms() - killed_at) / 1000
        writer.close()
        return back
    return None


def quantile(values: list[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (nearest rank), rounded to the millisecond."""
    ordered = sorted(values)
    return round(ordered[min(int(q * len(ordered)), len(ordered) - 1)], 3)


async def storm(
    crowd: Crowd,
    system: System,
    publisher: RawPublisher,
    clients: int,
    timeout: float,
    kind: str = "kill",
) -> dict[str, Any]:
    """``kill``: kill the server of the last port (client i is on port i % N); ``drop``: every
    client drops its connection. Then wait (at most ``timeout`` s) until every client that
    dropped is joined again and has its probe."""
    victim = len(system.ports) - 1
    port = system.ports[victim]
    before = failed_attempts(await crowd.ask("STATUS"))
    await crowd.ask("MARK")
    if kind == "drop":
        killed_at = epoch_ms()
        expected = sum(a["dropped"] for a in await crowd.ask("DROP"))
    else:
        expected = len(range(victim, clients, len(system.ports)))
        killed_at = await kill_server(system, port)
    started = time.monotonic()
    server_back = (
        asyncio.create_task(listening_again(port, killed_at, timeout)) if kind == "kill" else None
    )
    pending: dict[int, tuple[str, float]] = {}  # client -> (its new sid, when last probed)
    probes = 0
    try:
        while True:
            await asyncio.sleep(POLL)
            answers = await crowd.ask("STORM")
            for a in answers:
                for i, sid in a["fresh"]:
                    pending[i] = (sid, 0.0)
                for i in a["routed_new"]:
                    pending.pop(i, None)
            now = time.monotonic()
            due = [(i, sid) for i, (sid, at) in pending.items() if now - at >= REPROBE]
            await publisher.publish([system.message(sid, {"p": i}) for i, sid in due])
            probes += len(due)
            pending.update({i: (sid, now) for i, sid in due})
            dropped = sum(a["dropped"] for a in answers)
            down = sum(a["down"] for a in answers)
            routed = sum(a["routed"] for a in answers)
            if dropped >= expected and down == 0 and routed == dropped:
                break
            if now - started > timeout:
                raise PhaseFailed(
                    "reconnect storm",
                    f"after {timeout:g} s: {dropped:,} dropped (of {expected:,} expected), "
                    f"{down:,} not connected, {routed:,} routed",
                )
    except BaseException:
        if server_back is not None:
            server_back.cancel()
        raise
    back = None if server_back is None else await server_back
    if kind == "drop":
        restarted = None
    elif isinstance(system, Node):
        restarted = system.by_port[port].pid
    else:
        restarted = await asyncio.to_thread(worker_pid, port)
    log = [row for answer in await crowd.ask("STORMLOG") for row in answer]
    after = failed_attempts(answers)
    rejoined = [(row[3] - killed_at) / 1000 for row in log]
    routed_s = [(row[4] - killed_at) / 1000 for row in log]
    last_attempt_ms = [row[3] - row[6] for row in log]  # the front's share: no backoff in it
    return {
        "kind": kind,
        "port_clients": expected,
        "dropped": len(log),
        "dropped_elsewhere": sum(1 for row in log if row[1] != port),
        "server_back_s": None if back is None else round(back, 3),
        "all_reconnected_s": round(max(rejoined), 3),
        "reconnected_p50_s": round(statistics.median(rejoined), 3),
        "reconnected_p99_s": quantile(rejoined, 0.99),
        "all_routed_s": round(max(routed_s), 3),
        "routed_p50_s": round(statistics.median(routed_s), 3),
        "routed_p99_s": quantile(routed_s, 0.99),
        "last_attempt_p50_ms": round(statistics.median(last_attempt_ms), 1),
        "last_attempt_p99_ms": round(quantile(last_attempt_ms, 0.99), 1),
        "attempts_max": max(row[5] for row in log),
        "attempts_mean": round(statistics.fmean(row[5] for row in log), 2),
        "failed_attempts": {
            k: n - before.get(k, 0) for k, n in after.items() if n > before.get(k, 0)
        },
        "restarted_process_cpu_s": (  # its start included
            None if restarted is None else round(cpu_seconds({restarted}), 3)
        ),
        "probes_sent": probes,
        "misrouted": sum(a["misrouted"] for a in answers),
    }
