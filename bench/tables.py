"""``python bench/tables.py bench-results/peers.json [...] [--charts]``: the Markdown tables
(and with ``--charts`` the PNG charts) of benchmark JSON files you produced, as the
documentation shows the measured ones.

Each benchmark writes ``bench-results/<name>.json`` (not committed: it is output) and prints
its tables with its own renderer; this reads the JSON back and calls that same renderer, so a
run made elsewhere can be compared with docs/benchmarks.md line by line.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # python bench/tables.py

# the JSON file's name -> the module and function that print its tables
RENDERERS = {
    "peers": ("bench.peers", "table"),
    "scaling": ("bench.scaling", "tables"),
    "hot_path": ("bench.hot_path", "table"),
    "ten_thousand": ("bench.ten_thousand_report", "tables"),
}

# the JSON file's name -> the module and function that draw its chart (needs the bench extra)
CHARTS = {
    "peers": ("bench.peers", "chart"),
    "scaling": ("bench.scaling_chart", "chart"),
}


def renderer_for(path: Path) -> Callable[[dict[str, Any]], str]:
    """The renderer of the benchmark that wrote ``path`` (named ``<benchmark>.json``)."""
    if path.stem not in RENDERERS:
        known = ", ".join(f"{name}.json" for name in RENDERERS)
        raise SystemExit(f"{path}: not a benchmark output this knows ({known})")
    module, function = RENDERERS[path.stem]
    render: Callable[[dict[str, Any]], str] = getattr(importlib.import_module(module), function)
    return render


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", nargs="+", type=Path, help="bench-results/<benchmark>.json")
    parser.add_argument(
        "--charts", action="store_true", help="also draw <benchmark>.png beside each JSON"
    )
    args = parser.parse_args(argv)
    for path in args.json:
        results = json.loads(path.read_text())
        print(f"## {path.name}\n")
        print(renderer_for(path)(results))
        print()
        if args.charts and path.stem in CHARTS:
            module, function = CHARTS[path.stem]
            getattr(importlib.import_module(module), function)(results, path.with_suffix(".png"))
            print(f"chart: {path.with_suffix('.png')}\n")


if __name__ == "__main__":
    main()
