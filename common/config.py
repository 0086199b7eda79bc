"""The one typed configuration, built once by the CLI and passed down (the uvicorn way)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from sio_cluster.common.choices import AdapterForm, LogFormat, LogLevel, SubscriptionMode, WsLayer
from sio_cluster.common.forwarded import TrustedHosts
from sio_cluster.common.redis.url import RedisUrlError, check_redis_url

DEFAULT_APP = "sio_cluster.workers.demo:setup"
# Redis cuts a subscriber whose output buffer passes `client-output-buffer-limit pubsub`
# (32 MB at once, or 8 MB for 60 s, by default): a body of 30 MiB made it drop ours and lose
# what was queued behind it. 8 MiB keeps one message within the defaults.
MAX_MESSAGE_BYTES_LIMIT = 8 * 1024 * 1024


class ConfigError(ValueError):
    """A configuration that cannot work; the CLI prints it and exits with status 2."""


@dataclass(frozen=True)
class Config:
    """Everything the master and its workers need to know."""

    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    host: str = "127.0.0.1"
    port: int = 8000
    worker_ports: bool = False  # worker i listens on port + i; False: the master serves port
    proxy_protocol: bool = False  # connections from --forwarded-allow-ips start with PROXY
    proxy_headers: bool = False  # believe X-Forwarded-For from --forwarded-allow-ips
    forwarded_allow_ips: str = "127.0.0.1"  # uvicorn's option and default
    redis_url: str | None = None
    patterns: tuple[str, ...] = ("ch:*",)
    app: str = DEFAULT_APP
    app_dir: str = "."
    cors_allowed_origins: tuple[str, ...] = ()
    max_message_bytes: int = 1024 * 1024
    log_level: LogLevel = "info"
    log_format: LogFormat = "text"
    metrics_port: int = 0
    metrics_host: str = "127.0.0.1"
    worker_buffer_bytes: int = 16 * 1024 * 1024
    rejected_key: str = "sio-master:rejected"
    graceful_timeout: float = 10.0
    worker_health_timeout: float = 30.0
    redis_stall_timeout: float = 10.0  # /readyz: 503 when the subscriber hears nothing this long
    redis_health_check_interval: float = 15.0  # quiet subscribers are PINGed; remade at 2x
    store: bool = False
    key_prefix: str = "socket.io"
    node_ttl: float = 15.0
    adapter_key: str = "socket.io"
    adapter: AdapterForm = "classic"
    subscription_mode: SubscriptionMode = "dynamic"
    redis_buffer_bytes: int = 16 * 1024 * 1024
    max_connections: int = 10_000  # engine.io connections per worker
    header_timeout: float = 10.0  # seconds a new connection has to send its request's headers
    partial_packet_timeout: float = 10.0  # seconds a binary packet's attachments may take
    partial_packet_bytes: int = 16 * 1024 * 1024  # unfinished binary packets, per connection
    partial_worker_bytes: int = 128 * 1024 * 1024  # unfinished binary packets, per worker
    connection_state_recovery: float = 0.0  # the recovery window in seconds; 0: off
    recovery_buffer_bytes: int = 64 * 1024 * 1024  # the packet log's cap, per host
    ws: WsLayer = "own"  # who serves new websocket sessions: the workers' layer, or aiohttp
    allow_eio3: bool = False  # also serve Engine.IO 3 clients (socket.io-client 1.x/2.x)
    allow_v09: bool = False  # also serve socket.io 0.9 clients (protocol 1)
    admin_ui: bool = False
    admin_auth: str = ""  # "user:password", or "none" to serve the Admin UI without a login
    redis_store_09: bool = False  # the master joins a socket.io 0.9 RedisStore fleet
    redis_store_09_roll_call: float = 5.0  # seconds between roll calls of the 0.9 servers

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {self.workers}")
        ports = self.workers if self.worker_ports else 1
        if not 1 <= self.port or self.port + ports - 1 > 65535:
            raise ConfigError(
                f"--port {self.port} with {self.workers} workers and --worker-ports needs "
                f"ports {self.port}..{self.port + ports - 1}, outside 1..65535"
                if self.worker_ports
                else f"--port {self.port} is outside 1..65535"
            )
        try:
            TrustedHosts(self.forwarded_allow_ips)
        except ValueError as exc:
            raise ConfigError(f"--forwarded-allow-ips: {exc}") from None
        if self.proxy_protocol and self.worker_ports:
            raise ConfigError(
                "--proxy-protocol needs the one port (not --worker-ports): the master reads "
                "the header before it hands the connection over"
            )
        if not 0 <= self.metrics_port <= 65535:
            raise ConfigError(f"--metrics-port must be 0..65535, got {self.metrics_port}")
        if self.metrics_port and self.port <= self.metrics_port < self.port + ports:
            raise ConfigError(
                f"--metrics-port {self.metrics_port} collides with "
                + ("a worker port" if self.worker_ports else "--port")
            )
        if not self.patterns or not all(self.patterns):
            raise ConfigError("--pattern needs at least one non-empty pattern")
        if not 1 <= self.max_message_bytes <= MAX_MESSAGE_BYTES_LIMIT:
            raise ConfigError(f"--max-message-bytes must be 1..{MAX_MESSAGE_BYTES_LIMIT}")
        if self.worker_buffer_bytes < self.max_message_bytes:
            raise ConfigError("--worker-buffer-bytes must be at least --max-message-bytes")
        if ":" not in self.app:
            raise ConfigError(f"--app must look like 'module:callable', got {self.app!r}")
        if self.redis_url is not None:
            try:
                check_redis_url(self.redis_url)
            except RedisUrlError as exc:
                raise ConfigError(str(exc)) from None
        if not 1 <= self.node_ttl <= 15:
            raise ConfigError("--node-ttl must be 1..15 seconds")
        if not 0.05 <= self.redis_store_09_roll_call <= 600:
            raise ConfigError("--redis-store-09-roll-call must be 0.05..600 seconds")
        if self.redis_store_09 and self.adapter != "classic":
            raise ConfigError("--redis-store-09 needs --adapter classic (0.9 uses PUBLISH)")
        if self.max_connections < 1:
            raise ConfigError("--max-connections must be at least 1")
        if self.allow_eio3 and self.ws != "own":
            raise ConfigError(
                "--allow-eio3 needs --ws own: the workers' connection layer serves Engine.IO 3,"
                " python-engineio does not"
            )
        if not 0 < self.header_timeout <= 3600:
            raise ConfigError(
                f"--header-timeout must be above 0 and at most 3600 s, got {self.header_timeout}"
            )
        if not 0 < self.partial_packet_timeout <= 3600:
            raise ConfigError("--partial-packet-timeout must be above 0 and at most 3600 s")
        if not 0 < self.partial_packet_bytes <= self.partial_worker_bytes:
            raise ConfigError(
                "--partial-packet-bytes must be above 0 and at most --partial-worker-bytes"
            )
        if not 0 <= self.connection_state_recovery <= 86_400:
            raise ConfigError("--connection-state-recovery must be 0 (off) to 86400 seconds")
        if (
            self.connection_state_recovery
            and self.adapter == "sharded"
            and self.subscription_mode != "static"
        ):
            raise ConfigError(
                "--connection-state-recovery with --adapter sharded needs --subscription-mode "
                "static: a dynamic mode leaves a room's channel when its last socket here goes, "
                "and a socket away for recovery would miss what other hosts send it"
            )
        if self.recovery_buffer_bytes < 1024:
            raise ConfigError("--recovery-buffer-bytes must be at least 1024")
        if self.admin_ui and self.admin_auth != "none" and ":" not in self.admin_auth:
            raise ConfigError(
                "--admin-ui needs --admin-auth USER:PASSWORD (or --admin-auth none to serve "
                "it without a login)"
            )
        if self.ws not in ("own", "aiohttp"):
            raise ConfigError(f"--ws must be own or aiohttp, got {self.ws!r}")
        if self.log_format not in ("text", "json"):
            raise ConfigError(f"--log-format must be text or json, got {self.log_format!r}")
        if self.adapter not in ("classic", "sharded"):
            raise ConfigError(f"--adapter must be classic or sharded, got {self.adapter!r}")
        if self.subscription_mode not in ("static", "dynamic", "dynamic-private"):
            raise ConfigError(
                "--subscription-mode must be static, dynamic or dynamic-private, "
                f"got {self.subscription_mode!r}"
            )
        if not self.adapter_key or self.redis_buffer_bytes < 1:
            raise ConfigError("--adapter-key must not be empty; --redis-buffer-bytes positive")
        if not self.key_prefix:
            raise ConfigError("--key-prefix must not be empty")
        if self.redis_stall_timeout <= 0:
            raise ConfigError("--redis-stall-timeout must be positive")
        if not 0 < self.redis_health_check_interval <= 3600:
            raise ConfigError("--redis-health-check-interval must be above 0 and at most 3600 s")
        if self.graceful_timeout <= 0 or self.worker_health_timeout < 0:
            raise ConfigError("timeouts must be positive (health timeout 0 = off)")

    def admin_credentials(self) -> tuple[str, str] | None:
        """The Admin UI's login, or None when it is served without one."""
        if self.admin_auth == "none":
            return None
        user, _, password = self.admin_auth.partition(":")
        return user, password

    def worker_port(self, worker_id: int) -> int:
        """With ``--worker-ports``, worker ``i`` listens on ``port + i`` so an L4 balancer
        can front them; without, every worker serves ``port`` through the master."""
        return self.port + worker_id if self.worker_ports else self.port

    def to_json(self) -> str:
        """The form a worker receives in its environment (see :meth:`from_json`)."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Config:
        """The same typed, validated Config the master has, in a worker process."""
        values: dict[str, Any] = json.loads(text)
        known = {f.name: f for f in fields(cls)}
        unknown = values.keys() - known.keys()
        if unknown:
            raise ConfigError(f"unknown configuration keys {sorted(unknown)}")
        for name, value in values.items():
            if str(known[name].type).startswith("tuple") and isinstance(value, list):
                values[name] = tuple(value)  # JSON has no tuples
        return cls(**values)
