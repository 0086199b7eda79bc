"""The --redis-url forms: plain URLs pass through, Sentinel URLs are read, bad ones named."""

from __future__ import annotations

import pytest

from master.config import Config, ConfigError
from master.redis_topology import OneRedis
from master.redis_url import RedisUrlError, SentinelUrl, check_redis_url, parse_sentinel_url


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
        ("redis+cluster://h:1", "not supported yet"),
        ("http://h:1", "must start with redis://"),
    ],
)
def test_bad_urls_are_one_line_errors(url: str, message: str) -> None:
    with pytest.raises(RedisUrlError, match=message):
        check_redis_url(url)
    with pytest.raises(ConfigError, match=message):
        Config(redis_url=url)


def test_plain_urls_pass_and_passwords_stay_out_of_logs() -> None:
    for url in ("redis://h:1/0", "rediss://h:1", "unix:///tmp/r.sock"):
        check_redis_url(url)
    assert OneRedis("redis://user:secret@h:1/0").describe == "redis://user:***@h:1/0"
