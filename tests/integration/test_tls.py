"""Redis over TLS with a private CA and client certificates: ``rediss://...?ssl_ca_certs=...
&ssl_certfile=...&ssl_keyfile=...`` for the subscriber, the command connections and
``sio-cleanup`` alike (a real redis-server with TLS only that requires a client certificate;
every certificate made by openssl)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from sio_cluster.master.embedded_redis import free_port, redis7_binary
from tests.cluster import REPO, MasterProcess, redis7_or_skip, until

pytestmark = pytest.mark.skipif(
    shutil.which("openssl") is None or redis7_binary() is None,
    reason="needs openssl and Debian's redis-server (built with TLS; .ci/run installs it)",
)


@dataclass
class TlsRedis:
    port: int
    ca: Path
    process: subprocess.Popen[bytes]

    def url(self, ca: Path | None) -> str:
        folder = self.ca.parent
        query = f"ssl_certfile={folder / 'client.crt'}&ssl_keyfile={folder / 'client.key'}"
        if ca:
            query += f"&ssl_ca_certs={ca}"
        return f"rediss://127.0.0.1:{self.port}/0?{query}"

    def tls(self) -> dict[str, Any]:
        folder = self.ca.parent
        return {
            "ssl": True,
            "ssl_ca_certs": str(self.ca),
            "ssl_certfile": str(folder / "client.crt"),
            "ssl_keyfile": str(folder / "client.key"),
        }

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5, **self.tls())


def openssl(folder: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True, timeout=60)


def private_ca(folder: Path) -> None:
    """ca.crt (a CA nobody trusts but us) and server.crt/.key for 127.0.0.1 signed by it."""
    subj = ["-subj", "/CN=sio-cluster test CA"]
    openssl(folder, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", *subj,
            "-keyout", "ca.key", "-out", "ca.crt")  # fmt: skip
    openssl(folder, "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
            "-keyout", "server.key", "-out", "server.csr")  # fmt: skip
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl(folder, "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", "san.ext",
            "-out", "server.crt")  # fmt: skip
    openssl(folder, "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=sio-master",
            "-keyout", "client.key", "-out", "client.csr")  # fmt: skip
    openssl(folder, "x509", "-req", "-in", "client.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-out", "client.crt")  # fmt: skip


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[TlsRedis]:
    private_ca(tmp_path)
    port = free_port()
    binary = redis7_or_skip()
    process = subprocess.Popen(
        [binary, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", "server.crt", "--tls-key-file", "server.key",
         "--tls-ca-cert-file", "ca.crt", "--tls-auth-clients", "yes",
         "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    server = TlsRedis(port, tmp_path / "ca.crt", process)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with server.client() as client:
                    client.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline and process.poll() is None, "no TLS Redis"
                time.sleep(0.02)  # bounded: the server is starting
        yield server
    finally:
        process.kill()
        process.wait()


async def test_the_subscriber_and_commands_trust_a_private_ca(
    tls_redis: TlsRedis, start_master: Any, clients: Any
) -> None:
    cluster: MasterProcess = await start_master(
        redis_url=tls_redis.url(tls_redis.ca), workers=2
    ).ready()
    a = await clients(cluster.url(0), "a")
    b = await clients(cluster.url(1), "b")
    await b.call("join", "secure")
    async with aioredis.Redis(port=tls_redis.port, **tls_redis.tls()) as publisher:
        await publisher.publish("ch:news", json.dumps({"to": "secure", "data": "over TLS"}))
        await publisher.publish("ch:mark", json.dumps({}))
        await a.wait_count("mark", 1)
        await b.wait_count("mark", 1)
        assert (a.got("news"), b.got("news")) == ([], [("over TLS",)])
        # a worker broadcast goes out on a command connection, over TLS as well
        await a.call("emit", {"event": "ping-b", "args": [], "to": "secure"})
        await b.wait_count("ping-b", 1)
        # the relay to other hosts is published after the local delivery: wait for it
        await until(lambda: _roles_include(publisher, cluster.pid, "cmd"), what="a cmd conn")
        roles = await _roles(publisher, cluster.pid)
    assert roles.count("sub") == 1 and 1 <= roles.count("cmd") <= 2


async def _roles(client: aioredis.Redis, pid: int) -> list[str]:
    """The roles (sub, cmd) of master ``pid``'s connections, from their CLIENT LIST names."""
    names = [c["name"] for c in await client.client_list()]
    return sorted(n.rsplit(":", 1)[1] for n in names if f":{pid}:" in n)


async def _roles_include(client: aioredis.Redis, pid: int, role: str) -> bool:
    return role in await _roles(client, pid)


async def test_without_the_private_ca_the_master_stops_at_start_and_says_why(
    tls_redis: TlsRedis, start_master: Any
) -> None:
    cluster: MasterProcess = start_master(redis_url=tls_redis.url(None), workers=1)
    assert await cluster.wait_exit(timeout=20) == 1
    assert cluster.log_matches(r"TLS certificate is not trusted .*ssl_ca_certs")


def test_the_cleanup_runs_over_tls(tls_redis: TlsRedis) -> None:
    with tls_redis.client() as client:
        client.sadd("socket.io#orphan", "orphan")  # a socket set of no known node
    done = subprocess.run(
        [sys.executable, "scripts/cleanup.py", "--redis-url", tls_redis.url(tls_redis.ca)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "stale sockets: 1" in done.stdout
    with tls_redis.client() as client:
        assert client.exists("socket.io#orphan") == 0
