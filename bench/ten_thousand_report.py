"""The tables of ``bench/ten_thousand.py`` (markdown), and its targets in words."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench.harness import markdown_table

CONNECT_HEADER = (
    "system|clients|connect s|connects/s|failed attempts|RSS idle MiB|RSS connected MiB|"
    "KiB per connection|RSS after broadcasts MiB|Redis RSS MiB"
).split("|")
BROADCAST_HEADER = (
    "system|broadcasts|delivered|duplicates|deliveries/s|p50 ms|p99 ms|max ms|"
    "fan-out ms (median / max)|server CPU ms/1k|crowd CPU cores"
).split("|")
STORM_HEADER = (
    "system|dropped|server listening s|reconnected s (p50 / all)|routed s (p50 / all)|"
    "attempts (mean / max)|failed attempts|misrouted"
).split("|")
LAYOUT_HEADER = (
    "system|connect s (all)|per client ms (p50 / p99)|failed attempts|clients per worker|"
    "master CPU s|HAProxy CPU s|storm: reconnected s (p50 / p99 / all)|"
    "routed s (p50 / p99 / all)|joining attempt ms (p50 / p99)|failed attempts|master CPU s|"
    "HAProxy CPU s"
).split("|")


def layouts(results: dict[str, Any]) -> str | None:
    """The fronts side by side: connect and storm times, failures, the fronts' CPU."""
    rows = []
    for name, s in results["systems"].items():
        if "sockets_by_worker" not in s:
            continue
        if "storm" not in s:
            rows.append([name, f"FAILED ({s.get('failed')})"])
            continue
        c, st = s["connect"], s["storm"]
        rows.append(
            [
                name,
                c["seconds"],
                f"{c['client_p50_ms']} / {c['client_p99_ms']}",
                sum(c["failed_attempts"].values()),
                " / ".join(f"{n:,}" for n in s["sockets_by_worker"]),
                c["cpu"].get("master_s", "-"),
                c["cpu"].get("balancer_s", "-"),
                f"{st['reconnected_p50_s']} / {st['reconnected_p99_s']} / "
                f"{st['all_reconnected_s']}",
                f"{st['routed_p50_s']} / {st['routed_p99_s']} / {st['all_routed_s']}",
                f"{st['last_attempt_p50_ms']} / {st['last_attempt_p99_ms']}",
                sum(st["failed_attempts"].values()),
                st["cpu"].get("master_s", "-"),
                st["cpu"].get("balancer_s", "-"),
            ]
        )
    return markdown_table(LAYOUT_HEADER, rows) if rows else None


def tables(results: dict[str, Any]) -> str:
    """The three phases' tables and the targets, as markdown."""

    def rows(phase: str, cells: Callable[[dict[str, Any]], list[Any]]) -> list[list[Any]]:
        return [
            [name, *cells(s)] if phase in s else [name, f"FAILED ({s.get('failed')})"]
            for name, s in results["systems"].items()
        ]

    connect = rows(
        "memory",
        lambda s: [
            f"{results['clients']:,}",
            s["connect"]["seconds"],
            f"{s['connect']['per_s']:,}",
            sum(s["connect"]["failed_attempts"].values()),
            s["memory"]["idle_mib"],
            s["memory"]["connected_mib"],
            s["memory"]["kib_per_connection"],
            s["memory"].get("after_broadcasts_mib", "-"),
            s["memory"]["redis_mib"],
        ],
    )
    broadcast = rows(
        "broadcast",
        lambda s: [
            f"{s['broadcast']['rate_per_s']:g}/s x {s['broadcast']['messages']}",
            f"{s['broadcast']['delivered']:,}/{s['broadcast']['expected']:,}",
            s["broadcast"]["duplicates"],
            f"{s['broadcast']['deliveries_per_s']:,}",
            s["broadcast"]["p50_ms"],
            s["broadcast"]["p99_ms"],
            s["broadcast"]["max_ms"],
            f"{s['broadcast']['fanout_median_ms']} / {s['broadcast']['fanout_max_ms']}",
            s["broadcast"]["server_cpu_ms_per_1k"],
            s["broadcast"]["crowd_cpu_cores"],
        ],
    )
    storm = rows(
        "storm",
        lambda s: [
            f"{s['storm']['dropped']:,} ({s['storm']['dropped_elsewhere']} elsewhere)",
            s["storm"]["server_back_s"],
            f"{s['storm']['reconnected_p50_s']} / {s['storm']['all_reconnected_s']}",
            f"{s['storm']['routed_p50_s']} / {s['storm']['all_routed_s']}",
            f"{s['storm']['attempts_mean']} / {s['storm']['attempts_max']}",
            sum(s["storm"]["failed_attempts"].values()),
            s["storm"]["misrouted"],
        ],
    )
    front = layouts(results)
    return "\n\n".join(
        [
            *([front] if front else []),
            markdown_table(CONNECT_HEADER, connect),
            markdown_table(BROADCAST_HEADER, broadcast),
            markdown_table(STORM_HEADER, storm),
            "\n".join(f"- {line}" for line in targets(results)),
        ]
    )


def targets(results: dict[str, Any]) -> list[str]:
    """The issue's targets, met or not, in words (never asserted)."""
    ours, node = results["systems"].get("ours", {}), results["systems"].get("node", {})
    lines = []
    if "memory" in ours and "memory" in node:
        a, b = ours["memory"]["kib_per_connection"], node["memory"]["kib_per_connection"]
        lines.append(f"RSS per connection at most Node's: {a} vs {b} KiB: {verdict(a <= b)}")
    if "broadcast" in ours:
        p99 = ours["broadcast"]["p99_ms"]
        lines.append(f"broadcast p99 under 50 ms: {p99} ms: {verdict(p99 < 50)}")
    if "storm" in ours:
        routed = ours["storm"]["all_routed_s"]
        lines.append(f"every client back and routed under 5 s: {routed} s: {verdict(routed < 5)}")
    return lines


def verdict(met: bool) -> str:
    return "met" if met else "MISSED"
