"""The crowd of ``bench/ten_thousand.py``: ``bench/node/crowd.js`` processes, driven as one.

Why not ``bench.peers.LoadGenerator``: its clients never reconnect, its start and its
commands block without a time limit, and it keeps no per-client accounting. A crowd of
thousands needs all three: each client reconnects by itself (socket.io-client's backoff, see
``crowd.js``), every command to it answers within :data:`ANSWER_TIMEOUT` or the run fails,
and each numbered broadcast and probe is counted per client (duplicates included).

The clients are split into ``processes`` contiguous ranges, one ``crowd.js`` each (client i
has port ``i % len(ports)`` wherever it runs, so each process spreads over every port); a
command goes to all of them and the answers come back in order. A crowd process exits when
this process does (its stdin closes, and the kernel's parent-death signal).

Also here, for the phases that wait on the crowd: their failure (:class:`PhaseFailed`), the
clock the crowd's times are in (:func:`epoch_ms`) and its failed attempts summed.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sio_cluster.master.embedded_redis import die_with_parent

CROWD_JS = Path(__file__).resolve().parent / "node" / "crowd.js"
ANSWER_TIMEOUT = 30.0


class PhaseFailed(Exception):
    """A phase did not finish within its time limit: the system's run ends here."""

    def __init__(self, phase: str, detail: str) -> None:
        super().__init__(f"{phase}: {detail}")


def epoch_ms() -> float:
    """Now, in the clock the crowd compares timestamps with (ms since the epoch)."""
    return time.time() * 1000


def failed_attempts(status: list[dict[str, Any]]) -> dict[str, int]:
    """Failed connection attempts by reason, summed over the crowd's processes."""
    total: dict[str, int] = {}
    for s in status:
        for reason, n in s["failures"].items():
            total[reason] = total.get(reason, 0) + n
    return total


class CrowdError(RuntimeError):
    """A crowd process did not answer in time, or answered something unreadable."""


class Crowd:
    """Every client of a run, over one or more ``crowd.js`` processes."""

    def __init__(self, procs: list[asyncio.subprocess.Process]) -> None:
        self.procs = procs

    @classmethod
    async def start(
        cls,
        ports: Sequence[int],
        clients: int,
        rooms: int,
        processes: int,
        sources: Sequence[str],
        window: int,
        timeout_ms: int = 20_000,
    ) -> Crowd:
        procs = []
        bounds = [clients * k // processes for k in range(processes + 1)]
        try:
            for first, end in zip(bounds, bounds[1:], strict=False):
                config = {
                    "ports": list(ports),
                    "first": first,
                    "count": end - first,
                    "rooms": rooms,
                    "sources": list(sources),
                    "window": max(window // processes, 1),
                    "timeoutMs": timeout_ms,
                }
                procs.append(
                    await asyncio.create_subprocess_exec(
                        "node",
                        str(CROWD_JS),
                        json.dumps(config),
                        stdin=asyncio.subprocess.PIPE,
                        stdout=asyncio.subprocess.PIPE,
                        limit=64 << 20,  # BROADCASTS holds every latency on one line
                        preexec_fn=die_with_parent,
                    )
                )
        except BaseException:
            await cls(procs).close()
            raise
        return cls(procs)

    @property
    def pids(self) -> set[int]:
        return {p.pid for p in self.procs}

    async def ask(self, command: str) -> list[Any]:
        """Send ``command`` to every process; their answers, in order."""
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(command.encode() + b"\n")
        for proc in self.procs:
            assert proc.stdin is not None
            await proc.stdin.drain()
        answers = []
        for proc in self.procs:
            assert proc.stdout is not None
            try:
                line = await asyncio.wait_for(proc.stdout.readline(), ANSWER_TIMEOUT)
            except TimeoutError:
                raise CrowdError(
                    f"crowd pid {proc.pid}: no answer to {command} within {ANSWER_TIMEOUT:.0f} s"
                ) from None
            if not line:
                raise CrowdError(f"crowd pid {proc.pid} exited (answering {command})")
            answer = json.loads(line)
            if isinstance(answer, dict) and "error" in answer:
                raise CrowdError(f"crowd pid {proc.pid}: {answer['error']}")
            answers.append(answer)
        return answers

    async def total(self, command: str, *keys: str) -> dict[str, int]:
        """``keys`` of every process's answer to ``command``, summed."""
        answers = await self.ask(command)
        return {key: sum(int(a[key]) for a in answers) for key in keys}

    async def close(self) -> None:
        """QUIT every process; killed if it has not exited within 10 s."""
        for proc in self.procs:
            if proc.returncode is None and proc.stdin is not None:
                try:
                    proc.stdin.write(b"QUIT\n")
                    proc.stdin.close()
                except (OSError, RuntimeError):
                    pass
        for proc in self.procs:
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
