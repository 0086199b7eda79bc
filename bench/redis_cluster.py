"""A Redis Cluster for tests and benchmarks: three primaries and three replicas (real processes).

Every node is a real ``redis-server`` (the binary the tests already use) on a free
loopback port, joined with that binary's ``redis-cli --cluster create``; a short
``cluster-node-timeout`` makes a replica take over a killed primary in seconds.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import redis

from sio_cluster.master.embedded_redis import EmbeddedRedis, redis_server_binary

NODE_TIMEOUT_MS = 1000


class RedisCluster:
    """Six nodes; :meth:`primaries` and :meth:`replica_of` read the live topology."""

    def __init__(self, binary: str | None = None) -> None:
        """``binary``: the redis-server to run (default: the tests' one, maybe Redis 6)."""
        self.nodes = [
            EmbeddedRedis(
                binary=binary,
                extra_args=[
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", "nodes.conf",
                    "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
                    "--repl-diskless-sync-delay", "0",
                ]
            ).start()
            for _ in range(6)
        ]  # fmt: skip
        cli = str(Path(binary or redis_server_binary()).with_name("redis-cli"))
        addresses = [f"127.0.0.1:{n.port}" for n in self.nodes]
        subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", "1", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        self.wait_until_ok()
        self.wait_until_replicas_synced()

    def client(self, node: EmbeddedRedis) -> redis.Redis:
        return redis.Redis(port=node.port, socket_timeout=2, decode_responses=True)

    def live(self) -> list[EmbeddedRedis]:
        return [n for n in self.nodes if n.process is not None]

    def wait_until_ok(self, timeout: float = 30.0) -> None:
        """Every live node sees the cluster as ok and every slot served."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = []
            for node in self.live():
                with self.client(node) as c:
                    info = c.execute_command("CLUSTER", "INFO")
                    states.append("cluster_state:ok" in str(info))
            if all(states):
                return
            time.sleep(0.05)
        raise RuntimeError("the cluster did not get to state ok")

    def wait_until_replicas_synced(self, timeout: float = 30.0) -> None:
        """Every replica's link to its primary is up: a replica that never synced cannot
        take over (Redis 7 delays a first sync by 5 s unless told otherwise)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            links = []
            for node in self.live():
                with self.client(node) as c:
                    info = c.info("replication")
                    if info.get("role") == "slave":
                        links.append(info.get("master_link_status") == "up")
            if len(links) == 3 and all(links):
                return
            time.sleep(0.05)
        raise RuntimeError("the replicas did not sync with their primaries")

    def primaries(self) -> list[EmbeddedRedis]:
        """The live nodes that are primaries now."""
        found = []
        for node in self.live():
            with self.client(node) as c:
                if c.execute_command("ROLE")[0] == "master":
                    found.append(node)
        return found

    def seeds(self, nodes: list[EmbeddedRedis]) -> str:
        return ",".join(f"127.0.0.1:{n.port}" for n in nodes)

    def close(self) -> None:
        for node in self.nodes:
            node.close()
