"""Cluster operations carried out on this host's workers, and combined with other hosts'.

The routing table says which workers hold matching sockets, so an operation goes
only to them, and their answers are combined into ONE answer (the shape a single
python-socketio server would give). :class:`HostOperations` is this host's part;
it serves both a worker's request and another host's (see
:mod:`master.bus.core`). :class:`ClusterOperations` adds the other hosts'
part for a worker's request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

from sio_cluster.master.routing.router import RoutingTable
from sio_cluster.master.supervisor import WorkerPool
from sio_cluster.wire.operations import (
    ClusterOperation,
    DisconnectSockets,
    EmitWithAck,
    FetchSockets,
    JoinRooms,
    LeaveRooms,
    ServerEmit,
)

log = logging.getLogger(__name__)

WORKER_TIMEOUT = 5.0


class RemoteHosts(Protocol):
    """The part of the cluster bus that asks other hosts (see :mod:`master.bus.core`)."""

    async def request(self, operation: ClusterOperation) -> Any: ...


class HostOperations:
    """Carries out an operation on this host's sockets; one answer for the host."""

    def __init__(self, table: RoutingTable, workers: WorkerPool) -> None:
        self.table = table
        self.workers = workers

    async def on_host(self, operation: ClusterOperation, origin: int | None = None) -> Any:
        """This host's answer; ``origin`` (a worker) is left out of server-side emits."""
        match operation:
            case EmitWithAck(namespace, sid, _, timeout):
                owners = self.table.route(namespace, [sid])
                if not owners:
                    raise KeyError(f"no socket {sid!r} here")
                return await self.workers.call(owners[0], operation, timeout + 1)
            case ServerEmit():
                targets = [w for w in self.workers.alive() if w != origin]
                return await self._fan_out(targets, operation)
            case JoinRooms() | LeaveRooms() | DisconnectSockets() | FetchSockets():
                selector = operation.selector
                targets = self.table.route(operation.namespace, selector.rooms, selector.exclude)
                return await self._fan_out(targets, operation)
        raise ValueError(f"unknown operation {operation!r}")

    async def _fan_out(self, workers: list[int], operation: ClusterOperation) -> Any:
        results = await asyncio.gather(
            *(self.workers.call(w, operation, WORKER_TIMEOUT) for w in workers),
            return_exceptions=True,
        )
        good = []
        for worker, result in zip(workers, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("worker %d could not %s: %s", worker, operation.OPERATION.name, result)
            else:
                good.append(result)
        return operation.combine(good)


class ClusterOperations:
    """A worker's request, answered for the whole cluster: this host, then the others."""

    def __init__(
        self,
        host: HostOperations,
        remote: RemoteHosts,
        legacy_sockets: Callable[[FetchSockets], list[Any]] | None = None,
    ) -> None:
        """``legacy_sockets``: the sockets of a 0.9 fleet a fetch also lists (--redis-store-09,
        None without), which no 0.9 server can be asked for."""
        self.host = host
        self.remote = remote
        self.legacy_sockets = legacy_sockets

    async def handle(self, origin: int, operation: ClusterOperation) -> Any:
        match operation:
            case EmitWithAck():
                try:
                    return await self.host.on_host(operation)
                except KeyError:
                    return await self.remote.request(operation)
            case ServerEmit():
                local = await self.host.on_host(operation, origin)
                return operation.combine([local, await self.remote.request(operation)])
            case JoinRooms() | LeaveRooms() | DisconnectSockets() if operation.single_sid:
                local = await self.host.on_host(operation)
                if local:
                    return local  # a socket lives on one host only: found here, done
                return await self.remote.request(operation)
            case FetchSockets():
                local = await self.host.on_host(operation)
                answers = [local, await self.remote.request(operation)]
                if self.legacy_sockets is not None:
                    answers.append(self.legacy_sockets(operation))
                return operation.combine(answers)
            case _:  # this host, then the others, combined
                local = await self.host.on_host(operation)
                return operation.combine([local, await self.remote.request(operation)])
