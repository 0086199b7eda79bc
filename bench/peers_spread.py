"""Ours through the one port against ours on worker ports, over several ``bench/peers.py`` runs.

One run of ``bench/peers.py`` interleaves the systems (ours on worker ports, ours on the one
port, python-socketio, Node), so a burst of load from elsewhere on a shared machine hits
neighbours rather than one variant. This reads the JSON of several runs and prints, for each
scenario and measure, each of our two layouts' ratio to Node and to python-socketio (the
median over the runs, and the lowest and highest: the spread), and one port against worker
ports. Nothing is measured here.

    for i in 1 2 3; do python bench/peers.py --out /tmp/peers-$i; done
    python bench/peers_spread.py /tmp/peers-{1,2,3}/peers.json [--out /tmp/peers-spread]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # python bench/peers_spread.py

from bench.harness import markdown_table, write_json  # noqa: E402
from bench.peers import SCENARIOS  # noqa: E402

PORTS, ONE_PORT = "ours", "ours one-port"
PEERS = ("node", "python-socketio")
# measure -> True when higher is better (a ratio above 1 is then ours ahead)
MEASURES = {
    "delivered_per_s": True,
    "streamed_per_s": True,
    "cpu_ms_per_1k": False,  # the servers' CPU per delivery: the least noisy of the four
    "p99_ms": False,
}


def ratio(runs: list[dict[str, Any]], a: str, b: str, scenario: str, measure: str) -> list[float]:
    """``a`` / ``b`` in every run holding both."""
    values = []
    for run in runs:
        systems = run["systems"]
        if a in systems and b in systems:
            x = systems[a]["scenarios"][scenario][measure]
            y = systems[b]["scenarios"][scenario][measure]
            if y:
                values.append(x / y)
    return values


def spread(values: list[float]) -> str:
    """``median (low-high)``, or ``-`` without values."""
    if not values:
        return "-"
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="peers.json of each run")
    parser.add_argument("--out", default="bench-results", help="folder for peers_spread.json")
    args = parser.parse_args()
    runs = [json.loads(path.read_text()) for path in args.runs]
    header = ["scenario", "measure", *(f"{o} / {p}" for o in (PORTS, ONE_PORT) for p in PEERS)]
    header.append("one port / worker ports")
    rows, data = [], {}
    for scenario in SCENARIOS:
        for measure in MEASURES:
            pairs = [(o, p) for o in (PORTS, ONE_PORT) for p in PEERS] + [(ONE_PORT, PORTS)]
            ratios = {f"{a} / {b}": ratio(runs, a, b, scenario, measure) for a, b in pairs}
            data[f"{scenario} {measure}"] = ratios
            rows.append([scenario, measure, *(spread(v) for v in ratios.values())])
    print(
        f"{len(runs)} runs; median (lowest-highest) of each ratio; for cpu_ms_per_1k and p99_ms "
        "lower is better\n"
    )
    print(markdown_table(header, rows))
    print(f"\nJSON: {write_json(args.out, 'peers_spread', data)}")


if __name__ == "__main__":
    main()
