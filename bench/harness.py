"""What every benchmark under ``bench/`` does the same way, written once.

A benchmark is run from the repository root as ``python bench/<name>.py`` (``--quick`` for a
small run that proves it works). It starts what it measures itself: a private redis-server
(:func:`redis_server`), child processes stopped together whatever happens
(:class:`Processes`); it reads CPU and memory from /proc (:mod:`bench.measure`), prints a
markdown table (:func:`markdown_table`) and writes its JSON to ``bench-results/<name>.json``
(:func:`write_json`; ``--out`` picks another folder). Benchmark output is never committed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import subprocess
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import redis.asyncio as aioredis

from bench.measure import descendants
from sio_cluster.master.embedded_redis import EmbeddedRedis

REPO = Path(__file__).resolve().parent.parent
RESULTS = "bench-results"


class Options(argparse.ArgumentParser):
    """A benchmark's command line: its own options plus ``--quick`` and ``--out``.

    ``quick`` maps option names to the values ``--quick`` gives them (options the user set
    explicitly keep their value); a benchmark whose quick mode is more than option values
    reads ``args.quick`` itself and says so in ``quick_help``.
    """

    def __init__(
        self, doc: str, quick: Mapping[str, Any] | None = None, quick_help: str = ""
    ) -> None:
        super().__init__(description=doc.strip().split("\n")[0])
        self.quick = dict(quick or {})
        shown = ", ".join(f"--{name.replace('_', '-')} {v}" for name, v in self.quick.items())
        self.add_argument(
            "--quick", action="store_true", help=quick_help or f"a small run: {shown}"
        )
        self.add_argument("--out", default=RESULTS, help="folder for the results (%(default)s)")

    def parse(self) -> argparse.Namespace:
        """The options; from here on SIGTERM stops the benchmark as Ctrl-C does, so the
        ``finally`` blocks that stop every process it started run in both cases."""
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        args = self.parse_args()
        if args.quick:
            for name, value in self.quick.items():
                if getattr(args, name) == self.get_default(name):
                    setattr(args, name, value)
        return args


@contextlib.asynccontextmanager
async def redis_server(
    client_name: str | None = None,
) -> AsyncIterator[tuple[EmbeddedRedis, aioredis.Redis]]:
    """A private redis-server on a free loopback port and a client of it; both closed after."""
    server = EmbeddedRedis().start()
    try:
        async with aioredis.Redis.from_url(server.url, client_name=client_name) as client:
            yield server, client
    finally:
        server.close()


class Processes:
    """Child processes a benchmark started: their pids (with descendants), stopped together."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[Any]] = []

    def start(self, args: Sequence[str], **popen: Any) -> subprocess.Popen[Any]:
        proc: subprocess.Popen[Any] = subprocess.Popen(args, **popen)
        self.procs.append(proc)
        return proc

    def pids(self) -> set[int]:
        found = {p.pid for p in self.procs}
        for p in self.procs:
            found |= descendants(p.pid)
        return found

    def stop(self, timeout: float = 10) -> None:
        """SIGTERM every process, then SIGKILL whichever is still there after ``timeout`` s."""
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def __enter__(self) -> Processes:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A markdown table: the header, the ``|---|`` line, one line per row."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write_json(out: str | Path, name: str, data: Any) -> Path:
    """Write ``data`` to ``<out>/<name>.json`` (the folder is created); returns the path."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(data, indent=2))
    return path
