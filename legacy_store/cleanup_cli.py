"""``sio-cleanup`` / ``python scripts/cleanup.py``: remove stale socket keys, safely.

Exit status 0 after printing the summary (also in a dry run), 1 when Redis
cannot be reached, 2 on bad arguments. The Redis URL and key prefix default to
``SIO_REDIS_URL`` and ``SIO_KEY_PREFIX``, the variables ``sio-master`` reads, so the
cleanup runs in the environment a deployment already has. With ``--json`` stdout
holds the JSON report only (for ``| jq``); the progress and the summary go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from typing import TextIO

from redis.exceptions import RedisError

from sio_cluster.common.redis.topology import topology_for
from sio_cluster.common.redis.url import RedisUrlError, check_redis_url
from sio_cluster.legacy_store.cleanup import Cleanup, CleanupReport
from sio_cluster.legacy_store.schema import Schema

BAR_WIDTH = 30


class ProgressPrinter:
    """A bar redrawn in place on a terminal; a plain line per 10% otherwise."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self._last_decile = -1
        self._started = time.monotonic()

    def __call__(self, scanned: int, total: int) -> None:
        fraction = min(scanned / total, 1.0) if total else 1.0
        rate = scanned / max(time.monotonic() - self._started, 1e-9)
        if self.tty:
            filled = int(fraction * BAR_WIDTH)
            bar = "#" * filled + "." * (BAR_WIDTH - filled)
            self.stream.write(f"\r[{bar}] {fraction:4.0%} {scanned:,}/{total:,} keys {rate:,.0f}/s")
            self.stream.flush()
        elif int(fraction * 10) > self._last_decile:
            self._last_decile = int(fraction * 10)
            self.stream.write(f"scanned {scanned:,} of ~{total:,} keys ({fraction:.0%})\n")
            self.stream.flush()

    def done(self) -> None:
        if self.tty:
            self.stream.write("\n")


def summary(report: CleanupReport, seconds: float) -> str:
    verb = "to remove" if report.dry_run else "removed"
    return "\n".join(
        [
            f"nodes seen: {report.live_nodes + report.dead_nodes} "
            f"({report.live_nodes} live, {report.dead_nodes} dead)",
            f"keys scanned: {report.keys_scanned:,} in {seconds:.1f} s",
            f"stale sockets: {report.stale_sockets:,}",
            f"memberships {verb}: {report.memberships_removed:,}",
            f"keys {verb}: {report.keys_deleted:,}",
            f"owner entries {verb}: {report.owner_entries_removed:,}",
            *(
                [f"nodes alive again, made to resync: {report.nodes_resynced:,}"]
                if report.nodes_resynced
                else []
            ),
            "dry run: nothing was changed" if report.dry_run else "done",
        ]
    )


async def run(args: argparse.Namespace) -> int:
    try:
        check_redis_url(args.redis_url)
    except RedisUrlError as exc:
        print(f"cleanup: {exc}", file=sys.stderr)
        return 2
    topology = topology_for(args.redis_url)
    client = topology.commands(max_connections=1, client_name="sio-cleanup")
    progress = ProgressPrinter(sys.stderr)
    started = time.monotonic()
    try:
        report = await Cleanup(client, Schema(args.prefix), args.dry_run, args.batch).run(progress)
    except (RedisError, OSError) as exc:
        print(f"\ncleanup: cannot use Redis at {topology.describe}: {exc}", file=sys.stderr)
        return 1
    finally:
        await client.aclose()
        await topology.close()
    progress.done()
    seconds = time.monotonic() - started
    print(summary(report, seconds), file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps({**report.as_dict(), "seconds": round(seconds, 3)}))
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="sio-cleanup",
        description="Remove the socket keys of dead nodes and of no known node (SCAN, batched).",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("SIO_REDIS_URL"),
        help="redis://, rediss://, unix://, redis+sentinel://, rediss+sentinel://, "
        "redis+cluster:// or rediss+cluster:// URL, as sio-master's (default: $SIO_REDIS_URL)",
    )
    parser.add_argument(
        "--prefix",
        default=os.environ.get("SIO_KEY_PREFIX", "socket.io"),
        help="key prefix, sio-master's --key-prefix (default: $SIO_KEY_PREFIX or socket.io)",
    )
    parser.add_argument("--dry-run", action="store_true", help="report only, change nothing")
    parser.add_argument("--batch", type=int, default=1000, help="SCAN COUNT per round trip")
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the report as JSON on stdout, and the summary on stderr",
    )
    args = parser.parse_args(argv)
    if not args.redis_url:
        parser.error("no Redis: give --redis-url or set SIO_REDIS_URL")
    if args.batch < 1:
        parser.error("--batch must be positive")
    sys.exit(asyncio.run(run(args)))
