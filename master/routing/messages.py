"""Parsing of the ``ch:*`` messages that backend services publish.

Pure: :func:`parse_message` turns a channel and a body into a :class:`Delivery`
(what to send, to whom) or raises :class:`Rejected` with a reason that the
master counts, logs and keeps. The body is parsed once here and the Socket.IO
packet is encoded once here; workers only write the ready packet to sockets.

Format (see README, "The ch:* message format"): a UTF-8 JSON object with the
optional fields ``event``, ``data`` | ``args``, ``to``, ``except``,
``namespace``. Unknown fields are rejected, because a typo such as ``"room"``
for ``"to"`` would otherwise silently broadcast to every socket.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Final, Literal

import orjson

RejectReason = Literal[
    "too_large",
    "invalid_json",
    "not_object",
    "unknown_field",
    "bad_type",
    "bad_event",
    "reserved_event",
    "unknown_namespace",
    "too_deep",
]

ALLOWED_FIELDS: Final = frozenset({"event", "data", "args", "to", "except", "namespace"})
# Names a Socket.IO client reserves for its own lifecycle; Node's server refuses them too.
RESERVED_EVENTS: Final = frozenset(
    {"connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener"}
)
ANY_NAMESPACE: Final = "*"


class Rejected(ValueError):
    """A message that will not be delivered, with a counted reason and a readable detail."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: RejectReason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Delivery:
    """A validated message: the encoded packet and its targets."""

    namespace: str
    to: list[str] | None
    exclude: list[str]
    packet: str


def event_prefix(pattern: str) -> str:
    """The literal head of a glob pattern, stripped from a channel to name the event.

    ``ch:*`` gives ``ch:`` so ``ch:news`` carries the event ``news``.
    """
    for i, char in enumerate(pattern):
        if char in "*?[\\":
            return pattern[:i]
    return pattern


def encode_event_packet(namespace: str, event: str, args: list[Any]) -> str:
    """Encode a Socket.IO EVENT packet exactly as python-socketio writes it."""
    head = "2" if namespace == "/" else f"2{namespace},"
    return head + orjson.dumps([event, *args]).decode()


def _targets(body: dict[str, Any], field: str) -> list[str] | None:
    value = body.get(field)
    if value is None:
        return None
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(i, str) and i for i in items):
        raise Rejected("bad_type", f"'{field}' must be a non-empty string or an array of them")
    return items


def parse_message(
    channel: str,
    body: bytes,
    prefix: str,
    max_bytes: int,
    namespaces: Collection[str] | str,
) -> Delivery:
    """Validate one ``ch:*`` message; raise :class:`Rejected` when it cannot be delivered.

    ``prefix`` is the matching pattern's literal head (see :func:`event_prefix`);
    ``namespaces`` is the set the workers accept, or ``"*"`` for any.
    """
    if len(body) > max_bytes:
        raise Rejected("too_large", f"{len(body)} bytes exceeds the limit of {max_bytes}")
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Rejected("invalid_json", str(exc)) from None
    if not isinstance(message, dict):
        raise Rejected("not_object", f"body is a JSON {type(message).__name__}, not an object")
    unknown = message.keys() - ALLOWED_FIELDS
    if unknown:
        raise Rejected("unknown_field", f"unknown field(s) {sorted(unknown)}")

    event = message.get("event")
    if event is None:
        event = channel[len(prefix) :] if channel.startswith(prefix) else ""
    if not isinstance(event, str) or not event:
        raise Rejected("bad_event", "no event name: the channel has no suffix and no 'event'")
    if event in RESERVED_EVENTS:
        raise Rejected("reserved_event", f"'{event}' is reserved by Socket.IO clients")

    if "data" in message and "args" in message:
        raise Rejected("bad_type", "give either 'data' or 'args', not both")
    if "args" in message:
        args = message["args"]
        if not isinstance(args, list):
            raise Rejected("bad_type", "'args' must be an array")
    elif "data" in message:
        args = [message["data"]]
    else:
        args = []

    namespace = message.get("namespace", "/")
    if not isinstance(namespace, str) or not namespace.startswith("/"):
        raise Rejected("bad_type", "'namespace' must be a string starting with '/'")
    if namespaces != ANY_NAMESPACE and namespace not in namespaces:
        raise Rejected("unknown_namespace", f"no worker serves the namespace {namespace!r}")

    try:
        packet = encode_event_packet(namespace, event, args)
    except orjson.JSONEncodeError as exc:  # nested deeper than orjson writes (254 levels)
        raise Rejected("too_deep", f"the data cannot be encoded again: {exc}") from None
    return Delivery(
        namespace=namespace,
        to=_targets(message, "to"),
        exclude=_targets(message, "except") or [],
        packet=packet,
    )
