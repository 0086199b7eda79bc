"""The soak's report: markdown tables for people, JSON for tools, and the verdict.

Every invariant is one row of the last table; the soak exits non-zero when any row
does not hold, so the table says exactly why a run failed.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.harness import markdown_table
from bench.soak_faults import KINDS
from bench.soak_leaks import IDLE_SLACK, Growth
from bench.soak_ledger import OUTSIDE, STALL_AFTER, Ledger, Tally


@dataclass
class Outcome:
    """What the run measured besides the ledger."""

    config: dict[str, Any]
    recovery: dict[str, list[float]]
    fault_failures: list[str]
    leaks: list[Growth]
    fences_reached: bool
    descriptors: dict[str, Any]  # idle (per role), after (per process), back
    exit_codes: dict[str, int | None]
    keys: dict[str, Any] | None = None  # baseline, final, restored (with --store)
    publisher: dict[str, int] = field(default_factory=dict)
    troubles: list[str] = field(default_factory=list)  # masters' logs of a failed stop


@dataclass
class Report:
    text: str
    data: dict[str, Any]
    ok: bool


def _growth_rows(growths: list[Growth]) -> list[list[object]]:
    """A row per process; several processes of one role too short-lived to judge (the
    respawned workers) folded into one row."""
    unjudged: dict[str, list[Growth]] = {}
    for g in growths:
        if g.ok is None:
            unjudged.setdefault(g.role, []).append(g)
    rows: list[list[object]] = []
    for g in growths:
        if g.ok is None and len(unjudged[g.role]) > 1:
            continue
        verdict = {True: "ok", False: "OVER LIMIT", None: f"not judged ({g.judged_seconds} s)"}
        rss, fds = f"{g.rss_mb[0]} → {g.rss_mb[1]}", f"{g.fds[0]} → {g.fds[1]}"
        rows.append(
            [g.role, g.pid, g.seconds, rss, g.rss_mb_per_hour, fds, g.fds_per_hour, verdict[g.ok]]
        )
    for role, group in unjudged.items():
        if len(group) > 1:
            longest = max(g.seconds for g in group)
            rss = f"≤ {max(g.rss_mb[1] for g in group)}"
            fds = f"≤ {max(g.fds[1] for g in group)}"
            pids = f"{len(group)} processes"
            rows.append([role, pids, f"≤ {longest}", rss, "-", fds, "-", "not judged (too short)"])
    return rows


def _cause_counts(ledger: Ledger) -> dict[str, int]:
    counts: dict[str, int] = {}
    for cause in [e.cause for e in ledger.events] + [s.cause for s in ledger.stalls]:
        counts[cause] = counts.get(cause, 0) + 1
    return counts


def build(ledger: Ledger, tallies: dict[str, Tally], outcome: Outcome) -> Report:
    incidents = _cause_counts(ledger)
    fault_rows = []
    for kind in (*KINDS, OUTSIDE):
        times = outcome.recovery.get(kind, [])
        injected = sum(1 for w in ledger.windows if w.kind == kind)
        lost = sum(t.lost.get(kind, 0) for t in tallies.values())
        missed = sum(t.missed_disconnected.get(kind, 0) for t in tallies.values())
        fault_rows.append(
            [
                kind if kind != OUTSIDE else "(no fault)",
                injected if kind != OUTSIDE else "-",
                len(times) if kind != OUTSIDE else "-",
                f"{statistics.median(times):.2f}" if times else "-",
                f"{max(times):.2f}" if times else "-",
                lost,
                missed,
                incidents.get(kind, 0),
            ]
        )
    message_rows = []
    for kind, tally in tallies.items():
        message_rows.append(
            [
                "ch:* publisher" if kind == "ch" else "handler emits",
                tally.sent,
                tally.unconfirmed,
                tally.expected,
                tally.delivered,
                sum(v for k, v in tally.lost.items() if k != OUTSIDE),
                tally.lost_outside(),
                sum(tally.missed_disconnected.values()),
                tally.duplicates,
                tally.misdelivered,
                tally.unjudged,
                tally.reordered,
            ]
        )
    leak_rows = _growth_rows(outcome.leaks)
    checks = _invariants(ledger, tallies, outcome)
    ok = all(holds for _, _, holds in checks)
    sessions = [s for s in ledger.sessions if s.connected is not None]
    text = "\n\n".join(
        [
            "Faults (recovery: injection until healthy again; losses and incidents by the "
            "fault window that explains them):",
            markdown_table(
                [
                    "fault",
                    "injected",
                    "recovered",
                    "recovery s (median)",
                    "max",
                    "lost",
                    "missed while disconnected",
                    "incidents",
                ],
                fault_rows,
            ),
            f"Messages ({len(sessions)} connections: "
            f"{sum(1 for s in sessions if s.transport == 'polling')} polling, "
            f"{sum(1 for s in sessions if s.dropped)} dropped by the server or network):",
            markdown_table(
                [
                    "source",
                    "sent",
                    "unconfirmed",
                    "expected",
                    "delivered",
                    "lost in faults",
                    "lost outside",
                    "missed while disconnected",
                    "duplicates",
                    "misdelivered",
                    "not judged",
                    "reordered",
                ],
                message_rows,
            ),
            "Memory and descriptors (slopes over the second half of the run):",
            markdown_table(
                ["process", "pid", "s", "RSS MB", "RSS MB/h", "fds", "fds/h", "verdict"],
                leak_rows,
            ),
            "Invariants:",
            markdown_table(["invariant", "value", "holds"], checks),
        ]
    )
    data = {
        "config": outcome.config,
        "ok": ok,
        "faults": {
            kind: {
                "injected": sum(1 for w in ledger.windows if w.kind == kind),
                "recovery_seconds": [round(t, 3) for t in outcome.recovery.get(kind, [])],
            }
            for kind in KINDS
        },
        "windows": [
            {
                "kind": w.kind,
                "start": round(w.start, 3),
                "end": None if w.end is None else round(w.end, 3),
                "recovered": w.recovered,
                "detail": w.detail,
            }
            for w in ledger.windows
        ],
        "messages": {kind: asdict(tally) for kind, tally in tallies.items()},
        "connections": len(sessions),
        "incidents": [asdict(e) for e in ledger.events],
        "stalls": [asdict(s) for s in ledger.stalls],
        "examples": ledger.examples,
        "corrupt": ledger.corrupt[:20],
        "leaks": [asdict(g) for g in outcome.leaks],
        "descriptors": outcome.descriptors,
        "keys": outcome.keys,
        "exit_codes": outcome.exit_codes,
        "publisher": outcome.publisher,
        "fault_failures": outcome.fault_failures,
        "troubles": outcome.troubles,
        "invariants": [{"name": n, "value": v, "holds": h} for n, v, h in checks],
    }
    return Report(text, data, ok)


def _invariants(
    ledger: Ledger, tallies: dict[str, Tally], outcome: Outcome
) -> list[tuple[str, Any, bool]]:
    """``(name, value, holds)`` of every invariant of the run."""

    def total(attr: str) -> int:
        return sum(getattr(t, attr) for t in tallies.values())

    lost_outside = sum(t.lost_outside() for t in tallies.values())
    missed_outside = sum(t.missed_disconnected.get(OUTSIDE, 0) for t in tallies.values())
    views = sum(1 for e in ledger.events if e.what == "room view")
    incidents = sum(1 for e in ledger.events if e.cause == OUTSIDE and e.what != "room view")
    stalls = sum(1 for s in ledger.stalls if s.cause == OUTSIDE)
    over = [f"{g.role} {g.pid}" for g in outcome.leaks if g.ok is False]
    recovered = f"{sum(w.recovered for w in ledger.windows)}/{len(ledger.windows)}"
    codes = outcome.exit_codes
    before = outcome.descriptors["idle"]
    idle = ", ".join(
        f"{name} {before.get(name.split(' (')[0], '?')}→{fds}"
        for name, fds in outcome.descriptors["after"].items()
    )
    shown = ", ".join(
        f"{k}: {'killed, no exit in 30 s' if c is None else c}" for k, c in codes.items()
    )
    checks: list[tuple[str, Any, bool]] = [
        ("messages delivered", total("delivered"), total("delivered") > 0),
        ("duplicates", total("duplicates"), total("duplicates") == 0),
        ("misdelivered (a room the socket was not in)", total("misdelivered"),
         total("misdelivered") == 0),
        ("lost outside fault windows", lost_outside, lost_outside == 0),
        ("missed by a disconnect outside fault windows", missed_outside, missed_outside == 0),
        ("out of order (one source, one socket)", total("reordered"), total("reordered") == 0),
        ("unreadable or unknown messages", len(ledger.corrupt), not ledger.corrupt),
        ("disconnects, failed connects or calls outside fault windows", incidents,
         incidents == 0),
        (f"sockets stalled > {STALL_AFTER:.0f} s outside fault windows", stalls, stalls == 0),
        ("acks whose rooms differ from the client's", views, views == 0),
        ("faults recovered", recovered, not outcome.fault_failures),
        ("final fence reached every socket", outcome.fences_reached, outcome.fences_reached),
        ("leak slopes within limits", ", ".join(over) or "yes", not over),
        (f"descriptors back to idle (±{IDLE_SLACK}) once clients are gone", idle,
         bool(outcome.descriptors["back"])),
        ("masters exit 0 on SIGTERM", shown, all(c == 0 for c in codes.values())),
    ]  # fmt: skip
    if outcome.keys is not None:
        restored = bool(outcome.keys["restored"])
        value = f"{len(outcome.keys['baseline'])} -> {len(outcome.keys['final'] or [])} keys"
        checks.append(("Redis keys back to baseline (--store)", value, restored))
    return checks
