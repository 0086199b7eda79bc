"""``sio-master balancer-config haproxy|nginx``: an L4 balancer configuration for the workers.

Why L4 with the client's source address: Socket.IO's long-polling transport sends
several HTTP requests per session, and every one must reach the worker holding
the session; hashing the source address (consistently, so a worker leaving the
pool moves only its own clients) keeps them together without the balancer
reading HTTP. Websockets are long-lived and mostly idle between engine.io's pings
(25 s), so the timeouts are an hour, not the HTTP defaults of seconds.

HAProxy checks each worker's ``/healthz`` (see :mod:`workers.process`) every
second, so a dead or stopping worker leaves the pool within about 2 s; a respawn
(well under a second) does not move its clients. nginx's open-source ``stream``
module has no active checks, only passive failover (``max_fails``,
``proxy_next_upstream``), and that split long-polling sessions: while a killed
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


@dataclass(frozen=True)
class Layout:
    """Where the balancer listens and the workers of every host behind it."""

    listen_host: str
    listen_port: int
    hosts: tuple[str, ...]
    port: int
    workers: int

    def servers(self) -> list[tuple[str, str, int]]:
        """``(name, host, port)`` of every worker of every host."""
        return [
            (f"h{h}w{w}", host, self.port + w)
            for h, host in enumerate(self.hosts)
            for w in range(self.workers)
        ]


def haproxy(layout: Layout) -> str:
    servers = "\n".join(
        f"    server {name} {host}:{port} check inter 1s fall 2 rise 1"
        for name, host, port in layout.servers()
    )
    return f"""# sio-master balancer-config haproxy: {len(layout.servers())} workers
# (no global maxconn: HAProxy derives it from the file descriptor limit it may use)

defaults
    mode tcp
    timeout connect 5s
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
    servers = "\n".join(
        f"        server {host}:{port} max_fails=0;" for _, host, port in layout.servers()
    )
    return f"""# sio-master balancer-config nginx: {len(layout.servers())} workers (stream module)
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
        proxy_next_upstream off;
    }}
}}
"""


RENDERERS = {"haproxy": haproxy, "nginx": nginx}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="sio-master balancer-config",
        description="Print an L4 balancer configuration (source-IP sticky) for the workers.",
    )
    parser.add_argument("kind", choices=sorted(RENDERERS))
    parser.add_argument("--workers", type=int, required=True, help="workers per host")
    parser.add_argument("--port", type=int, default=8000, help="the hosts' --port")
    parser.add_argument(
        "--hosts", default="127.0.0.1", help="comma-separated addresses of the hosts' workers"
    )
    parser.add_argument("--listen", default="0.0.0.0:80", help="where the balancer listens")
    args = parser.parse_args(argv)
    listen_host, _, listen_port = args.listen.rpartition(":")
    hosts = tuple(h.strip() for h in args.hosts.split(",") if h.strip())
    if args.workers < 1 or not hosts or not listen_host or not listen_port.isdigit():
        parser.error("need --workers >= 1, at least one host and --listen HOST:PORT")
    if args.port + args.workers - 1 > 65535:
        parser.error("--port and --workers go past port 65535")
    layout = Layout(listen_host, int(listen_port), hosts, args.port, args.workers)
    sys.stdout.write(RENDERERS[args.kind](layout))
