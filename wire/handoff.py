"""The one-port contract between the master and its workers: how a session names its worker.

With one port per host the master accepts every connection and passes it to a worker (see
:mod:`master.acceptor`). A request of an existing engine.io session must reach the worker
that holds the session, and the master reads only the request line, so the session id says
where it lives: every engine.io sid a worker makes starts with its process key and a dot
(``12.Vq3…``). The key is the supervisor's, unique per process and never reused, so a sid of
a dead or replaced process names nobody and its request goes to a serving worker, which
answers "Invalid session" (400) as any engine.io server does: the client starts a new one.
A dot never occurs in engine.io's own ids (url-safe base64) and needs no escaping in a URL.

The connection itself travels over a Unix SOCK_SEQPACKET socketpair per worker, one message
per connection: the byte :data:`CONNECTION` with the descriptor as SCM_RIGHTS, then, when a
trusted balancer named the client (``--proxy-protocol``), its address as ``host port``.
"""

from __future__ import annotations

CONNECTION = b"c"
NO_HANDOFF = -1  # the hand-off descriptor argument of a worker that listens on its own port


def sid_prefix(key: int) -> str:
    """What every engine.io sid of worker process ``key`` starts with."""
    return f"{key}."


def key_of_sid(sid: str) -> int | None:
    """The worker process key a sid names, or None if it names none (not ours, malformed)."""
    head, dot, _ = sid.partition(".")
    if not dot or not head.isdigit() or len(head) > 9 or not head.isascii():
        return None
    return int(head)


def connection_message(source: tuple[str, int] | None) -> bytes:
    """The message a connection travels with; ``source``: the client's, if a balancer said."""
    if source is None:
        return CONNECTION
    host, port = source
    return CONNECTION + f"{host} {port}".encode("ascii")


def source_of(message: bytes) -> tuple[str, int] | None:
    """The client address a hand-off message carries, or None (none, or unreadable)."""
    try:
        text = message[len(CONNECTION) :].decode("ascii")
    except UnicodeDecodeError:
        return None
    host, space, port = text.partition(" ")
    if not space or not port.isdigit() or not host:
        return None
    return host, int(port)
