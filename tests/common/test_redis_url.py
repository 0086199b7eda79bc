"""The --redis-url forms: plain URLs pass through, Sentinel URLs are read, bad ones named."""

from __future__ import annotations

import pytest

from sio_cluster.common.config import Config, ConfigError
from sio_cluster.common.redis.topology import OneRedis, live_primaries
from sio_cluster.common.redis.url import (
    ClusterUrl,
    RedisUrlError,
    SentinelUrl,
    check_redis_url,
    parse_cluster_url,
    parse_sentinel_url,
)


def test_a_sentinel_url_names_sentinels_service_db_and_credentials() -> None:
    url = parse_sentinel_url("redis+sentinel://us%3Aer:p%40ss@10.0.0.1:26379,[::1]:26380/cache/3")
    assert url == SentinelUrl(
        sentinels=(("10.0.0.1", 26379), ("::1", 26380)),
        service="cache",
        db=3,
        username="us:er",
        password="p@ss",
        scheme="redis",
        query="",
    )
    assert url.primary_url("10.0.0.9", 6380) == "redis://us%3Aer:p%40ss@10.0.0.9:6380/3"


def test_tls_and_options_reach_the_primary() -> None:
    url = parse_sentinel_url("rediss+sentinel://h:1/svc?ssl_ca_certs=/ca.pem")
    assert (url.scheme, url.db, url.password) == ("rediss", 0, None)
    assert url.primary_url("::1", 7000) == "rediss://[::1]:7000/0?ssl_ca_certs=/ca.pem"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+sentinel:///svc", "at least one sentinel"),
        ("redis+sentinel://h/svc", "must be host:port"),
        ("redis+sentinel://h:x/svc", "is not a number"),
        ("redis+sentinel://h:0/svc", "outside 1..65535"),
        ("redis+sentinel://h:1", "service name"),
        ("redis+sentinel://h:1/svc/zero", "database 'zero'"),
        ("redis+cluster://h:1/0", "names no database"),
        ("redis+cluster://", "at least one cluster host"),
        ("http://h:1", "must start with redis://"),
        ("redis://127.0.0.1:notaport/0", "could not be cast to integer value as 'notaport'"),
        ("rediss://h:70000/0", "out of range"),
        ("redis://h:1/0?socket_timeout=soon", "Invalid value for 'socket_timeout'"),
    ],
)
def test_bad_urls_are_one_line_errors(url: str, message: str) -> None:
    with pytest.raises(RedisUrlError, match=message):
        check_redis_url(url)
    with pytest.raises(ConfigError, match=message):
        Config(redis_url=url)


def test_a_bad_plain_url_says_so_without_its_password() -> None:
    with pytest.raises(RedisUrlError) as refused:
        check_redis_url("redis://user:secret@h:port/0")
    assert str(refused.value) == (
        "--redis-url redis://user:***@h:port/0: Port could not be cast to integer value as 'port'"
    )


def test_plain_urls_pass_and_passwords_stay_out_of_logs() -> None:
    for url in ("redis://h:1/0", "rediss://h:1", "unix:///tmp/r.sock"):
        check_redis_url(url)
    assert OneRedis("redis://user:secret@h:1/0").describe == "redis://user:***@h:1/0"


def test_a_cluster_url_names_seed_nodes() -> None:
    url = parse_cluster_url("rediss+cluster://:pw@a:7000,b:7001?ssl_cert_reqs=none")
    assert url == ClusterUrl((("a", 7000), ("b", 7001)), None, "pw", "rediss", "ssl_cert_reqs=none")
    assert url.node_url("c", 7002) == "rediss://:pw@c:7002/0?ssl_cert_reqs=none"


def test_the_store_is_accepted_on_a_cluster() -> None:
    config = Config(redis_url="rediss+cluster://:pw@a:7000,b:7001", store=True)
    assert config.store and Config.from_json(config.to_json()) == config


def test_the_subscriber_picks_among_connected_primaries_only() -> None:
    nodes = "\n".join(
        [
            "a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460",
            "b2 127.0.0.1:7001@17001 master,fail - 0 0 2 disconnected 5461-10922",
            "c3 127.0.0.1:7002@17002 slave a1 0 0 3 connected",
            "d4 :0@0 handshake,noaddr - 0 0 0 disconnected",
            "e5 127.0.0.1:7004@17004 master - 0 0 4 connected 10923-16383",
        ]
    )
    assert live_primaries(nodes) == [("127.0.0.1", 7000), ("127.0.0.1", 7004)]
