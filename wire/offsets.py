"""Connection state recovery's offsets, written into encoded Socket.IO packets.

Node's socket.io (4.6+) appends an offset to the data of every EVENT it broadcasts without
an ack; socket.io-client remembers the last one and sends it back when it reconnects, so the
server can replay what it missed. Here the master is the host's sequencer: it stamps each
packet once, after the packet was encoded, so every recipient shares one encoding.

Pure text work: an encoded EVENT is ``2[/nsp,][id][...]`` and a BINARY_EVENT
``5<n>-[/nsp,][id][...]``; the JSON array always ends the text part, so the offset is
spliced in before its closing bracket. Packets with an ack id (and every other type) are
left alone, as Node leaves them.
"""

from __future__ import annotations

from collections.abc import Sequence

Parts = Sequence[str | bytes]


def takes_offset(text: str) -> bool:
    """True for an EVENT or BINARY_EVENT without an ack id, whose data is a JSON array."""
    if not text or text[0] not in "25" or text[-1] != "]":
        return False
    i = 1
    if text[0] == "5":
        dash = text.find("-")
        if dash < 2 or not text[1:dash].isdigit():
            return False
        i = dash + 1
    if text.startswith("/", i):
        comma = text.find(",", i)
        if comma < 0:
            return False
        i = comma + 1
    return text.startswith("[", i)  # a digit here would be an ack id


def stamped(parts: Parts, offset: str) -> list[str | bytes]:
    """``parts`` with ``offset`` as the last argument of the event (see :func:`takes_offset`).

    ``offset`` must need no JSON escaping (our offsets are ``[0-9a-z.]``).
    """
    text = parts[0]
    assert isinstance(text, str)
    separator = "" if text.endswith("[]") else ","
    return [f'{text[:-1]}{separator}"{offset}"]', *parts[1:]]
