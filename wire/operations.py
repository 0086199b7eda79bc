"""The cluster operations one server asks the others to carry out: one typed class each.

Why: a worker's ``enter_room`` on another worker's socket, a ``fetch_sockets``
across hosts, an emit waiting for a remote client's ack... travel from a worker
to its master (a :class:`wire.frames.Request`), from the master to the workers
holding matching sockets, and between masters as redis-adapter requests
(:mod:`master.bus.classic_wire` maps each class to its request type, in one place).
Each operation is defined here once, with its wire form and how the answers of
several servers combine into the one answer a single server would give.

Most operations select sockets the way a broadcast does (:class:`Selector`):
the sockets in any of ``rooms`` (``None``: every socket of the namespace) minus
those in any room of ``exclude``. ``single_sid`` marks the per-socket form (the
selector is one sid, and only the server holding it answers).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, ClassVar

from sio_cluster.wire.frames import Room, is_room


class Operation(IntEnum):
    """The operation code carried by a :class:`wire.frames.Request`."""

    JOIN = 1
    LEAVE = 2
    DISCONNECT = 3
    FETCH = 4
    EMIT_WITH_ACK = 5
    SERVER_EMIT = 6


class OperationError(ValueError):
    """A request whose operation code or payload cannot be read."""


def _rooms(value: Any, what: str) -> tuple[Room, ...]:
    if not isinstance(value, list | tuple) or not all(is_room(v) for v in value):
        raise OperationError(f"{what} must be a list of str or int rooms")
    return tuple(value)


def _str(value: Any, what: str) -> str:
    if type(value) is not str:
        raise OperationError(f"{what} must be a string")
    return value


@dataclass(frozen=True, slots=True)
class Selector:
    """Which sockets: in any of ``rooms`` (None: all of the namespace) minus ``exclude``."""

    rooms: tuple[Room, ...] | None = None
    exclude: tuple[Room, ...] = ()

    def to_wire(self) -> list[Any]:
        return [None if self.rooms is None else list(self.rooms), list(self.exclude)]

    @classmethod
    def from_wire(cls, fields: Sequence[Any]) -> Selector:
        rooms, exclude = fields
        return cls(None if rooms is None else _rooms(rooms, "rooms"), _rooms(exclude, "exclude"))


@dataclass(frozen=True, slots=True)
class SocketInfo:
    """One socket as ``fetch_sockets`` returns it (Node's RemoteSocket fields)."""

    id: str
    rooms: tuple[Room, ...]
    handshake: dict[str, Any] = field(default_factory=dict)
    data: Any = field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "rooms": list(self.rooms),
            "handshake": self.handshake,
            "data": self.data,
        }

    @classmethod
    def from_wire(cls, value: Any) -> SocketInfo:
        if not isinstance(value, dict) or type(value.get("id")) is not str:
            raise OperationError("a fetched socket must be a map with an 'id'")
        handshake = value.get("handshake")
        return cls(
            value["id"],
            _rooms(value.get("rooms") or [], "rooms"),
            handshake if isinstance(handshake, dict) else {},
            value.get("data"),
        )


class ClusterOperation:
    """Base of every operation: its code, wire form, and how answers combine."""

    __slots__ = ()
    OPERATION: ClassVar[Operation]
    namespace: str

    def to_wire(self) -> list[Any]:
        raise NotImplementedError

    def combine(self, results: Sequence[Any]) -> Any:
        """One answer from the answers of several servers: counts add up."""
        return sum(int(r) for r in results)


@dataclass(frozen=True, slots=True)
class _Membership(ClusterOperation):
    namespace: str
    selector: Selector
    rooms: tuple[Room, ...]
    single_sid: bool = False

    def to_wire(self) -> list[Any]:
        return [self.namespace, *self.selector.to_wire(), list(self.rooms), self.single_sid]

    @classmethod
    def from_wire(cls, fields: Sequence[Any]) -> Any:
        return cls(
            _str(fields[0], "namespace"),
            Selector.from_wire(fields[1:3]),
            _rooms(fields[3], "rooms"),
            bool(fields[4]),
        )


@dataclass(frozen=True, slots=True)
class JoinRooms(_Membership):
    """Make the selected sockets join ``rooms``; answer: how many sockets."""

    OPERATION = Operation.JOIN


@dataclass(frozen=True, slots=True)
class LeaveRooms(_Membership):
    """Make the selected sockets leave ``rooms``; answer: how many sockets."""

    OPERATION = Operation.LEAVE


@dataclass(frozen=True, slots=True)
class DisconnectSockets(ClusterOperation):
    """Disconnect the selected sockets (``close``: the whole connection); answer: how many."""

    OPERATION = Operation.DISCONNECT
    namespace: str
    selector: Selector
    close: bool = False
    single_sid: bool = False

    def to_wire(self) -> list[Any]:
        return [self.namespace, *self.selector.to_wire(), self.close, self.single_sid]

    @classmethod
    def from_wire(cls, fields: Sequence[Any]) -> DisconnectSockets:
        return cls(
            _str(fields[0], "namespace"),
            Selector.from_wire(fields[1:3]),
            bool(fields[3]),
            bool(fields[4]),
        )


@dataclass(frozen=True, slots=True)
class FetchSockets(ClusterOperation):
    """Describe the selected sockets; answer: a list of :class:`SocketInfo` wire maps.

    ``ids_only``: only ids and rooms are wanted (to count sockets, or to reach each
    one), so no handshake or session is built.
    """

    OPERATION = Operation.FETCH
    namespace: str
    selector: Selector
    ids_only: bool = False

    def to_wire(self) -> list[Any]:
        return [self.namespace, *self.selector.to_wire(), self.ids_only]

    @classmethod
    def from_wire(cls, fields: Sequence[Any]) -> FetchSockets:
        return cls(_str(fields[0], "namespace"), Selector.from_wire(fields[1:3]), bool(fields[3]))

    def combine(self, results: Sequence[Any]) -> list[Any]:
        return [socket for sockets in results for socket in sockets]


@dataclass(frozen=True, slots=True)
class EmitWithAck(ClusterOperation):
    """Emit ``[event, *args]`` to one socket; answer: its ack arguments (a list)."""

    OPERATION = Operation.EMIT_WITH_ACK
    namespace: str
    sid: str
    data: list[Any]
    timeout: float

    def to_wire(self) -> list[Any]:
        return [self.namespace, self.sid, self.data, self.timeout]

    @classmethod
    def from_wire(cls, fields: Sequence[Any]) -> EmitWithAck:
        namespace, sid, data, timeout = fields
        if not isinstance(data, list) or not data or type(data[0]) is not str:
            raise OperationError("data must be [event, *args]")
        if not isinstance(timeout, int | float) or timeout <= 0:
            raise OperationError("timeout must be a positive number")
        return cls(_str(namespace, "namespace"), _str(sid, "sid"), data, float(timeout))


@dataclass(frozen=True, slots=True)
class ServerEmit(ClusterOperation):
    """Run the ``event`` server-event handlers with ``args``; answer: how many servers ran it."""

    OPERATION = Operation.SERVER_EMIT
    namespace: str
    event: str
    args: list[Any]

    def to_wire(self) -> list[Any]:
        return [self.namespace, self.event, self.args]

    @classmethod
    def from_wire(cls, fields: Sequence[Any]) -> ServerEmit:
        namespace, event, args = fields
        if not isinstance(args, list):
            raise OperationError("args must be a list")
        return cls(_str(namespace, "namespace"), _str(event, "event"), args)


OPERATION_CLASSES: dict[Operation, Any] = {
    cls.OPERATION: cls
    for cls in (JoinRooms, LeaveRooms, DisconnectSockets, FetchSockets, EmitWithAck, ServerEmit)
}
WIRE_LENGTHS = {
    Operation.JOIN: 5,
    Operation.LEAVE: 5,
    Operation.DISCONNECT: 5,
    Operation.FETCH: 4,
    Operation.EMIT_WITH_ACK: 4,
    Operation.SERVER_EMIT: 3,
}


def decode_operation(code: int, payload: Any) -> ClusterOperation:
    """The operation a Request carries; raise :class:`OperationError` if unreadable."""
    try:
        operation = Operation(code)
    except ValueError:
        raise OperationError(f"unknown operation {code!r}") from None
    if not isinstance(payload, list) or len(payload) != WIRE_LENGTHS[operation]:
        raise OperationError(f"malformed {operation.name} payload")
    decoded: ClusterOperation = OPERATION_CLASSES[operation].from_wire(payload)
    return decoded
