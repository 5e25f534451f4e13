"""The simulated-vs-measured report of a `splitrt hil` run: summary.json, report.md, report.html, PNGs.

The entry of the report: it composes the numbers (tools/hil/comparison.py), the tables
(tools/hil/tables.py), the plots (tools/hil/plots.py) and their rendering (tools/hil/render.py)
into report.md and report.html (`write_report`), and re-exports what `splitrt hil` and the tests
use from those modules.

Per method (``summary.json``, a list; the first eight keys are the contract of the issue):

| key | meaning |
|---|---|
| ``method`` | the decision method |
| ``measured_mean_completion_s`` | mean ``total_s`` over the live run's completed tasks |
| ``simulated_mean_completion_s`` | mean eq (17) delay of the same scenario and seed in the simulator, the method deciding there |
| ``gap_pct`` | 100 (measured - simulated) / simulated |
| ``tasks_generated``, ``tasks_completed``, ``tasks_failed`` | live task counts (completed = remote, local or fallback) |
| ``link_emulation`` | ``tc`` (per-slot rate shaping: namespaces, or the hosts' interfaces with ``--hosts --links tc``), ``loopback``, ``measured`` (``--hosts``: links as they are, the simulator on the measured rates) or ``real`` (a deployment's files) |
| ``measured``, ``simulated``, ``replayed`` | ``{mean_s, p50_s, p95_s, n}``; replayed = the live decisions through the simulator |
| ``replay_gap_pct`` | the same gap against the replayed decisions (model error alone) |
| ``decisions_agree`` | fraction of (slot, CV) where the live and the simulated method chose the same (cut, node) |
| ``components_measured_s``, ``components_simulated_s``, ``components_replayed_s`` | mean per task of local wait, local compute, transfer, remote queue, remote compute (tools/hil/simulate.py) |
| ``backlog`` | measured / simulated mean, max and final backlog (GFLOP) and growth per slot over the second half, and whether each calls the queues growing |
| ``lyapunov`` | measured / simulated mean L(Q) (GFLOP^2), mean drift, mean penalty and P2 |
| ``outcomes``, ``missed_slots``, ``telemetry_dropped``, ``stale_states`` | live bookkeeping |
| ``pace_misses`` | per process, the fraction of paced segment runs whose compute took longer than the emulated device's time (the host was busier than the emulation allows: those timings are the host's, not the scenario's) |
| ``cpu_load`` | the children's CPU seconds over the run's wall time and CPUs (measured) next to the plan's estimate |
| ``p95_gap_pct``, ``replay_p95_gap_pct`` | the same gaps of the p95 |
| ``as_run``, ``as_run_replayed`` | ``{mean_s, p50_s, p95_s, n}`` of the as-run model (policy/sim/asrun.py): the method deciding on its queues, and the live decisions replayed |
| ``as_run_gap_pct``, ``as_run_p95_gap_pct``, ``as_run_replay_gap_pct``, ``as_run_replay_p95_gap_pct``, ``as_run_decisions_agree`` | its gaps and decision agreement |
| ``components_as_run_s``, ``components_as_run_replayed_s``, ``as_run_backlog``, ``as_run_lyapunov``, ``as_run_calibration`` | its components, backlog, Lyapunov values and where its overheads came from (added by `splitrt hil` after every method ran, tools/cli/hil.py) |
| ``faults`` | every fault window of the run (``<method>/faults.jsonl``, tools/hil/faults.py): ``kind``, ``target``, ``start_unix_s`` / ``end_unix_s`` / ``duration_s``, ``start_slot`` / ``end_slot`` (slots [start, end) when known), ``detail``, and ``tasks``: for the tasks that arrived ``before``, ``during`` and ``after`` it (`split_by_window`), ``n``, ``outcomes`` (remote, local, fallback, failed) and ``reasons`` (non-remote outcomes by reason) |
"""

from __future__ import annotations

import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from splitrt.tools.hil.comparison import (
    GFLOP,
    GROWTH_FRACTION,
    OUTCOMES,
    arriving_flops,
    compare,
    compare_as_run,
    fault_summary,
    gap_pct,
    measured_backlog,
    measured_components,
    method_summary,
    stats,
    write_sim,
    write_summary,
)
from splitrt.tools.hil.plan import HilPlan
from splitrt.tools.hil.plots import plot, shade_faults
from splitrt.tools.hil.render import markdown_table, render_html, render_markdown, text_table
from splitrt.tools.hil.tables import component_rows, error_rows, fault_rows, fmt_share, queue_rows, results_rows

__all__ = [
    "GFLOP",
    "GROWTH_FRACTION",
    "OUTCOMES",
    "PACE_MISS_WARN",
    "compare",
    "compare_as_run",
    "component_rows",
    "error_rows",
    "fault_rows",
    "fault_summary",
    "gap_pct",
    "markdown_table",
    "measured_backlog",
    "measured_components",
    "method_summary",
    "plot",
    "queue_rows",
    "results_rows",
    "shade_faults",
    "stats",
    "text_table",
    "write_report",
    "write_sim",
    "write_summary",
]

#: A process whose paced runs overran more often than this is named in the report's warnings.
PACE_MISS_WARN = 0.05


def looking_at(plan: HilPlan, summary: list[dict[str, Any]]) -> str:
    """One paragraph for a newcomer: the run, whose queues grew and whose stayed bounded (measured),
    the fastest method, and how far each model is from the measurement."""
    sc = plan.scenario
    work = arriving_flops(plan) / GFLOP
    grow = [s["method"] for s in summary if s["backlog"]["measured"].get("growing")]
    bounded = [s["method"] for s in summary if s["backlog"]["measured"] and not s["backlog"]["measured"]["growing"]]
    timed = [s for s in summary if s["measured"]["mean_s"] is not None]
    parts = [
        f"{sc.n_cvs} client vehicles each bring one DNN task ({work:.1f} GFLOP together) every "
        f"{sc.slot_s * 1e3:.0f} ms slot; each method decides per task where to cut the model and which "
        f"edge node (the RSU or one of {sc.n_svs} service vehicles) runs the rest, on real processes over "
        "shaped links."
    ]
    if grow:
        growth = ", ".join(
            f"{s['method']} +{s['backlog']['measured']['growth_gflop_per_slot']:.2f}"
            for s in summary
            if s["method"] in grow
        )
        parts.append(
            f"Queues grow under {', '.join(grow)} (GFLOP per slot over the second half: {growth}): "
            "they send more work somewhere than it can serve, so every later task waits longer "
            "(queues.png, lyapunov.png)."
        )
    if bounded:
        parts.append(f"Every queue stays bounded under {', '.join(bounded)}.")
    if not grow and bounded:
        parts.append("No method's queues grow here: the load is light for this scenario.")
    if timed:
        best = min(timed, key=lambda s: s["measured"]["mean_s"])
        parts.append(
            f"Fastest on the measured mean: {best['method']} ({best['measured']['mean_s'] * 1e3:.0f} ms per task)."
        )
        gaps = [
            f"{s['method']} {s['as_run_gap_pct']:+.1f}% (paper model {s['gap_pct']:+.1f}%)"
            for s in timed
            if s.get("as_run_gap_pct") is not None and s.get("gap_pct") is not None
        ]
        if gaps:
            parts.append("Measured against the as-run model's prediction: " + ", ".join(gaps) + ".")
    return " ".join(parts)


def draws_note(summary: list[dict[str, Any]]) -> str:
    """What the as-run columns average over (the link jitter's draws), and what their spread means."""
    draws = max((s.get("as_run_draws") or 1) for s in summary)
    if draws <= 1:
        return "The calibration has no link jitter: one deterministic as-run run."
    return (
        f"Each as-run figure pools {draws} draws of the calibrated link jitter (each task's link time gets a "
        "normal draw of the link fit's residual spread): the order of near-simultaneous arrivals at a FIFO "
        "then varies as on the live links, and the draws' spread (the standard deviation of their means, "
        "relative) is how far one live run may land from the prediction through that order alone."
    )


def as_run_blocks(summary: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    """The report's as-run paragraph and its table of per-part errors (none without as-run keys)."""
    notes = sorted({s["as_run_calibration"] for s in summary if s.get("as_run_calibration")})
    if not notes:
        return []
    return [
        (
            "p",
            "As-run: the same scenario and seed through the as-run model (policy/sim/asrun.py): the runtime's "
            "local FIFOs, shaped links, the RSU's per-type containers with P3 re-solved at every arrival and "
            "slot boundary, the SVs' FIFOs, and the per-task overheads of the calibration "
            f"({'; '.join(notes)}). As-run replayed: the live decisions through it. Its decisions agree: "
            "the method deciding on the as-run queues against the live run's decisions. " + draws_note(summary),
        ),
        ("h2", "Which parts of the time each model gets wrong (replayed decisions, model - measured)"),
        ("table", error_rows(summary)),
    ]


def write_report(
    plan: HilPlan,
    summary: list[dict[str, Any]],
    plots: list[Path],
    out: Path,
    *,
    link_note: str,
    broker: str,
    warnings: list[str],
    skipped: dict[str, str],
    source: str = "",
    hosts: list[dict[str, Any]] | None = None,
) -> tuple[Path, Path]:
    """report.md and report.html in ``out``; ``source`` (report-only) says where the live files
    came from; ``hosts`` (a multi-host run's hosts.json rows) adds the hosts table."""
    sc = plan.scenario
    where = "on this machine" if plan.rebased else "(a deployment's own scenario)"
    slower = "slower" if plan.rebased else "slower than the RSU"
    if plan.rebased:
        rsu = (
            f"{plan.rsu_flops_per_s / 1e9:.1f} GFLOP/s = this machine's measured speed / {plan.rsu_speed_factor:.2f}"
            f" (profiles measured at the start, {plan.profile_dir})"
        )
    else:
        rsu = f"{plan.rsu_flops_per_s / 1e9:.1f} GFLOP/s (the scenario's)"
    cpu = (
        f"estimated load {plan.cpu.load:.0%} of {plan.cpu.cpus} CPUs ({plan.cpu.detail})"
        if plan.cpu.detail
        else "not estimated"
    )
    facts = [
        [
            "scenario",
            f"{plan.preset_scenario.name} {where}: {sc.n_cvs} CVs, {sc.n_svs} SVs, models {', '.join(sc.types)}",
        ],
        ["slots", f"{sc.slots} x {sc.slot_s * 1e3:.1f} ms, V = {sc.v:g}, seed {plan.seed}, mobility {sc.mobility}"],
        ["RSU", rsu],
        [
            "CVs",
            ", ".join(f"{c.id} {c.model} x{c.speed_factor:.2f} {slower}" for c in plan.cvs),
        ],
        ["SVs", ", ".join(f"{s.name} x{s.speed_factor:.2f} {slower}" for s in plan.svs) or "none"],
        ["links", link_note],
        ["telemetry", broker],
        ["CPU", cpu],
        ["host", f"{platform.node()} {platform.machine()}, Python {platform.python_version()}"],
        ["date", datetime.now(timezone.utc).isoformat(timespec="seconds")],
    ]
    if source:
        facts.append(["live files", source])
    blocks: list[tuple[str, Any]] = [
        ("h1", f"splitrt hil: {plan.preset_scenario.name}, measured vs simulated"),
        ("table", [["", ""], *facts]),
        ("h2", "What you are looking at"),
        ("p", looking_at(plan, summary)),
        ("h2", "Completion time per task"),
        (
            "p",
            "Measured: the live run's task records (arrival at the slot start to the result on the vehicle). "
            "Simulated: the same scenario, seed and episode in the simulator with the method deciding there. "
            "Replayed: the live run's own decisions through the simulator (what is left is the model's error). "
            "Gap = (measured - simulated) / simulated.",
        ),
        ("table", results_rows(summary)),
        *as_run_blocks(summary),
        ("h2", "Where the time goes (mean per task)"),
        ("table", component_rows(summary)),
        ("h2", "Queues and Lyapunov values"),
        (
            "p",
            "Backlog = every queue (CV local queues, RSU per-type queues, SV queues) at the slot start, in the "
            "simulator's (effective) FLOPs; measured by the processes themselves and published at each slot "
            f"boundary. A queue set 'grows' when its backlog rises by more than {GROWTH_FRACTION:.0%} of a slot's "
            "arriving work per slot over the second half of the run.",
        ),
        ("table", queue_rows(summary)),
    ]
    for s in summary:
        missed = {n: f for n, f in s["pace_misses"].items() if f > PACE_MISS_WARN}
        if missed:
            warnings = [
                *warnings,
                f"{s['method']}: paced compute overran in "
                + ", ".join(f"{n} {f:.0%}" for n, f in missed.items())
                + " of runs: the host was busier than the emulation's headroom, so those delays are the host's",
            ]
        extra = (
            f"{s['method']}: outcomes {s['outcomes']}, missed slot boundaries {s['missed_slots']}, "
            f"telemetry messages dropped {s['telemetry_dropped']}, slots with stale states {s['stale_states']}, "
            f"measured CPU load {fmt_share(s['cpu_load']['measured'])} (estimated {fmt_share(s['cpu_load']['estimated'])}), "
            f"wall time {'-' if s['wall_s'] is None else format(s['wall_s'], '.0f')} s."
        )
        blocks.append(("p", extra))
    if hosts:
        blocks.append(("h2", "Hosts"))
        blocks.append(
            (
                "p",
                "The machines of the inventory (hosts.json): what each ran, its clock offset against the orchestrator "
                "(its clock minus ours, from the probe with the shortest round trip; the error is at most half that "
                "round trip) and what was shipped to it (files verified by sha256 on arrival; 'sent' were missing or "
                "different there).",
            )
        )
        blocks.append(("table", hosts_table(hosts)))
    faults = fault_rows(summary)
    if len(faults) > 1:
        blocks.append(("h2", "Faults"))
        blocks.append(
            (
                "p",
                "Injected faults (<method>/faults.jsonl): each window from the fault's start to its end (slots "
                "[start, end), shaded red on the queue and Lyapunov plots), and the tasks that arrived before, "
                "during and after it with their outcomes (and the reasons of those not done remotely).",
            )
        )
        blocks.append(("table", faults))
    if skipped:
        blocks.append(("h2", "Methods not run live"))
        blocks.append(("table", [["method", "why"], *[[m, why] for m, why in skipped.items()]]))
    if warnings or plan.notes:
        blocks.append(("h2", "Warnings"))
        for w in [*warnings, *plan.notes]:
            blocks.append(("p", w))
    blocks.append(("h2", "Plots"))
    for p in plots:
        blocks.append(("img", p.name))
    md = render_markdown(blocks)
    html_text = render_html(blocks)
    md_path = out / "report.md"
    html_path = out / "report.html"
    md_path.write_text(md)
    html_path.write_text(html_text)
    return md_path, html_path


def hosts_table(hosts: list[dict[str, Any]]) -> list[list[str]]:
    rows = [["host", "address", "roles", "machine", "Python", "splitrt", "cores", "clock offset", "shipped", "lost"]]
    for h in hosts:
        o, rtt, ship = h.get("clock_offset_s"), h.get("clock_rtt_s"), h.get("shipping") or {}
        rows.append(
            [
                h["host"],
                h["address"],
                ", ".join(h["roles"]),
                str(h.get("machine") or "-"),
                str(h.get("python") or "-"),
                str(h.get("splitrt") or "-"),
                str(h.get("cpus") or "-"),
                "-" if o is None else f"{o * 1e3:+.2f} ms (±{rtt * 1e3 / 2:.2f})",
                f"{ship.get('sent', 0)}/{ship.get('files', 0)} files, {ship.get('bytes_sent', 0) / 1e6:.1f} MB, "
                f"{ship.get('seconds', 0.0):.1f} s"
                if ship
                else "-",
                "-" if h.get("lost_unix_s") is None else "yes",
            ]
        )
    return rows
