"""The two layouts of one host that ``bench/ten_thousand.py`` compares (issue 24, item 5).

- :class:`OnePort`: ``sio-master --workers N --port P``, every client on P; the master accepts
  each connection, peeks at its request line and hands it to a worker.
- :class:`BehindHaproxy`: ``sio-master --workers N --worker-ports`` (worker i on P+i) behind
  the real HAProxy, run on the configuration ``sio-master balancer-config haproxy --layout
  worker-ports`` prints (sticky by source address), every client on HAProxy's port.

Why several HAProxy processes: HAProxy holds two descriptors per client (the client's and the
worker's), and one process may open at most the hard RLIMIT_NOFILE (20,000 on the machine
the figures come from), so one process cannot carry 10,000 clients. :data:`PER_HAPROXY`
clients per process; every process binds the same port with SO_REUSEPORT (HAProxy's default
on Linux) and the kernel spreads the connections; they hash the source address alike, so a
client reaches the same worker whichever process it lands on. Each process gets the hard
limit as its soft one and derives its own maxconn from it (the printed configuration sets
none). Each also gets a stats socket (a ``global`` section added before the printed
configuration, which is used as printed), read to wait until every worker is UP.

Both run the master with ``--metrics-port``, so the clients each worker holds can be read
(``sio_master_connected_sockets``): source-address hashing over a few addresses is uneven.
"""

from __future__ import annotations

import math
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.harness import REPO, Processes
from bench.measure import free_port_block, wait_port
from bench.peers import Ours, OursOnePort

PER_HAPROXY = 6000  # clients per HAProxy process: 12,000 descriptors, under 20,000
HEALTHY_TIMEOUT = 30.0  # seconds for HAProxy to see every worker UP


class Layout(Ours):
    """Ours with ``--metrics-port``; what the clients connect to is :attr:`ports`."""

    key = ""

    def __init__(self, url: str, processes: int, extra: list[str] | None = None) -> None:
        super().__init__(url, processes, extra)
        self.metrics_port = free_port_block(1)
        self.extra = [*self.extra, "--metrics-port", str(self.metrics_port)]

    def balancer_pids(self) -> set[int]:
        """The balancer's processes (none: the master is the front)."""
        return set()

    def metrics(self) -> dict[str, float]:
        """The master's metrics, ``name{labels}`` -> value."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        values = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                values[name] = float(value)
        return values

    def sockets_by_worker(self) -> list[int]:
        """Socket.IO connections each worker holds, by worker id."""
        metrics = self.metrics()
        return [
            int(metrics.get(f'sio_master_connected_sockets{{worker="{w}"}}', 0))
            for w in range(self.processes)
        ]

    def master_connections(self) -> dict[str, int]:
        """``sio_master_connections_total`` by outcome (the one port's accepts)."""
        prefix = 'sio_master_connections_total{outcome="'
        return {
            name[len(prefix) : -2]: int(value)
            for name, value in self.metrics().items()
            if name.startswith(prefix)
        }


class OnePort(Layout, OursOnePort):
    name = "one port (master)"
    key = "one-port"


class BehindHaproxy(Layout):
    name = "--worker-ports + HAProxy"
    key = "haproxy"

    def __init__(
        self, url: str, processes: int, extra: list[str] | None = None, clients: int = 10_000
    ) -> None:
        super().__init__(url, processes, extra)
        self.backends = list(self.ports)  # the workers' own ports
        self.front = free_port_block(1)
        self.ports = [self.front]
        self.haproxies = Processes()
        self.count = max(1, math.ceil(clients / PER_HAPROXY))
        self.folder = Path(tempfile.mkdtemp(prefix="bench-haproxy-"))

    def config(self, k: int) -> Path:
        """HAProxy process ``k``'s configuration: a stats socket, then the printed one."""
        printed = subprocess.run(
            [
                sys.executable,
                "-m",
                "sio_cluster",
                "balancer-config",
                "haproxy",
                "--layout",
                "worker-ports",
                "--workers",
                str(self.processes),
                "--port",
                str(self.base),
                "--listen",
                f"127.0.0.1:{self.front}",
            ],
            cwd=REPO,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        path = self.folder / f"haproxy-{k}.cfg"
        stats = self.folder / f"stats-{k}.sock"
        path.write_text(f"global\n    stats socket {stats}\n\n{printed}")
        return path

    def spawn(self) -> None:
        if shutil.which("haproxy") is None:
            raise SystemExit("haproxy is not installed (Debian: apt-get install -y haproxy)")
        super().spawn()
        for port in self.backends:
            wait_port(port)
        for k in range(self.count):
            self.haproxies.start(
                ["haproxy", "-f", str(self.config(k)), "-db"],
                stdout=subprocess.DEVNULL,
                preexec_fn=hard_open_files,
            )
        deadline = time.monotonic() + HEALTHY_TIMEOUT
        while not all(self.all_up(k) for k in range(self.count)):
            if time.monotonic() > deadline:
                raise RuntimeError(f"HAProxy never saw the workers UP ({self.folder})")
            time.sleep(0.1)

    def all_up(self, k: int) -> bool:
        """Whether HAProxy process ``k`` has every worker UP (its stats socket's CSV)."""
        try:
            csv = stats_command(self.folder / f"stats-{k}.sock", "show stat")
        except OSError:
            return False
        servers = [
            row.split(",") for row in csv.splitlines() if row.startswith("workers,h")
        ]  # pxname,svname,...,status (column 18)
        return len(servers) == self.processes and all(r[17] == "UP" for r in servers)

    def balancer_pids(self) -> set[int]:
        return self.haproxies.pids()

    def stop(self) -> None:
        try:
            self.haproxies.stop()
        finally:
            super().stop()
            shutil.rmtree(self.folder, ignore_errors=True)


def hard_open_files() -> None:
    """In HAProxy's process before exec: the soft descriptor limit raised to the hard one."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def stats_command(path: Path, command: str) -> str:
    """One command on an HAProxy stats socket; its whole answer."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(str(path))
        sock.sendall(command.encode() + b"\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()


LAYOUTS: dict[str, type[Layout]] = {cls.key: cls for cls in (OnePort, BehindHaproxy)}
