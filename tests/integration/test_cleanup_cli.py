"""``sio-cleanup`` as an operator runs it: the installed command against a real Redis.

What the command line promises beyond the cleanup itself (tests/integration/test_socket_store.py):
``--json`` leaves nothing but the JSON report on stdout, the Redis URL and key prefix come
from sio-master's own variables when not given, and the progress ends at 100% even when
Redis holds more keys than the socket sets the scan reads.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import redis

from sio_cluster.master.embedded_redis import EmbeddedRedis

SIO_CLEANUP = str(Path(sys.executable).with_name("sio-cleanup"))


def cleanup(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SIO_")}
    return subprocess.run(
        [SIO_CLEANUP, *args],
        env={**environment, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def stale_keys(url: str, prefix: str) -> None:
    """One socket of a node with no heartbeat, in one room; and keys that are not sets."""
    with redis.Redis.from_url(url) as r:
        r.sadd(f"{prefix}#gone", "gone", "lobby")
        r.sadd(f"{prefix}#lobby", "gone")
        r.hset(f"{prefix}:owners", f"{prefix}#gone", "deadnode")
        for i in range(20):  # DBSIZE counts these; the scan of sets does not
            r.set(f"unrelated:{i}", i)


DRY_RUN_REPORT: dict[str, Any] = {
    "dry_run": True,
    "live_nodes": 0,
    "dead_nodes": 1,
    "keys_scanned": 2,
    "stale_sockets": 1,
    "memberships_removed": 1,
    "keys_deleted": 2,
    "owner_entries_removed": 1,
    "nodes_resynced": 0,
    "dead_node_ids": ["deadnode"],
}


def test_json_from_the_environments_url_is_alone_on_stdout(own_redis: EmbeddedRedis) -> None:
    stale_keys(own_redis.url, "socket.io")
    done = cleanup("--json", "--dry-run", SIO_REDIS_URL=own_redis.url)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)  # the whole of stdout, as `| jq` or json.tool read it
    assert report.pop("seconds") >= 0
    assert report == DRY_RUN_REPORT
    assert "stale sockets: 1" in done.stderr.splitlines()
    assert done.stderr.splitlines()[-1] == "dry run: nothing was changed"


def test_progress_ends_at_100_percent(own_redis: EmbeddedRedis) -> None:
    stale_keys(own_redis.url, "socket.io")
    done = cleanup("--redis-url", own_redis.url, "--dry-run")
    assert done.returncode == 0, done.stderr
    progress = [line for line in done.stderr.splitlines() if line.startswith("scanned ")]
    assert progress[-1] == "scanned 2 of ~2 keys (100%)", done.stderr
    assert "stale sockets: 1" in done.stdout.splitlines()  # the text report without --json


def test_key_prefix_from_the_environment(own_redis: EmbeddedRedis) -> None:
    stale_keys(own_redis.url, "app1")
    done = cleanup("--json", "--dry-run", SIO_REDIS_URL=own_redis.url, SIO_KEY_PREFIX="app1")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["stale_sockets"] == 1


def test_the_command_line_url_wins_over_the_environment(own_redis: EmbeddedRedis) -> None:
    stale_keys(own_redis.url, "socket.io")
    done = cleanup(
        "--redis-url", own_redis.url, "--json", "--dry-run", SIO_REDIS_URL="redis://127.0.0.1:1/0"
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["stale_sockets"] == 1


def test_no_url_anywhere_is_a_usage_error() -> None:
    done = cleanup("--dry-run")
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.splitlines()[-1] == (
        "sio-cleanup: error: no Redis: give --redis-url or set SIO_REDIS_URL"
    )
