"""Cluster operations requested by a worker, carried out on this host's workers.

The routing table says which workers hold matching sockets, so a request goes
only to them, and their answers are combined into ONE answer: the same shape a
single python-socketio server would give. Other hosts answer for their own
sockets through :class:`master.cluster_bus.ClusterBus` when one is attached.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Protocol

from master.router import RoutingTable
from master.supervisor import WorkerHandle
from wire.rpc import RpcError

if TYPE_CHECKING:
    from master.supervisor import Supervisor

log = logging.getLogger(__name__)

WORKER_TIMEOUT = 5.0
FANOUT_OPERATIONS = frozenset({"join", "leave", "disconnect", "fetch"})


class RemoteHosts(Protocol):
    """The part of the cluster bus that asks other hosts (see :mod:`master.cluster_bus`)."""

    async def request(self, operation: str, args: dict[str, Any]) -> Any: ...


def combine(operation: str, results: list[Any]) -> Any:
    """Counts add up; fetched socket lists concatenate."""
    if operation == "fetch":
        return [socket for sockets in results for socket in sockets]
    return sum(int(r) for r in results)


class HostOperations:
    """Answers a worker's request; the answer covers the whole cluster."""

    def __init__(self, table: RoutingTable, supervisor: Supervisor) -> None:
        self.table = table
        self.supervisor = supervisor
        self.remote: RemoteHosts | None = None

    async def handle(self, origin: WorkerHandle, operation: str, args: dict[str, Any]) -> Any:
        namespace = args.get("namespace")
        if not isinstance(namespace, str):
            raise ValueError("a request needs a namespace")
        if operation in FANOUT_OPERATIONS:
            local = await self.on_workers(operation, args)
            if self.remote is None or (args.get("single_sid") and local):
                return local  # a socket lives on one host only: found here, done
            return combine(operation, [local, await self.remote.request(operation, args)])
        if operation == "emit_ack":
            owners = self.table.route(namespace, [args["sid"]])
            if owners:
                return await self._call(owners[0], operation, args, float(args["ack_timeout"]) + 1)
            if self.remote is not None:
                return await self.remote.request(operation, args)
            raise KeyError(f"no socket {args['sid']!r} in the cluster")
        if operation == "server_emit":
            workers = [w for w, h in self.supervisor.handles.items() if h.alive and h is not origin]
            local = await self._fan_out(workers, operation, args)
            if self.remote is None:
                return local
            return local + int(await self.remote.request(operation, args))
        raise ValueError(f"unknown operation {operation!r}")

    async def server_emit_here(self, namespace: str, event: str, args: list[Any]) -> int:
        """Run the server-event handlers of every worker of this host."""
        workers = [w for w, h in self.supervisor.handles.items() if h.alive]
        request = {"namespace": namespace, "event": event, "args": args}
        return int(await self._fan_out(workers, "server_emit", request))

    async def emit_ack_here(
        self, namespace: str, sid: str, data: list[Any], timeout: float
    ) -> list[Any]:
        """Emit to a socket of this host and return its ack."""
        owners = self.table.route(namespace, [sid])
        if not owners:
            raise KeyError(f"no socket {sid!r} here")
        request = {"namespace": namespace, "sid": sid, "data": data, "ack_timeout": timeout}
        ack: list[Any] = await self._call(owners[0], "emit_ack", request, timeout + 1)
        return ack

    async def on_workers(self, operation: str, args: dict[str, Any]) -> Any:
        """Run a selector operation on this host's workers that hold matching sockets."""
        workers = self.table.route(args["namespace"], args["rooms"], args["exclude"])
        return await self._fan_out(workers, operation, args)

    async def _fan_out(self, workers: list[int], operation: str, args: dict[str, Any]) -> Any:
        results = await asyncio.gather(
            *(self._call(w, operation, args, WORKER_TIMEOUT) for w in workers),
            return_exceptions=True,
        )
        good = []
        for worker, result in zip(workers, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("worker %d could not %s: %s", worker, operation, result)
            else:
                good.append(result)
        return combine(operation, good)

    async def _call(self, worker: int, operation: str, args: dict[str, Any], timeout: float) -> Any:
        handle = self.supervisor.handles.get(worker)
        if handle is None or not handle.alive or handle.rpc is None:
            raise RpcError(f"worker {worker} is not running")
        return await handle.rpc.call(operation, args, timeout)
