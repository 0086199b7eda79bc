"""``python -m sio_cluster`` / ``sio-master``: every option has an environment variable too."""

from __future__ import annotations

import os
import sys
from importlib import import_module
from typing import Any

import click

from sio_cluster import __version__
from sio_cluster.common.config import DEFAULT_APP, Config, ConfigError
from sio_cluster.common.logformat import configure_logging

LOG_LEVELS = ["debug", "info", "warning", "error", "critical"]

# sio-master NAME ...: the module whose main(argv) runs it, and a line for --help
SUBCOMMANDS = {
    "balancer-config": (
        "sio_cluster.master.balancer_config",
        "print an L4 balancer configuration (HAProxy or nginx, source-IP sticky)\n"
        "                      for the workers of every host",
    ),
}

# What --help says after the options: click rewraps a paragraph unless it starts with \b.
EPILOG = "\n\n".join(
    [
        "\b\nSubcommands (sio-master NAME --help for their options):\n"
        + "\n".join(f"  {name:<20}{text}" for name, (_, text) in SUBCOMMANDS.items()),
        "\b\nRedis URL forms (--redis-url, SIO_REDIS_URL):\n"
        "  (none)              an embedded redis-server on a free loopback port\n"
        "  redis://[[user]:password@]host[:port][/db][?options]          one Redis\n"
        "  rediss://[[user]:password@]host[:port][/db][?ssl_ca_certs=...]  one Redis, TLS\n"
        "  unix://[[user]:password@]/path/redis.sock[?db=N]              one Redis, Unix socket\n"
        "  redis+sentinel://[user:password@]host:port[,host:port...]/service[/db][?options]\n"
        "                      the primary the sentinels name, followed through failovers\n"
        "  rediss+sentinel://...  the same, TLS to the primary and replicas\n"
        "  redis+cluster://[user:password@]host:port[,host:port...][?options]\n"
        "                      a Redis Cluster from any of its nodes (the rest are found)\n"
        "  rediss+cluster://...   the same, TLS to every node",
        "\b\nStale keys of --store: sio-cleanup --help.",
    ]
)


def entry() -> None:
    """``sio-master``: run the master, or ``sio-master NAME ...``, a tool of :data:`SUBCOMMANDS`
    (they take argparse options of their own, so they are dispatched before click)."""
    name = sys.argv[1] if len(sys.argv) > 1 else ""
    if name in SUBCOMMANDS:
        module, _ = SUBCOMMANDS[name]
        import_module(module).main(sys.argv[2:])
        return
    main()


@click.command(context_settings={"show_default": True, "max_content_width": 100}, epilog=EPILOG)
@click.version_option(__version__, "--version", message="sio-master %(version)s")
@click.option(
    "--workers",
    type=int,
    default=os.cpu_count() or 1,
    envvar="SIO_WORKERS",
    show_envvar=True,
    help="Worker processes (default: CPU count).",
)
@click.option(
    "--host",
    default="127.0.0.1",
    envvar="SIO_HOST",
    show_envvar=True,
    help="Address the port (or, with --worker-ports, the workers) listens on.",
)
@click.option(
    "--port",
    type=int,
    default=8000,
    envvar="SIO_PORT",
    show_envvar=True,
    help="The port every client connects to: the master accepts and hands each connection "
    "to the worker of its session (with --worker-ports: worker i listens on PORT+i).",
)
@click.option(
    "--worker-ports/--one-port",
    default=False,
    envvar="SIO_WORKER_PORTS",
    show_envvar=True,
    help="Worker i listens on PORT+i itself, for an external L4 balancer (sticky by source "
    "address), instead of every client on PORT through the master.",
)
@click.option(
    "--proxy-protocol/--no-proxy-protocol",
    default=False,
    envvar="SIO_PROXY_PROTOCOL",
    show_envvar=True,
    help="Connections from --forwarded-allow-ips start with a PROXY protocol header (v1 or "
    "v2, HAProxy's send-proxy): the client's address is taken from it. Needs the one port.",
)
@click.option(
    "--proxy-headers/--no-proxy-headers",
    default=False,
    envvar="SIO_PROXY_HEADERS",
    show_envvar=True,
    help="Take the client's address from X-Forwarded-For when the peer is in "
    "--forwarded-allow-ips.",
)
@click.option(
    "--forwarded-allow-ips",
    default="127.0.0.1",
    envvar="SIO_FORWARDED_ALLOW_IPS",
    show_envvar=True,
    help="Comma-separated addresses or networks trusted to name the client (PROXY header, "
    "X-Forwarded-For); '*' trusts every peer.",
)
@click.option(
    "--redis-url",
    default=None,
    envvar="SIO_REDIS_URL",
    show_envvar=True,
    help="Redis URL, of any form below; none = start an embedded Redis.",
)
@click.option(
    "--pattern",
    "patterns",
    multiple=True,
    default=["ch:*"],
    envvar="SIO_PATTERN",
    show_envvar=True,
    help="PSUBSCRIBE pattern (repeatable; env: space-separated).",
)
@click.option(
    "--app",
    default=DEFAULT_APP,
    envvar="SIO_APP",
    show_envvar=True,
    help=(
        "module:attr of the app: a socketio.ASGIApp, a socketio.AsyncServer, an aiohttp"
        " web.Application with one attached, or setup(sio[, web_app])."
    ),
)
@click.option(
    "--app-dir",
    default=".",
    envvar="SIO_APP_DIR",
    show_envvar=True,
    help="Directory put first on the workers' import path for --app.",
)
@click.option(
    "--cors-allowed-origins",
    "cors",
    multiple=True,
    envvar="SIO_CORS_ALLOWED_ORIGINS",
    show_envvar=True,
    help="Allowed origin (repeatable; '*' for any). Default: same origin.",
)
@click.option(
    "--max-message-bytes",
    type=int,
    default=1024 * 1024,
    envvar="SIO_MAX_MESSAGE_BYTES",
    show_envvar=True,
    help="Larger ch:* messages are rejected.",
)
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS),
    default="info",
    envvar="SIO_LOG_LEVEL",
    show_envvar=True,
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    envvar="SIO_LOG_FORMAT",
    show_envvar=True,
    help="text lines, or one JSON object per line (ts, level, role, logger, message, exc).",
)
@click.option(
    "--metrics-port",
    type=int,
    default=0,
    envvar="SIO_METRICS_PORT",
    show_envvar=True,
    help="Serve Prometheus metrics from the master on this port; 0 = off.",
)
@click.option(
    "--metrics-host",
    default="127.0.0.1",
    envvar="SIO_METRICS_HOST",
    show_envvar=True,
    help="Address of the metrics endpoint.",
)
@click.option(
    "--worker-buffer-bytes",
    type=int,
    default=16 * 1024 * 1024,
    envvar="SIO_WORKER_BUFFER_BYTES",
    show_envvar=True,
    help="Unsent bytes allowed per worker pipe before its messages are dropped.",
)
@click.option(
    "--rejected-key",
    default="sio-master:rejected",
    envvar="SIO_REJECTED_KEY",
    show_envvar=True,
    help="Redis list keeping the last 1,000 rejected messages.",
)
@click.option(
    "--graceful-timeout",
    type=float,
    default=10.0,
    envvar="SIO_GRACEFUL_TIMEOUT",
    show_envvar=True,
    help="Seconds workers get to close their clients on stop.",
)
@click.option(
    "--worker-health-timeout",
    type=float,
    default=30.0,
    envvar="SIO_WORKER_HEALTH_TIMEOUT",
    show_envvar=True,
    help="Kill and respawn a worker silent for this long; 0 = off.",
)
@click.option(
    "--redis-stall-timeout",
    type=float,
    default=10.0,
    envvar="SIO_REDIS_STALL_TIMEOUT",
    show_envvar=True,
    help="/readyz answers 503 while the Redis subscriber has heard nothing (not even a PING "
    "answer) for this long.",
)
@click.option(
    "--redis-health-check-interval",
    type=float,
    default=15.0,
    envvar="SIO_REDIS_HEALTH_CHECK_INTERVAL",
    show_envvar=True,
    help="A quiet Redis subscriber connection is PINGed this often (or every third of "
    "--redis-stall-timeout, if shorter); one silent for twice this (or the stall timeout, "
    "if longer) is remade.",
)
@click.option(
    "--store/--no-store",
    default=False,
    envvar="SIO_STORE",
    show_envvar=True,
    help="Mirror sockets and rooms into the legacy set-based keys (P#sid, P#room).",
)
@click.option(
    "--key-prefix",
    default="socket.io",
    envvar="SIO_KEY_PREFIX",
    show_envvar=True,
    help="Prefix P of the --store keys.",
)
@click.option(
    "--node-ttl",
    type=float,
    default=15.0,
    envvar="SIO_NODE_TTL",
    show_envvar=True,
    help="TTL of this master's heartbeat key with --store (1..15 s).",
)
@click.option(
    "--adapter-key",
    default="socket.io",
    envvar="SIO_ADAPTER_KEY",
    show_envvar=True,
    help="Channel prefix of the redis-adapter protocol between hosts.",
)
@click.option(
    "--adapter",
    type=click.Choice(["classic", "sharded"]),
    default="classic",
    envvar="SIO_ADAPTER",
    show_envvar=True,
    help="Protocol between hosts: the classic redis-adapter (PUBLISH), or the sharded one "
    "(SPUBLISH, Redis >= 7; Node's createShardedAdapter). ch:* stays classic PSUBSCRIBE.",
)
@click.option(
    "--subscription-mode",
    type=click.Choice(["static", "dynamic", "dynamic-private"]),
    default="dynamic",
    envvar="SIO_SUBSCRIPTION_MODE",
    show_envvar=True,
    help="With --adapter sharded: which rooms get their own channel (as Node's "
    "subscriptionMode; every server of the cluster must use the same).",
)
@click.option(
    "--max-connections",
    type=int,
    default=10_000,
    envvar="SIO_MAX_CONNECTIONS",
    show_envvar=True,
    help="Connections (engine.io sessions) one worker accepts; more are refused (401).",
)
@click.option(
    "--connection-state-recovery",
    type=float,
    default=0.0,
    envvar="SIO_CONNECTION_STATE_RECOVERY",
    show_envvar=True,
    help="Seconds a disconnected client may come back within and get its socket (id, rooms, "
    "session) and every message it missed, as Node's connectionStateRecovery; 0 (the default) "
    "is off. On: every broadcast event carries an offset as its last argument.",
)
@click.option(
    "--recovery-buffer-bytes",
    type=int,
    default=64 * 1024 * 1024,
    envvar="SIO_RECOVERY_BUFFER_BYTES",
    show_envvar=True,
    help="With --connection-state-recovery: the most bytes of messages the master keeps for "
    "returning clients (oldest out first).",
)
@click.option(
    "--header-timeout",
    type=float,
    default=10.0,
    envvar="SIO_HEADER_TIMEOUT",
    show_envvar=True,
    help="Seconds a new connection has to send its first request's headers; slower ones "
    "are closed (slowloris).",
)
@click.option(
    "--partial-packet-timeout",
    type=float,
    default=10.0,
    envvar="SIO_PARTIAL_PACKET_TIMEOUT",
    show_envvar=True,
    help="Seconds a binary packet's attachments have to arrive after its header; a client "
    "that takes longer is closed.",
)
@click.option(
    "--partial-packet-bytes",
    type=int,
    default=16 * 1024 * 1024,
    envvar="SIO_PARTIAL_PACKET_BYTES",
    show_envvar=True,
    help="Bytes of attachments one connection may hold in unfinished binary packets.",
)
@click.option(
    "--partial-worker-bytes",
    type=int,
    default=128 * 1024 * 1024,
    envvar="SIO_PARTIAL_WORKER_BYTES",
    show_envvar=True,
    help="Bytes of attachments all connections of one worker may hold in unfinished "
    "binary packets; the connection that passes it is closed.",
)
@click.option(
    "--ws",
    type=click.Choice(["own", "aiohttp"]),
    default="own",
    envvar="SIO_WS",
    show_envvar=True,
    help="Who serves Engine.IO clients on websocket and long-polling: the workers' own "
    "connection layer (about 4 KiB per idle connection), or python-engineio on aiohttp as "
    "published (no Engine.IO 3, no slow-client abort).",
)
@click.option(
    "--allow-eio3/--no-allow-eio3",
    default=False,
    envvar="SIO_ALLOW_EIO3",
    show_envvar=True,
    help="Also accept socket.io-client 1.x/2.x (Engine.IO 3), as Node's allowEIO3; they join "
    "the same rooms and get the same messages as current clients.",
)
@click.option(
    "--allow-v09/--no-allow-v09",
    default=False,
    envvar="SIO_ALLOW_V09",
    show_envvar=True,
    help="Also accept socket.io-client 0.9 (Socket.IO protocol 1: /socket.io/1/ over websocket "
    "and xhr-polling); they join the same rooms and get the same messages as current clients.",
)
@click.option(
    "--admin-ui/--no-admin-ui",
    default=False,
    envvar="SIO_ADMIN_UI",
    show_envvar=True,
    help="Serve the Socket.IO Admin UI's /admin namespace on every worker, cluster-wide.",
)
@click.option(
    "--admin-auth",
    default="",
    envvar="SIO_ADMIN_AUTH",
    show_envvar=True,
    help="USER:PASSWORD the Admin UI logs in with; 'none' serves it without a login.",
)
@click.option(
    "--redis-buffer-bytes",
    type=int,
    default=16 * 1024 * 1024,
    envvar="SIO_REDIS_BUFFER_BYTES",
    show_envvar=True,
    help="Outbound Redis messages kept while Redis is unreachable.",
)
@click.option(
    "--redis-store-09/--no-redis-store-09",
    default=False,
    envvar="SIO_REDIS_STORE_09",
    show_envvar=True,
    help="Join a socket.io 0.9 RedisStore fleet on the same Redis: its broadcasts reach our "
    "sockets, ours reach its clients, and rooms count both (docs: Migrating from 0.9).",
)
@click.option(
    "--redis-store-09-roll-call",
    type=float,
    default=5.0,
    envvar="SIO_REDIS_STORE_09_ROLL_CALL",
    show_envvar=True,
    help="With --redis-store-09: seconds between roll calls of the 0.9 servers; one silent "
    "for 2.5 of them, while this master hears its own roll call, is lost, and its clients "
    "forgotten.",
)
def main(**options: Any) -> None:
    """Run one master and its Socket.IO workers on this host."""
    cors = options.pop("cors")
    try:
        config = Config(
            patterns=tuple(options.pop("patterns")),
            cors_allowed_origins=tuple(cors),
            app_dir=os.path.abspath(options.pop("app_dir")),
            **options,
        )
    except ConfigError as exc:
        # one line, exit 2 (a usage error): the reason, not click's usage banner around it
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)
    configure_logging("master", config.log_level, config.log_format)

    import uvloop

    from sio_cluster.master.server import serve

    sys.exit(uvloop.run(serve(config)))
