"""What this master knows of the 0.9 fleet: its clients' memberships and its servers' lives.

Pure (no I/O): kept from the ``join``/``leave``/``disconnect-remote`` messages the 0.9 servers
publish, the way every 0.9 server keeps its own ``manager.rooms``, so our ``fetch_sockets``
can list 0.9 clients and a broadcast to several rooms can tell each 0.9 server whom the
earlier rooms reached already.

A client belongs to the server (node id) that published its last join; a server is alive
while it is heard from (any message, and the roll call every server answers): one silent for
longer than the timeout is lost, and its clients with it (see master.store09.bridge).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

NodeId = str | int


@dataclass
class Client:
    """One 0.9 client: the server holding it and the endpoints it is in."""

    node: NodeId
    endpoints: set[str] = field(default_factory=set)


class FleetView:
    """0.9 clients by id and by endpoint, and when each 0.9 server was last heard from."""

    def __init__(self) -> None:
        self.clients: dict[str, Client] = {}
        self.members: dict[str, set[str]] = {}  # endpoint -> client ids
        self.heard: dict[NodeId, float] = {}  # node -> when last heard from

    def heard_from(self, node: NodeId, now: float) -> None:
        """A message from ``node``: it is alive."""
        self.heard[node] = now

    def heard_all(self, now: float) -> None:
        """Every server's silence restarts from ``now`` (a time nobody could be heard in)."""
        for node in self.heard:
            self.heard[node] = now

    def join(self, node: NodeId, client_id: str, endpoint: str) -> None:
        client = self.clients.get(client_id)
        if client is None:
            client = self.clients[client_id] = Client(node)
        client.node = node
        client.endpoints.add(endpoint)
        self.members.setdefault(endpoint, set()).add(client_id)

    def leave(self, client_id: str, endpoint: str) -> None:
        client = self.clients.get(client_id)
        if client is None:
            return
        client.endpoints.discard(endpoint)
        self._unlist(client_id, endpoint)

    def drop(self, client_id: str) -> bool:
        """Forget a client (it disconnected); True if it was known."""
        client = self.clients.pop(client_id, None)
        if client is None:
            return False
        for endpoint in client.endpoints:
            self._unlist(client_id, endpoint)
        return True

    def _unlist(self, client_id: str, endpoint: str) -> None:
        members = self.members.get(endpoint)
        if members is not None:
            members.discard(client_id)
            if not members:
                del self.members[endpoint]

    def silent(self, now: float, timeout: float) -> list[NodeId]:
        """The servers not heard from for longer than ``timeout``."""
        return [node for node, when in self.heard.items() if now - when > timeout]

    def drop_node(self, node: NodeId) -> list[str]:
        """Forget a lost server and its clients; the ids of those clients."""
        self.heard.pop(node, None)
        gone = [cid for cid, client in self.clients.items() if client.node == node]
        for client_id in gone:
            self.drop(client_id)
        return gone

    def ids_in(self, endpoints: Iterable[str]) -> set[str]:
        """The clients in any of ``endpoints``."""
        found: set[str] = set()
        for endpoint in endpoints:
            found |= self.members.get(endpoint, set())
        return found
