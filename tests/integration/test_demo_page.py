"""The built-in demo's page (``/`` on every worker) in a real headless browser: Debian's
chromium driven by playwright-core (tests/node/browser.js). Two pages on two workers chat in a
room, and a ``redis-cli PUBLISH ch:message`` shows on both."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sio_cluster.master.embedded_redis import redis_server_binary
from tests.cluster import MasterProcess
from tests.node_peer import NODE_DIR, ensure_node_modules, missing_tools

CHROMIUM = "/usr/bin/chromium"


def missing() -> str | None:
    if missing_tools():
        return f"the browser test drives chromium from Node.js: {missing_tools()}"
    if not Path(CHROMIUM).exists():
        return "chromium is not installed (apt-get install chromium; .ci/run does)"
    return None


pytestmark = pytest.mark.skipif(missing() is not None, reason=str(missing()))


async def test_the_page_and_its_client_are_served_by_every_worker(start_master: Any) -> None:
    cluster: MasterProcess = await start_master(
        redis_url="module", workers=2, app="sio_cluster.workers.demo:setup"
    ).ready()
    async with aiohttp.ClientSession() as http:
        for worker in (0, 1):
            async with http.get(cluster.url(worker) + "/") as page:
                assert page.status == 200 and "text/html" in page.headers["Content-Type"]
                assert '<script src="/socket.io.min.js">' in await page.text()
            async with http.get(cluster.url(worker) + "/socket.io.min.js") as script:
                assert script.status == 200 and "Socket.IO v4.8" in await script.text()


async def test_two_pages_on_two_workers_chat_and_see_a_ch_publish(
    start_master: Any, redis_server: Any, tmp_path: Path
) -> None:
    ensure_node_modules()
    cluster: MasterProcess = await start_master(
        workers=2, app="sio_cluster.workers.demo:setup"
    ).ready()
    redis_cli = shutil.which("redis-cli") or str(Path(redis_server_binary()).with_name("redis-cli"))
    done = subprocess.run(
        ["node", "browser.js", cluster.url(0), cluster.url(1), redis_cli, redis_server.url]
        + [str(tmp_path / "demo.png")],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    logs = json.loads(done.stdout.strip().splitlines()[-1])
    chat = [
        "[lobby] alice: hello from alice",
        "[lobby] bob: hi alice",
        "backend: from redis-cli",
    ]
    sid = r"[\w-]{20} joined lobby"
    assert [line for line in logs["a"] if not re.fullmatch(sid, line)] == chat
    assert [line for line in logs["b"] if not re.fullmatch(sid, line)] == chat
    assert len([line for line in logs["a"] if re.fullmatch(sid, line)]) == 2  # alice, bob
    assert (tmp_path / "demo.png").stat().st_size > 10_000
