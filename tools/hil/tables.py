"""The tables of a `splitrt hil` report: the methods' summary records (tools/hil/comparison.py) as
rows of strings, a header row first (rendered by tools/hil/render.py as markdown, HTML or text).

`results_rows`: completion times measured / simulated / replayed and their gaps; `component_rows`:
where the time goes; `error_rows`: which parts each model gets wrong; `queue_rows`: backlog and Lyapunov values; `fault_rows`: every fault window and
the tasks before, during and after it. ``fmt_ms``, ``fmt_share`` and ``fmt_pct`` format one cell
("-" for a missing value).
"""

from __future__ import annotations

from typing import Any

from splitrt.tools.hil.simulate import COMPONENTS


def fmt_ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1e3:.1f}"


def fmt_share(v: float | None) -> str:
    return "-" if v is None else f"{v:.0%}"


def fmt_pct(v: float | None) -> str:
    return "-" if v is None else f"{v:+.1f}%"


def results_rows(summary: list[dict[str, Any]]) -> list[list[str]]:
    head = [
        "method",
        "links",
        "tasks gen/done/failed",
        "measured mean / p50 / p95 ms",
        "simulated mean / p50 / p95 ms",
        "gap",
        "replayed mean ms (gap)",
        "decisions agree",
    ]
    as_run = any("as_run" in s for s in summary)
    if as_run:
        head += [
            "as-run mean / p95 ms",
            "gap / p95 gap",
            "draws' spread",
            "as-run replayed mean ms (gap)",
            "as-run decisions agree",
        ]
    rows = [head]
    for s in summary:
        m, si, rp = s["measured"], s["simulated"], s["replayed"]
        row = [
            s["method"],
            s["link_emulation"],
            f"{s['tasks_generated']}/{s['tasks_completed']}/{s['tasks_failed']}",
            f"{fmt_ms(m['mean_s'])} / {fmt_ms(m['p50_s'])} / {fmt_ms(m['p95_s'])}",
            f"{fmt_ms(si['mean_s'])} / {fmt_ms(si['p50_s'])} / {fmt_ms(si['p95_s'])}",
            fmt_pct(s["gap_pct"]),
            f"{fmt_ms(rp['mean_s'])} ({fmt_pct(s['replay_gap_pct'])})",
            fmt_share(s["decisions_agree"]),
        ]
        if as_run:
            a, ar = s.get("as_run"), s.get("as_run_replayed")
            row += (
                [
                    f"{fmt_ms(a['mean_s'])} / {fmt_ms(a['p95_s'])}",
                    f"{fmt_pct(s['as_run_gap_pct'])} / {fmt_pct(s['as_run_p95_gap_pct'])}",
                    "-" if s.get("as_run_spread_pct") is None else f"±{s['as_run_spread_pct']:.1f}%",
                    f"{fmt_ms(ar['mean_s'])} ({fmt_pct(s['as_run_replay_gap_pct'])})",
                    fmt_share(s["as_run_decisions_agree"]),
                ]
                if a
                else ["-"] * 5
            )
        rows.append(row)
    return rows


def component_rows(summary: list[dict[str, Any]]) -> list[list[str]]:
    rows = [["method", "source", *[c.removesuffix("_s").replace("_", " ") + " ms" for c in COMPONENTS]]]
    for s in summary:
        for label, key in (
            ("measured", "components_measured_s"),
            ("simulated", "components_simulated_s"),
            ("replayed", "components_replayed_s"),
            ("as-run", "components_as_run_s"),
            ("as-run replayed", "components_as_run_replayed_s"),
        ):
            if key in s:
                rows.append([s["method"], label, *[fmt_ms(s[key][c]) for c in COMPONENTS]])
    return rows


def error_rows(summary: list[dict[str, Any]]) -> list[list[str]]:
    """Per method and model, the replayed decisions' error per delay part (model - measured, ms per
    task) and the part that is most wrong: which parts of the time each model gets wrong."""
    rows = [["method", "model", *[c.removesuffix("_s").replace("_", " ") + " ms" for c in COMPONENTS], "most wrong"]]
    for s in summary:
        meas = s["components_measured_s"]
        for label, key in (("paper", "components_replayed_s"), ("as-run", "components_as_run_replayed_s")):
            if key not in s or any(meas[c] is None or s[key][c] is None for c in COMPONENTS):
                continue
            err = {c: s[key][c] - meas[c] for c in COMPONENTS}
            worst = max(COMPONENTS, key=lambda c: abs(err[c]))
            rows.append(
                [
                    s["method"],
                    label,
                    *[f"{err[c] * 1e3:+.1f}" for c in COMPONENTS],
                    f"{worst.removesuffix('_s').replace('_', ' ')} ({err[worst] * 1e3:+.1f} ms)",
                ]
            )
    return rows


def queue_rows(summary: list[dict[str, Any]]) -> list[list[str]]:
    rows = [
        [
            "method",
            "source",
            "mean backlog GFLOP",
            "max",
            "final",
            "growth GFLOP/slot (2nd half)",
            "queues",
            "mean L(Q) GFLOP^2",
            "mean drift",
            "mean V sum d",
            "mean P2",
        ]
    ]
    for s in summary:
        sources = [(label, s["backlog"][label], s["lyapunov"][label]) for label in ("measured", "simulated")]
        if "as_run_backlog" in s:
            sources.append(("as-run", s["as_run_backlog"], {"mean_p2": None, **s["as_run_lyapunov"]}))
        for label, b, ly in sources:
            rows.append(
                [
                    s["method"],
                    label,
                    *(f"{b[k]:.3f}" if b else "-" for k in ("mean_gflop", "max_gflop", "final_gflop")),
                    f"{b['growth_gflop_per_slot']:+.3f}" if b else "-",
                    ("growing" if b.get("growing") else "bounded") if b else "-",
                    *(
                        "-" if ly[k] is None else f"{ly[k]:.3g}"
                        for k in ("mean_lyapunov", "mean_drift", "mean_penalty", "mean_p2")
                    ),
                ]
            )
    return rows


def _tasks_cell(part: dict[str, Any]) -> str:
    counts = ", ".join(f"{o} {n}" for o, n in part["outcomes"].items() if n)
    reasons = "; ".join(f"{k} x{n}" for k, n in sorted(part["reasons"].items()))
    return f"{part['n']}" + (f" ({counts})" if counts else "") + (f" [{reasons}]" if reasons else "")


def fault_rows(summary: list[dict[str, Any]]) -> list[list[str]]:
    """One row per fault window of every method (the report's "Faults" table)."""
    rows = [["method", "fault", "target", "slots", "duration s", "tasks before", "during", "after"]]
    for s in summary:
        for f in s.get("faults", []):
            a, b = f["start_slot"], f["end_slot"]
            slots = "-" if a is None else (f"{a}.." if b is None else f"{a}..{b - 1}" if b > a else f"{a}")
            dur = "open" if f["duration_s"] is None else f"{f['duration_s']:.2f}"
            rows.append(
                [
                    s["method"],
                    f["kind"],
                    f["target"],
                    slots,
                    dur,
                    *(_tasks_cell(f["tasks"][p]) for p in ("before", "during", "after")),
                ]
            )
    return rows
