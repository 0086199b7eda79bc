"""The tables of ``bench/ten_thousand.py`` (markdown), and its targets in words.

Older JSON (before PSS was measured, or with a storm always run) renders too: a missing
figure shows as ``-``, a storm not run (``--storm none``) leaves its table out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench.harness import markdown_table

CONNECT_HEADER = (
    "system|clients|processes|connect s|connects/s|failed attempts|PSS KiB per connection|"
    "RSS KiB per connection|PSS idle / connected MiB|RSS idle / connected MiB|"
    "PSS / RSS after broadcasts MiB|Redis RSS MiB"
).split("|")
PSS_TARGET_KIB = 8.0  # issue 26: idle websocket connections, at 10,000 clients
CONNECT_TARGET_S = 60.0  # issue 26: 100,000 clients all connected

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
        if "failed" in s:
            rows.append([name, f"FAILED ({s['failed']})"])
            continue
        c = s["connect"]
        row = [
            name,
            c["seconds"],
            f"{c['client_p50_ms']} / {c['client_p99_ms']}",
            sum(c["failed_attempts"].values()),
            " / ".join(f"{n:,}" for n in s["sockets_by_worker"]),
            c["cpu"].get("master_s", "-"),
            c["cpu"].get("balancer_s", "-"),
        ]
        st = s.get("storm")
        if st is None:  # --storm none
            rows.append([*row, *["-"] * 6])
            continue
        rows.append(
            [
                *row,
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

    def pair(m: dict[str, Any], first: str, second: str) -> str:
        return f"{m.get(first, '-')} / {m.get(second, '-')}"

    connect = rows(
        "memory",
        lambda s: [
            f"{results['clients']:,}",
            s.get("processes", results.get("processes", "-")),
            s["connect"]["seconds"],
            f"{s['connect']['per_s']:,}",
            sum(s["connect"]["failed_attempts"].values()),
            s["memory"].get("pss_kib_per_connection", "-"),
            s["memory"]["kib_per_connection"],
            pair(s["memory"], "idle_pss_mib", "connected_pss_mib"),
            pair(s["memory"], "idle_mib", "connected_mib"),
            pair(s["memory"], "after_broadcasts_pss_mib", "after_broadcasts_mib"),
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
    stormed = results.get("storm") != "none"
    return "\n\n".join(
        [
            *([front] if front else []),
            markdown_table(CONNECT_HEADER, connect),
            markdown_table(BROADCAST_HEADER, broadcast),
            *([markdown_table(STORM_HEADER, storm)] if stormed else []),
            *(["\n".join(f"- {line}" for line in met)] if (met := targets(results)) else []),
        ]
    )


def targets(results: dict[str, Any]) -> list[str]:
    """The issue's targets, met or not, in words (never asserted)."""
    ours, node = results["systems"].get("ours", {}), results["systems"].get("node", {})
    lines = []
    pss = ours.get("memory", {}).get("pss_kib_per_connection")
    if pss is not None:
        lines.append(
            f"PSS per connection at most {PSS_TARGET_KIB:g} KiB: {pss} KiB: "
            f"{verdict(pss <= PSS_TARGET_KIB)}"
        )
        node_pss = node.get("memory", {}).get("pss_kib_per_connection")
        if node_pss is not None:
            lines.append(
                f"PSS per connection below Node's: {pss} vs {node_pss} KiB: "
                f"{verdict(pss < node_pss)}"
            )
    elif "memory" in ours and "memory" in node:
        a, b = ours["memory"]["kib_per_connection"], node["memory"]["kib_per_connection"]
        lines.append(f"RSS per connection at most Node's: {a} vs {b} KiB: {verdict(a <= b)}")
    if "connect" in ours and results["clients"] >= 100_000:
        took = ours["connect"]["seconds"]
        lines.append(
            f"all {results['clients']:,} connected within {CONNECT_TARGET_S:g} s: {took} s: "
            f"{verdict(took <= CONNECT_TARGET_S)}"
        )
    if "broadcast" in ours:
        b = ours["broadcast"]
        exact = b["delivered"] == b["expected"] and b["duplicates"] == 0
        lines.append(
            f"every broadcast reaches every client exactly once: {b['delivered']:,} of "
            f"{b['expected']:,}, {b['duplicates']} duplicates: {verdict(exact)}"
        )
        p99 = b["p99_ms"]
        lines.append(f"broadcast p99 under 50 ms: {p99} ms: {verdict(p99 < 50)}")
    if "storm" in ours:
        routed = ours["storm"]["all_routed_s"]
        lines.append(f"every client back and routed under 5 s: {routed} s: {verdict(routed < 5)}")
    return lines


def verdict(met: bool) -> str:
    return "met" if met else "MISSED"
