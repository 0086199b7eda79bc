"""The set-based socket/room key schema, in one place.

Legacy keys (socket.io-redis fork 0.1.x, read by existing tools), prefix ``P``
(``--key-prefix``, default ``socket.io``):

- ``P#<sid>``: SET of a connected socket of the default namespace: its own sid
  plus the name of every room it is in.
- ``P#<room>``: SET of the sids in that room; Redis deletes it with its last member.

Other namespaces, which the legacy store did not separate, are kept apart by
inserting the namespace: ``P#/chat#<sid>`` and ``P#/chat#<room>``.

Our bookkeeping, outside the ``P#`` key space so no room name can collide with it:

- ``P:node:<node_id>``: a master's heartbeat (STRING of JSON info with a TTL,
  ``--node-ttl``); a node whose heartbeat has expired is dead.
- ``P:owners``: HASH socket key -> node id of the master that holds the socket.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Schema:
    """Key names for one prefix."""

    prefix: str = "socket.io"

    def room_prefix(self, namespace: str) -> str:
        """What a room or sid name is appended to, for ``namespace``."""
        if namespace == "/":
            return f"{self.prefix}#"
        return f"{self.prefix}#{namespace}#"

    def room_key(self, namespace: str, room: str) -> str:
        return self.room_prefix(namespace) + room

    def socket_key(self, namespace: str, sid: str) -> str:
        return self.room_prefix(namespace) + sid

    def node_key(self, node_id: str) -> str:
        return f"{self.prefix}:node:{node_id}"

    @property
    def node_key_prefix(self) -> str:
        return f"{self.prefix}:node:"

    @property
    def owners_key(self) -> str:
        return f"{self.prefix}:owners"

    @property
    def scan_pattern(self) -> str:
        """Matches every socket and room key (and nothing of our bookkeeping)."""
        return _glob_escape(self.prefix) + "#*"

    def split(self, key: str) -> tuple[str, str] | None:
        """``(room_prefix, id)`` of a socket/room key, or None if not one of ours."""
        head = f"{self.prefix}#"
        if not key.startswith(head):
            return None
        rest = key[len(head) :]
        if rest.startswith("/"):
            namespace, sep, name = rest.partition("#")
            if sep and name:
                return f"{head}{namespace}#", name
        return head, rest


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
