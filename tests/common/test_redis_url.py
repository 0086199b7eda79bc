"""The --redis-url forms: plain URLs pass through, Sentinel URLs are read, bad ones named; a
plain URL read for the bare subscriber as redis-py reads it (address, credentials, TLS)."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path

import pytest

from sio_cluster.common.config import Config, ConfigError
from sio_cluster.common.redis.target import parse_redis_url
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
        ("redis://h:1/0?socket_timeout=soon", "Invalid value for .socket_timeout."),
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


def test_redis_urls_are_read_as_redis_py_reads_them() -> None:
    target = parse_redis_url("redis://user:p%40ss@example.com:6380/2")
    assert (target.host, target.port, target.path) == ("example.com", 6380, None)
    assert (target.username, target.password, target.tls) == ("user", "p@ss", None)
    target = parse_redis_url("unix:///tmp/redis.sock?password=pw")
    assert (target.path, target.password, target.tls) == ("/tmp/redis.sock", "pw", None)


def test_rediss_urls_honour_redis_py_tls_options() -> None:
    default = parse_redis_url("rediss://example.com").tls
    assert default is not None
    assert (default.verify_mode, default.check_hostname) == (ssl.CERT_REQUIRED, True)
    lax = parse_redis_url("rediss://example.com?ssl_cert_reqs=none").tls
    assert lax is not None and (lax.verify_mode, lax.check_hostname) == (ssl.CERT_NONE, False)
    named = parse_redis_url("rediss://example.com?ssl_check_hostname=false").tls
    assert named is not None
    assert (named.verify_mode, named.check_hostname) == (ssl.CERT_REQUIRED, False)
    with pytest.raises(ValueError, match="ssl_cert_reqs"):
        parse_redis_url("rediss://example.com?ssl_cert_reqs=sometimes")


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_rediss_urls_load_the_named_certificates(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-subj", "/CN=sio-cluster-test", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    url = f"rediss://example.com?ssl_ca_certs={cert}&ssl_certfile={cert}&ssl_keyfile={key}"
    context = parse_redis_url(url).tls
    assert context is not None
    subjects = [ca["subject"] for ca in context.get_ca_certs()]
    assert ((("commonName", "sio-cluster-test"),),) in subjects
