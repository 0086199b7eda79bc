"""The chart of ``bench/scaling.py``: its results against N, one line per system (and target).

Apart from the sweep so that matplotlib is imported only when a chart is drawn (the
``bench`` extra), as ``bench/peers.py`` does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

STYLES = {"sid": "-", "room": "--", "all": ":"}
LABELS = {"sid": "to one sid", "room": "to a room", "all": "to everyone"}


def chart(results: dict[str, Any], path: Path) -> None:
    """Server CPU per 1k deliveries, Redis connections and the closed loop's sustained
    deliveries/s, each against N."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["rows"]
    systems = list(dict.fromkeys(row["system"] for row in rows))
    colors = {name: f"C{i}" for i, name in enumerate(systems)}
    fig, (cpu, conns, stream) = plt.subplots(
        1, 3, figsize=(17, 5.5), gridspec_kw={"width_ratios": [1.6, 1, 1]}
    )
    for name in systems:
        for target, style in STYLES.items():
            points = [
                (r["processes"], r["server_cpu_ms_per_1k"])
                for r in rows
                if r["system"] == name and r["target"] == target
            ]
            if points:
                xs, ys = zip(*sorted(points), strict=True)
                cpu.plot(
                    xs, ys, style, marker="o", color=colors[name], label=f"{name}, {LABELS[target]}"
                )
        counted = sorted(
            (r["processes"], r["redis_connections"])
            for r in rows
            if r["system"] == name and r["target"] == "sid"
        )
        if counted:
            xs, ys = zip(*counted, strict=True)
            conns.plot(xs, ys, marker="o", color=colors[name], label=name)
        sustained = sorted(
            (s["processes"], s["deliveries_per_s"])
            for s in results["stream"]
            if s["system"] == name
        )
        if sustained:
            xs, ys = zip(*sustained, strict=True)
            stream.plot(xs, ys, marker="o", color=colors[name], label=name)
    rates = results["rates_per_s"]
    for ax, title in (
        (
            cpu,
            f"server CPU ms per 1k deliveries (fixed rate: {rates['sid']:,.0f}/s to a sid or a "
            f"room, {rates['all']:,.0f}/s to everyone)",
        ),
        (conns, "Redis connections"),
        (stream, f"sustained deliveries/s to one sid (≤{results['window']} in flight)"),
    ):
        ax.set_xscale("log", base=2)
        ax.set_xticks(results["procs"], [str(n) for n in results["procs"]])
        ax.set_xlabel("server processes N")
        ax.set_title(title, fontsize=9)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, ncol=3 if ax is cpu else 1)
    cpu.set_yscale("log")
    before, after = results["load_average_before"][0], results["load_average_after"][0]
    fig.suptitle(
        f"{results['clients']} clients, {results['machine']}, load average {before:.1f} before, "
        f"{after:.1f} after"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
