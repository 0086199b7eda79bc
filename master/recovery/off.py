"""Connection state recovery switched off: null objects with the interfaces of the real ones.

Why (uvicorn's ``lifespan/on.py`` and ``off.py``): the hot path (the fanout, the buses,
the master's handlers) calls the same methods whether recovery is on or off, and never
asks which. :class:`NullRecovery` stands for :class:`master.recovery.host.HostRecovery`,
:class:`NoPacketLog` for :class:`master.recovery.log.RecoveryLog` in the fanout, and
:data:`NO_HANDOVERS` is what a bus answers other hosts' handovers with.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from prometheus_client import Counter

from sio_cluster.master.recovery.handover_wire import HandoverRequest
from sio_cluster.master.recovery.log import Outcome, Restoration, Room
from sio_cluster.wire.frames import HEADER, Broadcast, RecoveryFrame

if TYPE_CHECKING:
    from sio_cluster.master.bus.core import HostBus
    from sio_cluster.master.routing.fanout import Fanout, Parts

log = logging.getLogger(__name__)


class HandoverPeer(Protocol):
    """What a bus asks of recovery: answer another host's handover, note our own echo."""

    def answer_handover(
        self, namespace: str, request: HandoverRequest
    ) -> tuple[Outcome | None, Restoration | None]: ...

    def echoed(self, body: bytes) -> None: ...


class PacketLog(Protocol):
    """What the fanout asks of the recovery log (:class:`master.recovery.log.RecoveryLog`)."""

    def wanted(self, namespace: str, rooms: Sequence[Room] | None) -> bool: ...

    def log_packet(
        self,
        namespace: str,
        rooms: Sequence[Room] | None,
        exclude: Sequence[Room],
        parts: Parts | Callable[[], Parts],
        routed: bool,
        own: bool,
    ) -> tuple[Parts | Callable[[], Parts], int | None]: ...


class Recovery(HandoverPeer, Protocol):
    """What the master asks of recovery (:class:`master.recovery.host.HostRecovery`)."""

    @property
    def log(self) -> PacketLog: ...

    def hand_over_through(self, bus: HostBus) -> None: ...

    def on_frame(self, worker: int, frame: RecoveryFrame) -> None: ...

    def socket_left(self, namespace: str, sid: str) -> None: ...

    def worker_lost(self, sockets: Mapping[tuple[str, str], Iterable[Room]]) -> None: ...

    def deliver_own(
        self, fanout: Fanout, worker: int, broadcast: Broadcast, body: bytes
    ) -> int | None: ...

    def published(self, seq: int | None, body: bytes | None) -> None: ...


class NoHandovers:
    """Another host's handover, with recovery off: these offsets were never ours."""

    def answer_handover(
        self, namespace: str, request: HandoverRequest
    ) -> tuple[Outcome | None, Restoration | None]:
        return None, None

    def echoed(self, body: bytes) -> None:
        """Nothing waits for our own broadcasts to come back."""


NO_HANDOVERS = NoHandovers()


class NoPacketLog:
    """Nothing is stamped or kept: every packet goes out as it came."""

    def wanted(self, namespace: str, rooms: Sequence[Room] | None) -> bool:
        return False

    def log_packet(
        self,
        namespace: str,
        rooms: Sequence[Room] | None,
        exclude: Sequence[Room],
        parts: Parts | Callable[[], Parts],
        routed: bool,
        own: bool,
    ) -> tuple[Parts | Callable[[], Parts], int | None]:
        return parts, None


NO_PACKET_LOG = NoPacketLog()


class NullRecovery(NoHandovers):
    """Recovery off: the master's calls cost nothing, and a worker's recovery frame is
    counted as a bad frame (a worker asks only when the master told it recovery is on)."""

    def __init__(self, bad_frames: Counter) -> None:
        self.log = NO_PACKET_LOG
        self._bad_frames = bad_frames

    def hand_over_through(self, bus: HostBus) -> None:
        """Other hosts' handovers are answered by :data:`NO_HANDOVERS` already."""

    def on_frame(self, worker: int, frame: RecoveryFrame) -> None:
        self._bad_frames.inc()
        log.error("a worker sent %s, but recovery is off", type(frame).__name__)

    def socket_left(self, namespace: str, sid: str) -> None:
        """No session is kept."""

    def worker_lost(self, sockets: Mapping[tuple[str, str], Iterable[Room]]) -> None:
        """No session is kept."""

    def deliver_own(
        self, fanout: Fanout, worker: int, broadcast: Broadcast, body: bytes
    ) -> int | None:
        """The worker delivered its broadcast to its own sockets: the others get its frame
        forwarded as it came."""
        fanout.deliver(
            broadcast.namespace,
            broadcast.rooms,
            broadcast.exclude,
            broadcast.parts,
            skip_worker=worker,
            frame=HEADER.pack(len(body)) + body,
        )
        return None

    def published(self, seq: int | None, body: bytes | None) -> None:
        """Nothing was logged."""
