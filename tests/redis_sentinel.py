"""A Sentinel-managed Redis for the tests: a primary, a replica and three sentinels.

Every process is a real ``redis-server`` (the binary the tests already use) on a
free loopback port, started by the test and gone with it; a short
``down-after-milliseconds`` makes a failover take a few seconds.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from sio_cluster.master.embedded_redis import (
    EmbeddedRedis,
    die_with_parent,
    free_port,
    ping,
    redis_server_binary,
)

SERVICE = "svc"
DOWN_AFTER_MS = 1000


class SentinelProcess:
    """One ``redis-server <conf> --sentinel`` watching the service."""

    def __init__(self, primary: EmbeddedRedis, folder: Path) -> None:
        self.port = free_port()
        conf = folder / f"sentinel-{self.port}.conf"
        conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {folder}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {primary.port} 2\n"
            f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {SERVICE} 10000\n"
        )
        self.process: subprocess.Popen[bytes] | None = subprocess.Popen(
            [redis_server_binary(), str(conf), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
        deadline = time.monotonic() + 10
        while not ping("127.0.0.1", self.port, None):
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"sentinel on port {self.port} did not start")
            time.sleep(0.02)

        self._client = redis.Redis(port=self.port, socket_timeout=2, decode_responses=True)

    def ask(self, *args: str) -> Any:
        """``SENTINEL <args>`` to this sentinel."""
        return self._client.execute_command("SENTINEL", *args)

    def kill(self) -> None:
        self._client.close()
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


class SentinelSet:
    """The whole set; :meth:`primary_address` is what the live sentinels say now."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="sio-sentinel-")
        self.primary = EmbeddedRedis().start()
        self.replica = EmbeddedRedis(
            extra_args=["--replicaof", "127.0.0.1", str(self.primary.port)]
        ).start()
        self.sentinels = [SentinelProcess(self.primary, Path(self._dir.name)) for _ in range(3)]
        self._wait_until_ready()

    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def live_sentinels(self) -> list[SentinelProcess]:
        return [s for s in self.sentinels if s.process is not None]

    def primary_address(self) -> tuple[str, int] | None:
        for sentinel in self.live_sentinels():
            try:
                answer = sentinel.ask("GET-MASTER-ADDR-BY-NAME", SERVICE)
            except redis.RedisError:
                continue
            if answer:
                return str(answer[0]), int(answer[1])
        return None

    def _wait_until_ready(self, timeout: float = 30.0) -> None:
        """The replica is in sync and every sentinel knows it and the other sentinels."""
        deadline = time.monotonic() + timeout
        replica = redis.Redis(port=self.replica.port, decode_responses=True)
        while time.monotonic() < deadline:
            synced = replica.info("replication").get("master_link_status") == "up"
            known = all(
                len(s.ask("REPLICAS", SERVICE)) == 1
                and len(s.ask("SENTINELS", SERVICE)) == len(self.sentinels) - 1
                for s in self.sentinels
            )
            if synced and known:
                replica.close()
                return
            time.sleep(0.05)
        replica.close()
        raise RuntimeError("the Sentinel set did not settle")

    def close(self) -> None:
        for sentinel in self.sentinels:
            sentinel.kill()
        self.replica.close()
        self.primary.close()
        self._dir.cleanup()
