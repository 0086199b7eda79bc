"""``sio-master balancer-config haproxy|nginx``: an L4 balancer configuration for the hosts.

Two layouts, as the master's: ``--layout one-port`` (the master's default) has one server per
host, its ``--port``, whose master hands each connection to the worker of its session; the
balancer only has to keep a session on its host. ``--layout worker-ports`` (a master run with
``--worker-ports``) has one server per worker, ``port + i``, and the balancer alone keeps a
session on its worker.

Why L4 with the client's source address: Socket.IO's long-polling transport sends
several HTTP requests per session, and every one must reach the process (or, with one port,
the host) holding the session; hashing the source address (consistently, so a server leaving
the pool moves only its own clients) keeps them together without the balancer
reading HTTP. Websockets are long-lived and mostly idle between engine.io's pings
(25 s), so the timeouts are an hour, not the HTTP defaults of seconds.

HAProxy checks each worker's ``/healthz`` (see :mod:`workers.process`) every
second, so a dead or stopping worker leaves the pool within about 2 s; a respawn
(well under a second) does not move its clients. A check may wait 3 s for its answer
(``timeout check``; without it HAProxy allows only ``inter``, 1 s): a host that is alive but
busy (a traffic spike, a saturated CPU) must not leave the pool, because moving its source
addresses to another host breaks every long-polling session they hold there.

nginx's open-source ``stream`` module has no active checks, only passive failover
(``max_fails``, ``proxy_next_upstream``), and that split long-polling sessions: while a killed
worker respawned, each nginx process sent the same address to whichever worker
its own failure state chose, and a session opened on the other worker broke again
when the address moved back. So nginx never fails over: a refused connection is
closed, and the client retries until its worker is back.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

TUNNEL_TIMEOUT = "1h"
LAYOUTS = ("one-port", "worker-ports")


@dataclass(frozen=True)
class Layout:
    """Where the balancer listens and the servers of every host behind it."""

    listen_host: str
    listen_port: int
    hosts: tuple[str, ...]
    port: int
    workers: int
    worker_ports: bool = True  # one server per worker (port + i); False: per host (port)
    send_proxy: bool = False  # the client's address in a PROXY v2 header (--proxy-protocol)

    def servers(self) -> list[tuple[str, str, int]]:
        """``(name, host, port)`` of every worker of every host, or of every host's port."""
        if not self.worker_ports:
            return [(f"h{h}", host, self.port) for h, host in enumerate(self.hosts)]
        return [
            (f"h{h}w{w}", host, self.port + w)
            for h, host in enumerate(self.hosts)
            for w in range(self.workers)
        ]

    @property
    def what(self) -> str:
        """What the servers are, for the configuration's first line."""
        count = len(self.servers())
        return f"{count} workers" if self.worker_ports else f"{count} hosts, one port each"


def haproxy(layout: Layout) -> str:
    servers = "\n".join(
        f"    server {name} {host}:{port} check inter 1s fall 2 rise 1"
        + (" send-proxy-v2 check-send-proxy" if layout.send_proxy else "")
        for name, host, port in layout.servers()
    )
    return f"""# sio-master balancer-config haproxy: {layout.what}
# (no global maxconn: HAProxy derives it from the file descriptor limit it may use)

defaults
    mode tcp
    timeout connect 5s
    timeout check 3s
    timeout client {TUNNEL_TIMEOUT}
    timeout server {TUNNEL_TIMEOUT}
    timeout tunnel {TUNNEL_TIMEOUT}

frontend socketio
    bind {layout.listen_host}:{layout.listen_port}
    default_backend workers

backend workers
    balance source
    hash-type consistent
    option httpchk GET /healthz
    http-check expect status 200
{servers}
"""


def nginx(layout: Layout) -> str:
    proxy_protocol = "\n        proxy_protocol on;" if layout.send_proxy else ""
    servers = "\n".join(
        f"        server {host}:{port} max_fails=0;" for _, host, port in layout.servers()
    )
    return f"""# sio-master balancer-config nginx: {layout.what} (stream module)
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes auto;

events {{
    worker_connections 10240;
}}

stream {{
    upstream socketio_workers {{
        hash $remote_addr consistent;
{servers}
    }}

    server {{
        listen {layout.listen_host}:{layout.listen_port};
        proxy_pass socketio_workers;
        proxy_connect_timeout 2s;
        proxy_timeout {TUNNEL_TIMEOUT};
        proxy_next_upstream off;{proxy_protocol}
    }}
}}
"""


RENDERERS = {"haproxy": haproxy, "nginx": nginx}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="sio-master balancer-config",
        description="Print an L4 balancer configuration (source-IP sticky) for the hosts.",
    )
    parser.add_argument("kind", choices=sorted(RENDERERS))
    parser.add_argument(
        "--layout",
        choices=LAYOUTS,
        default="one-port",
        help="one-port: a server per host (the master's default); worker-ports: a server per "
        "worker, for masters run with --worker-ports",
    )
    parser.add_argument("--workers", type=int, required=True, help="workers per host")
    parser.add_argument("--port", type=int, default=8000, help="the hosts' --port")
    parser.add_argument(
        "--hosts", default="127.0.0.1", help="comma-separated addresses of the hosts' workers"
    )
    parser.add_argument("--listen", default="0.0.0.0:80", help="where the balancer listens")
    parser.add_argument(
        "--send-proxy",
        action="store_true",
        help="send the client's address in a PROXY header (the hosts run --proxy-protocol, "
        "with the balancer in --forwarded-allow-ips); one-port layout only",
    )
    args = parser.parse_args(argv)
    listen_host, _, listen_port = args.listen.rpartition(":")
    hosts = tuple(h.strip() for h in args.hosts.split(",") if h.strip())
    if args.workers < 1 or not hosts or not listen_host or not listen_port.isdigit():
        parser.error("need --workers >= 1, at least one host and --listen HOST:PORT")
    worker_ports = args.layout == "worker-ports"
    if args.port + (args.workers - 1 if worker_ports else 0) > 65535:
        parser.error("--port and --workers go past port 65535")
    if args.send_proxy and worker_ports:
        parser.error("--send-proxy needs --layout one-port (the master reads the header)")
    layout = Layout(
        listen_host, int(listen_port), hosts, args.port, args.workers, worker_ports, args.send_proxy
    )
    sys.stdout.write(RENDERERS[args.kind](layout))
