"""Which failures at the first contact with Redis end the start (refusals) and which are
waited out (outages)."""

from __future__ import annotations

import ssl

import pytest
from redis.exceptions import AuthenticationError, NoPermissionError
from redis.exceptions import ConnectionError as RedisConnectionError

from sio_cluster.master.first_contact import refusal
from sio_cluster.master.pubsub.resp import SubscriberError


def _caused(exc: BaseException, cause: BaseException) -> BaseException:
    exc.__cause__ = cause
    return exc


@pytest.mark.parametrize(
    ("exc", "words"),
    [
        (AuthenticationError("invalid username-password pair"), "authentication refused"),
        (AuthenticationError("Authentication required."), "authentication refused"),
        (
            SubscriberError("Redis refused 'AUTH': WRONGPASS invalid username-password pair"),
            "authentication refused",
        ),
        (
            SubscriberError("Redis refused 'PING': NOAUTH Authentication required."),
            "authentication",
        ),
        (NoPermissionError("this user has no permissions to run the 'ping' command"), "the ACL"),
        (
            SubscriberError("Redis refused 'PSUBSCRIBE': NOPERM this user has no permissions"),
            "the ACL refuses",
        ),
        (
            SubscriberError(
                "Redis refused 'SSUBSCRIBE': ERR unknown command 'SSUBSCRIBE', with args "
                "beginning with: 'socket.io#/#'"
            ),
            "--adapter sharded needs Redis >= 7",
        ),
        (
            SubscriberError("cannot connect: [SSL: CERTIFICATE_VERIFY_FAILED] unable to get"),
            "TLS certificate is not trusted",
        ),
        (
            _caused(RedisConnectionError("Error 1 connecting"), ssl.SSLCertVerificationError()),
            "TLS certificate is not trusted",
        ),
    ],
)
def test_a_refusal_is_named(exc: BaseException, words: str) -> None:
    reason = refusal(exc)
    assert reason is not None and words in reason, reason


@pytest.mark.parametrize(
    "exc",
    [
        RedisConnectionError("Error 111 connecting to 127.0.0.1:6390. Connection refused."),
        SubscriberError("cannot connect: [Errno 111] Connection refused"),
        SubscriberError("connection closed"),
        SubscriberError("Redis refused 'SSUBSCRIBE': MOVED 12539 127.0.0.1:7002"),
        TimeoutError(),
        ConnectionResetError(104, "Connection reset by peer"),
    ],
)
def test_an_outage_is_not_a_refusal(exc: BaseException) -> None:
    assert refusal(exc) is None
