"""Socket.IO packets whose shape python-socketio would choke on, found without decoding them.

Why: python-socketio decodes an EVENT and then indexes its payload; ``2`` (no payload),
``2[]`` and ``2{}`` raise TypeError, IndexError or KeyError from inside it, and engine.io
logged one traceback per packet (2,000 packets ``42`` wrote 1.8 MB of log in 0.78 s) while
the connection stayed open. Node's socket.io-parser refuses such a payload as invalid and
closes the connection; so do we. Only the first characters are read: the payload is not
decoded twice on the hot path, and malformed JSON is left to the decoder (a ValueError the
caller already turns into a refusal).
"""

from __future__ import annotations

_WHITESPACE = " \t\r\n"


def shape_problem(data: str) -> str | None:
    """Why the Socket.IO packet ``data`` cannot be an event or an ack, or None."""
    kind = data[:1]
    if kind not in ("2", "3", "5", "6"):
        return None
    i = 1
    if kind in ("5", "6"):
        dash = data.find("-", 1)
        if dash < 0:
            return None  # no attachment count: python-socketio refuses it (ValueError)
        i = dash + 1
    if data.startswith("/", i):
        comma = data.find(",", i)
        i = len(data) if comma < 0 else comma + 1
    end = len(data)
    while i < end and data[i].isdigit():  # the ack id
        i += 1
    while i < end and data[i] in _WHITESPACE:
        i += 1
    if i == end or data[i] != "[":
        return "an event without a payload array" if kind in ("2", "5") else "an ack without args"
    if kind in ("2", "5"):
        i += 1
        while i < end and data[i] in _WHITESPACE:
            i += 1
        if i < end and data[i] == "]":
            return "an event without a name"
    return None
