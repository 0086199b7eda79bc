"""Where the master's time per ch:* message goes, step by step, in one process.

Why: it explains the master's ceiling next to a bare hiredis reader. The same stream
of ``--messages`` bodies (to one of 200 sids) goes through RESP parsing (hiredis, fed
64 KiB at a time like a socket read), ``ch:*`` parsing and packet encoding, routing
and framing; the table gives microseconds per message for each step.

    python bench/master_path.py --messages 200000
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hiredis
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # python bench/master_path.py

from bench.harness import Options, markdown_table, write_json  # noqa: E402
from sio_cluster.master.routing.messages import Delivery, parse_message  # noqa: E402
from sio_cluster.master.routing.router import RoutingTable  # noqa: E402
from sio_cluster.wire.frames import Broadcast  # noqa: E402


def per_message(count: int, step: Callable[[], Any]) -> float:
    started = time.perf_counter()
    step()
    return (time.perf_counter() - started) / count * 1e6


def main() -> None:
    options = Options(__doc__, quick={"messages": 20_000})
    options.add_argument("--messages", type=int, default=200_000)
    args = options.parse()
    n = args.messages
    table = RoutingTable()
    for i in range(200):
        sid = f"sid{i:019d}"
        table.join(i % 2, "/", sid, None)
        table.join(i % 2, "/", sid, sid)
    bodies = [orjson.dumps({"to": f"sid{i % 200:019d}", "data": {"i": i}}) for i in range(n)]
    stream = b"".join(
        b"*4\r\n$8\r\npmessage\r\n$4\r\nch:*\r\n$8\r\nch:bench\r\n$%d\r\n%s\r\n" % (len(b), b)
        for b in bodies
    )

    def resp() -> None:
        reader = hiredis.Reader()
        for at in range(0, len(stream), 65536):
            reader.feed(stream[at : at + 65536])
            while reader.gets() is not False:
                pass

    deliveries: list[Delivery] = []
    namespaces = frozenset({"/"})
    steps = {
        "RESP parse (hiredis)": resp,
        "ch:* parse + packet encode": lambda: deliveries.extend(
            parse_message("ch:bench", b, "ch:", 1 << 20, namespaces) for b in bodies
        ),
        "route": lambda: [table.route(d.namespace, d.to, d.exclude) for d in deliveries],
        "frame": lambda: [
            Broadcast.build(d.namespace, d.to, d.exclude, [d.packet]) for d in deliveries
        ],
    }
    results = {name: round(per_message(n, step), 2) for name, step in steps.items()}
    print(markdown_table(["step", "us per message"], results.items()))
    write_json(args.out, "master_path", results)


if __name__ == "__main__":
    main()
