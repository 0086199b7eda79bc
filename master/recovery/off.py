"""Connection state recovery switched off, as the bus sees it: a null handover peer.

Why (uvicorn's ``lifespan/on.py`` and ``off.py``): a bus answers other hosts' handovers
and notes its own echoes through the same calls whether recovery is on or off, and never
asks which. :data:`NO_HANDOVERS` stands for :class:`master.recovery.host.HostRecovery`.
"""

from __future__ import annotations

from typing import Protocol

from sio_cluster.master.recovery.handover_wire import HandoverRequest
from sio_cluster.master.recovery.log import Outcome, Restoration


class HandoverPeer(Protocol):
    """What a bus asks of recovery: answer another host's handover, note our own echo."""

    def answer_handover(
        self, namespace: str, request: HandoverRequest
    ) -> tuple[Outcome | None, Restoration | None]: ...

    def echoed(self, body: bytes) -> None: ...


class NoHandovers:
    """Another host's handover, with recovery off: these offsets were never ours."""

    def answer_handover(
        self, namespace: str, request: HandoverRequest
    ) -> tuple[Outcome | None, Restoration | None]:
        return None, None

    def echoed(self, body: bytes) -> None:
        """Nothing waits for our own broadcasts to come back."""


NO_HANDOVERS = NoHandovers()
