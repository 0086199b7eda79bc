"""Rate-limited logging and configuration validation (pure logic)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from sio_cluster.common.config import Config, ConfigError
from sio_cluster.common.ratelimit import RateLimitedLogger


def test_one_line_per_key_per_interval_then_the_held_back_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    limiter = RateLimitedLogger(logging.getLogger("t"), interval=10, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING):
        assert limiter.log(logging.WARNING, "a", "bad %s", 1)
        assert not limiter.log(logging.WARNING, "a", "bad %s", 2)
        assert not limiter.log(logging.WARNING, "a", "bad %s", 3)
        assert limiter.log(logging.WARNING, "b", "other")
        now[0] = 10.0
        assert limiter.log(logging.WARNING, "a", "bad %s", 4)
    assert [r.getMessage() for r in caplog.records] == [
        "bad 1",
        "other",
        "bad 4 (2 similar lines held back)",
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"workers": 0}, "--workers must be at least 1"),
        ({"port": 0}, "outside 1..65535"),
        ({"port": 65535, "workers": 2, "worker_ports": True}, "outside 1..65535"),
        ({"port": 65536, "workers": 2}, "outside 1..65535"),
        ({"metrics_port": 70000}, "--metrics-port must be"),
        ({"metrics_port": 8001, "port": 8000, "workers": 2, "worker_ports": True}, "collides"),
        ({"metrics_port": 8000, "port": 8000, "workers": 2}, "collides with --port"),
        ({"forwarded_allow_ips": "127.0.0.1,localhost"}, "--forwarded-allow-ips"),
        ({"proxy_protocol": True, "worker_ports": True}, "needs the one port"),
        ({"patterns": ()}, "--pattern"),
        ({"patterns": ("",)}, "--pattern"),
        ({"max_message_bytes": 0}, "--max-message-bytes"),
        ({"max_message_bytes": 64 * 1024 * 1024}, "--max-message-bytes"),
        ({"max_message_bytes": 8 * 1024 * 1024 + 1}, "--max-message-bytes"),  # Redis cuts us
        ({"worker_buffer_bytes": 10}, "--worker-buffer-bytes"),
        ({"app": "nocolon"}, "--app must look like"),
        ({"redis_url": "http://x"}, "--redis-url must start"),
        ({"graceful_timeout": 0}, "timeouts"),
        ({"header_timeout": 0}, "--header-timeout"),
        ({"allow_eio3": True, "ws": "aiohttp"}, "--allow-eio3 needs --ws own"),
        ({"redis_health_check_interval": 0}, "--redis-health-check-interval"),
        ({"connection_state_recovery": -1}, "--connection-state-recovery must be"),
        ({"recovery_buffer_bytes": 10}, "--recovery-buffer-bytes"),
        (
            {"connection_state_recovery": 60, "adapter": "sharded"},
            "needs --subscription-mode static",
        ),
    ],
)
def test_bad_configuration_is_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Config(**{"workers": 2, **kwargs})


def test_worker_ports_follow_the_base_port() -> None:
    config = Config(workers=3, port=9000, redis_url="unix:///tmp/r.sock", worker_ports=True)
    assert [config.worker_port(i) for i in range(3)] == [9000, 9001, 9002]


def test_one_port_needs_only_the_base_port() -> None:
    config = Config(workers=3, port=65535, metrics_port=65534)
    assert [config.worker_port(i) for i in range(3)] == [65535, 65535, 65535]


def test_a_worker_gets_the_same_typed_config() -> None:
    config = Config(
        workers=3, port=9000, redis_url="unix:///tmp/r.sock", cors_allowed_origins=("a", "b")
    )
    assert Config.from_json(config.to_json()) == config


def test_a_worker_refuses_a_config_it_does_not_know() -> None:
    with pytest.raises(ConfigError, match="unknown configuration keys"):
        Config.from_json('{"workers": 1, "colour": "blue"}')
    with pytest.raises(ConfigError, match="--workers"):
        Config.from_json('{"workers": 0}')
