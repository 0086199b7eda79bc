"""The messages of a recovery handover between our masters (connection state recovery across
hosts), on channels Node servers never read.

A client comes back on host B with the pid and offset its socket had on host A. B publishes
a request on the namespace's masters channel (``socket.io-masters#<nsp>#``, subscribed by
our masters only); every master answers on B's own response channel, and the one whose
offsets these are (A) answers with the session and what it missed. Both are msgpack maps
with ``type`` ``"sio-cluster:handover"``. What comes from Redis is checked field by field:
a malformed answer is no answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sio_cluster.master.bus.classic_wire import pack
from sio_cluster.master.recovery.log import Outcome, Restoration, Session
from sio_cluster.wire.frames import is_parts, is_room

HANDOVER = "sio-cluster:handover"


@dataclass(frozen=True)
class HandoverRequest:
    uid: str  # the asking master's
    request_id: str
    pid: str
    offset: str


@dataclass(frozen=True)
class HandoverAnswer:
    """``outcome`` None: the answering host never gave these offsets."""

    outcome: Outcome | None
    session: Session | None = None
    missed: Sequence[Sequence[str | bytes]] = ()


def encode_request(uid: str, request_id: str, pid: str, offset: str) -> bytes:
    return pack(
        {"type": HANDOVER, "uid": uid, "requestId": request_id, "pid": pid, "offset": offset}
    )


def read_request(message: Any) -> HandoverRequest | None:
    """The handover request ``message`` (a decoded map) holds, or None."""
    if not isinstance(message, dict) or message.get("type") != HANDOVER:
        return None
    uid, request_id = message.get("uid"), message.get("requestId")
    pid, offset = message.get("pid"), message.get("offset")
    if not (
        isinstance(uid, str)
        and isinstance(request_id, str)
        and isinstance(pid, str)
        and isinstance(offset, str)
    ):
        return None
    return HandoverRequest(uid, request_id, pid, offset)


def encode_answer(request_id: str, outcome: Outcome | None, found: Restoration | None) -> bytes:
    body: dict[str, Any] = {
        "type": HANDOVER,
        "requestId": request_id,
        "outcome": None if outcome is None else outcome.value,
    }
    if found is not None:
        session = found.session
        body |= {
            "sid": session.sid,
            "pid": session.pid,
            "rooms": list(session.rooms),
            "data": session.data,
            "missed": found.missed,
        }
    return pack(body)


def read_answer(namespace: str, message: Any) -> HandoverAnswer | None:
    """The handover answer ``message`` holds, or None if it is not a well-formed one."""
    if not isinstance(message, dict) or message.get("type") != HANDOVER:
        return None
    try:
        outcome = None if message.get("outcome") is None else Outcome(message["outcome"])
    except ValueError:
        return None
    if outcome is not Outcome.RECOVERED:
        return HandoverAnswer(outcome)
    sid, pid, rooms = message.get("sid"), message.get("pid"), message.get("rooms")
    data, missed = message.get("data"), message.get("missed")
    if not (
        isinstance(sid, str)
        and isinstance(pid, str)
        and isinstance(rooms, list)
        and all(is_room(room) for room in rooms)
        and (data is None or isinstance(data, bytes))
        and isinstance(missed, list)
        and all(is_parts(parts) for parts in missed)
    ):
        return None
    session = Session(namespace, sid, pid, tuple(rooms), data, 0.0)
    return HandoverAnswer(outcome, session, missed)
