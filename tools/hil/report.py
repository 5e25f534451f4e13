"""The simulated-vs-measured report of a `splitrt hil` run: summary.json, report.md, report.html, PNGs.

Per method (``summary.json``, a list; the first eight keys are the contract of the issue):

| key | meaning |
|---|---|
| ``method`` | the decision method |
| ``measured_mean_completion_s`` | mean ``total_s`` over the live run's completed tasks |
| ``simulated_mean_completion_s`` | mean eq (17) delay of the same scenario and seed in the simulator, the method deciding there |
| ``gap_pct`` | 100 (measured - simulated) / simulated |
| ``tasks_generated``, ``tasks_completed``, ``tasks_failed`` | live task counts (completed = remote, local or fallback) |
| ``link_emulation`` | ``tc`` (namespaces + per-slot rate shaping) or ``loopback`` |
| ``measured``, ``simulated``, ``replayed`` | ``{mean_s, p50_s, p95_s, n}``; replayed = the live decisions through the simulator |
| ``replay_gap_pct`` | the same gap against the replayed decisions (model error alone) |
| ``decisions_agree`` | fraction of (slot, CV) where the live and the simulated method chose the same (cut, node) |
| ``components_measured_s``, ``components_simulated_s``, ``components_replayed_s`` | mean per task of local wait, local compute, transfer, remote queue, remote compute (tools/hil/simulate.py) |
| ``backlog`` | measured / simulated mean, max and final backlog (GFLOP) and growth per slot over the second half, and whether each calls the queues growing |
| ``lyapunov`` | measured / simulated mean L(Q) (GFLOP^2), mean drift, mean penalty and P2 |
| ``outcomes``, ``missed_slots``, ``telemetry_dropped``, ``stale_states`` | live bookkeeping |
| ``pace_misses`` | per process, the fraction of paced segment runs whose compute took longer than the emulated device's time (the host was busier than the emulation allows: those timings are the host's, not the scenario's) |
| ``cpu_load`` | the children's CPU seconds over the run's wall time and CPUs (measured) next to the plan's estimate |
| ``faults`` | every fault window of the run (``<method>/faults.jsonl``, tools/hil/faults.py): ``kind``, ``target``, ``start_unix_s`` / ``end_unix_s`` / ``duration_s``, ``start_slot`` / ``end_slot`` (slots [start, end) when known), ``detail``, and ``tasks``: for the tasks that arrived ``before``, ``during`` and ``after`` it (`split_by_window`), ``n``, ``outcomes`` (remote, local, fallback, failed) and ``reasons`` (non-remote outcomes by reason) |
"""

from __future__ import annotations

import html
import json
import math
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from splitrt.tools.hil.faults import FaultWindow, split_by_window
from splitrt.tools.hil.plan import HilPlan
from splitrt.tools.hil.runner import LiveResult
from splitrt.tools.hil.simulate import COMPONENTS, SimResult, replay, simulate

GFLOP = 1e9
#: Queues "grow" when the backlog's slope over the second half exceeds this fraction of the work
#: arriving per slot.
GROWTH_FRACTION = 0.05
#: A process whose paced runs overran more often than this is named in the report's warnings.
PACE_MISS_WARN = 0.05


# ---- per-task statistics ---------------------------------------------------------------------
def measured_components(record: dict[str, Any]) -> dict[str, float]:
    """A live record's delay in the simulator's five parts (tools/hil/simulate.py's table)."""
    return {
        "local_wait_s": record["local_wait_s"] + record["decide_s"],
        "local_compute_s": record["local_compute_s"],
        "transfer_s": record["encode_s"] + record["transfer_s"] + record["decode_s"],
        "remote_queue_s": record["remote_wait_s"],
        "remote_compute_s": record["remote_compute_s"] + record["remote_other_s"],
    }


def stats(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0, "mean_s": None, "p50_s": None, "p95_s": None}
    a = np.asarray(values, dtype=np.float64)
    return {
        "n": len(a),
        "mean_s": float(a.mean()),
        "p50_s": float(np.percentile(a, 50)),
        "p95_s": float(np.percentile(a, 95)),
    }


def gap_pct(measured: float | None, simulated: float | None) -> float | None:
    if measured is None or simulated is None or simulated <= 0:
        return None
    return 100.0 * (measured - simulated) / simulated


def _trend(backlog: np.ndarray) -> float:
    """Least-squares slope (per slot) over the second half of a backlog series."""
    half = backlog[len(backlog) // 2 :]
    if len(half) < 2:
        return 0.0
    x = np.arange(len(half), dtype=np.float64)
    return float(np.polyfit(x, half, 1)[0])


OUTCOMES = ("remote", "local", "fallback", "failed")


def fault_summary(
    windows: list[FaultWindow], records: list[dict[str, Any]], epoch_unix_s: float, slot_s: float
) -> list[dict[str, Any]]:
    """Every fault window with the outcomes of the tasks that arrived before, during and after
    it. The slots come from the window's ``slot`` / ``end_slot`` details (what `splitrt hil`
    writes), else from the run's epoch when it is known."""
    out = []
    for w in windows:
        start_slot, end_slot = w.detail.get("slot"), w.detail.get("end_slot")
        if start_slot is None and math.isfinite(epoch_unix_s):
            start_slot = math.floor((w.start_unix_s - epoch_unix_s) / slot_s + 0.5)
            if w.end_unix_s is not None:
                end_slot = math.floor((w.end_unix_s - epoch_unix_s) / slot_s + 0.5)
        tasks = {}
        for part, rs in split_by_window(records, w).items():
            reasons: dict[str, int] = {}
            for r in rs:
                if r["outcome"] != "remote":
                    key = f"{r['outcome']}: {str(r.get('reason', '')).split(':')[0]}"
                    reasons[key] = reasons.get(key, 0) + 1
            tasks[part] = {
                "n": len(rs),
                "outcomes": {o: sum(r["outcome"] == o for r in rs) for o in OUTCOMES},
                "reasons": reasons,
            }
        out.append(
            {
                "kind": w.kind,
                "target": w.target,
                "start_unix_s": w.start_unix_s,
                "end_unix_s": w.end_unix_s,
                "duration_s": None if w.end_unix_s is None else w.end_unix_s - w.start_unix_s,
                "start_slot": start_slot,
                "end_slot": end_slot,
                "detail": w.detail,
                "tasks": tasks,
            }
        )
    return out


def measured_backlog(live: LiveResult) -> np.ndarray:
    """Backlog after slots 0..T-1 (= at the start of 1..T, the simulator's convention)."""
    return np.array([r["backlog_next_flops"] for r in live.controller])


def method_summary(plan: HilPlan, live: LiveResult, sim: SimResult, rep: SimResult) -> dict[str, Any]:
    done = [r for r in live.records if r["outcome"] != "failed"]
    generated = sum(int(s.get("counters", {}).get("generated", 0)) for s in live.vehicle_stats.values())
    generated = max(generated, len(live.records))
    measured = stats([r["total_s"] for r in done])
    simulated = stats([t["completion_s"] for t in sim.tasks])
    replayed = stats([t["completion_s"] for t in rep.tasks])
    comp_m = {k: float(np.mean([measured_components(r)[k] for r in done])) if done else None for k in COMPONENTS}
    comp_s = {k: float(np.mean([t[k] for t in sim.tasks])) if sim.tasks else None for k in COMPONENTS}
    comp_r = {k: float(np.mean([t[k] for t in rep.tasks])) if rep.tasks else None for k in COMPONENTS}
    agree = float(np.mean(rep.actions == sim.actions)) if sim.actions.size else None

    arriving = sum(float(plan.work.models[cv.model]["local_flops"][-1]) for cv in plan.cvs)  # a task per CV
    b_meas = measured_backlog(live) if live.controller else np.zeros(0)
    b_sim = np.array([s["backlog_flops"] for s in sim.slots])

    def backlog_stats(b: np.ndarray) -> dict[str, Any]:
        if not b.size:
            return {}
        slope = _trend(b)
        return {
            "mean_gflop": float(b.mean() / GFLOP),
            "max_gflop": float(b.max() / GFLOP),
            "final_gflop": float(b[-1] / GFLOP),
            "growth_gflop_per_slot": slope / GFLOP,
            "growing": bool(slope > GROWTH_FRACTION * arriving),
        }

    l_meas = [r["lyapunov"] for r in live.controller]
    lyap = {
        "measured": {
            "mean_lyapunov": _mean(l_meas),
            "mean_drift": _mean([r["drift"] for r in live.controller]),
            "mean_penalty": _mean([r["penalty"] for r in live.controller]),
            "mean_p2": _mean([r["p2"] for r in live.controller]),
        },
        "simulated": {
            "mean_lyapunov": _mean([s["lyapunov"] for s in sim.slots]),
            "mean_drift": _mean([s["drift"] for s in sim.slots]),
            "mean_penalty": _mean([s["penalty"] for s in sim.slots]),
            "mean_p2": _mean([s["p2"] for s in sim.slots]),
        },
    }
    dropped = sum(int(s.get("telemetry", {}).get("dropped", 0)) for s in [*live.vehicle_stats.values()])
    dropped += sum(int(s.get("telemetry", {}).get("dropped", 0)) for s in live.node_stats.values())
    stale = sum(1 for r in live.controller if r.get("stale"))
    pace = {
        name: s["pace"]
        for name, s in [*live.vehicle_stats.items(), *live.node_stats.items()]
        if s.get("pace", {}).get("runs")
    }
    cpus = plan.cpu.cpus
    run_s = plan.scenario.slots * plan.scenario.slot_s
    return {
        "method": live.method,
        "measured_mean_completion_s": measured["mean_s"],
        "simulated_mean_completion_s": simulated["mean_s"],
        "gap_pct": gap_pct(measured["mean_s"], simulated["mean_s"]),
        "tasks_generated": generated,
        "tasks_completed": len(done),
        "tasks_failed": len(live.records) - len(done) + (generated - len(live.records)),
        "link_emulation": live.link_emulation,
        "measured": measured,
        "simulated": simulated,
        "replayed": replayed,
        "replay_gap_pct": gap_pct(measured["mean_s"], replayed["mean_s"]),
        "decisions_agree": agree,
        "components_measured_s": comp_m,
        "components_simulated_s": comp_s,
        "components_replayed_s": comp_r,
        "backlog": {"measured": backlog_stats(b_meas), "simulated": backlog_stats(b_sim)},
        "lyapunov": lyap,
        "outcomes": {
            o: sum(r["outcome"] == o for r in live.records) for o in ("remote", "local", "fallback", "failed")
        },
        "missed_slots": sum(int(s.get("counters", {}).get("missed_slots", 0)) for s in live.vehicle_stats.values()),
        "telemetry_dropped": dropped,
        "stale_states": stale,
        "pace_misses": {n: p["misses"] / p["runs"] for n, p in pace.items()},
        "cpu_load": {
            "measured": live.cpu_s / (run_s * cpus) if run_s > 0 and math.isfinite(live.cpu_s) else None,
            "estimated": plan.cpu.load if plan.cpu.detail else None,
        },
        "experiment": live.experiment,
        "wall_s": live.wall_s if math.isfinite(live.wall_s) else None,
        "faults": fault_summary(live.faults, live.records, live.epoch_unix_s, plan.scenario.slot_s),
    }


def compare(
    plan: HilPlan, live: LiveResult, options: dict[str, str] | None = None
) -> tuple[SimResult, SimResult, dict[str, Any]]:
    """The simulated side of a method's live run: the method deciding in the simulator on the
    same scenario and seed, and the live decisions replayed there; both are written next to the
    live files (``sim_tasks.jsonl``, ``replay_tasks.jsonl``, ``sim_slots.json``). Returns them and
    the method's summary record."""
    sim = simulate(plan, live.method, options)
    rep = replay(plan, live.method, live.records)
    write_sim(sim, live.out_dir / "sim_tasks.jsonl")
    write_sim(rep, live.out_dir / "replay_tasks.jsonl")
    (live.out_dir / "sim_slots.json").write_text(json.dumps(sim.slots) + "\n")
    return sim, rep, method_summary(plan, live, sim, rep)


def _mean(values: list[float]) -> float | None:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(vals)) if vals else None


# ---- tables ------------------------------------------------------------------------------------
def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1e3:.1f}"


def _share(v: float | None) -> str:
    return "-" if v is None else f"{v:.0%}"


def _pct(v: float | None) -> str:
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
    rows = [head]
    for s in summary:
        m, si, rp = s["measured"], s["simulated"], s["replayed"]
        rows.append(
            [
                s["method"],
                s["link_emulation"],
                f"{s['tasks_generated']}/{s['tasks_completed']}/{s['tasks_failed']}",
                f"{_ms(m['mean_s'])} / {_ms(m['p50_s'])} / {_ms(m['p95_s'])}",
                f"{_ms(si['mean_s'])} / {_ms(si['p50_s'])} / {_ms(si['p95_s'])}",
                _pct(s["gap_pct"]),
                f"{_ms(rp['mean_s'])} ({_pct(s['replay_gap_pct'])})",
                "-" if s["decisions_agree"] is None else f"{s['decisions_agree']:.0%}",
            ]
        )
    return rows


def component_rows(summary: list[dict[str, Any]]) -> list[list[str]]:
    rows = [["method", "source", *[c.removesuffix("_s").replace("_", " ") + " ms" for c in COMPONENTS]]]
    for s in summary:
        for label, key in (
            ("measured", "components_measured_s"),
            ("simulated", "components_simulated_s"),
            ("replayed", "components_replayed_s"),
        ):
            rows.append([s["method"], label, *[_ms(s[key][c]) for c in COMPONENTS]])
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
        for label in ("measured", "simulated"):
            b = s["backlog"][label]
            ly = s["lyapunov"][label]
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


def markdown_table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(lines)


def text_table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


# ---- plots ---------------------------------------------------------------------------------------
def plot(
    plan: HilPlan,
    summary: list[dict[str, Any]],
    lives: dict[str, LiveResult],
    sims: dict[str, SimResult],
    reps: dict[str, SimResult],
    out: Path,
) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = [s["method"] for s in summary]
    written = []
    n = len(methods)
    tau = plan.scenario.slot_s

    fig, axes = plt.subplots(1, n, figsize=(4 * n, 3.4), squeeze=False)
    for ax, m in zip(axes[0], methods, strict=True):
        for label, values, style in (
            ("measured", [r["total_s"] for r in lives[m].records if r["outcome"] != "failed"], "-"),
            ("simulated", [t["completion_s"] for t in sims[m].tasks], "--"),
            ("replayed", [t["completion_s"] for t in reps[m].tasks], ":"),
        ):
            if values:
                x = np.sort(np.asarray(values)) * 1e3
                ax.plot(x, np.arange(1, len(x) + 1) / len(x), style, label=label)
        ax.set_title(m)
        ax.set_xlabel("task completion time (ms)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("fraction of tasks")
    axes[0][0].legend()
    fig.tight_layout()
    written.append(_save(fig, out / "completion_cdf.png"))

    fig, ax = plt.subplots(figsize=(max(6, 2.2 * n), 4))
    width = 0.27
    x = np.arange(n)
    for k, (label, key) in enumerate(
        (
            ("measured", "components_measured_s"),
            ("simulated", "components_simulated_s"),
            ("replayed", "components_replayed_s"),
        )
    ):
        bottom = np.zeros(n)
        for c, comp in enumerate(COMPONENTS):
            vals = np.array([(s[key][comp] or 0.0) * 1e3 for s in summary])
            ax.bar(
                x + (k - 1) * width,
                vals,
                width,
                bottom=bottom,
                color=f"C{c}",
                edgecolor="black" if label == "measured" else "none",
                hatch={"measured": "", "simulated": "//", "replayed": ".."}[label],
                label=comp.removesuffix("_s").replace("_", " ") if k == 0 else None,
            )
            bottom += vals
    ax.set_xticks(x, [f"{m}\n(meas | sim | replay)" for m in methods])
    ax.set_ylabel("mean per task (ms)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    written.append(_save(fig, out / "components.png"))

    for name, key_live, key_sim, ylabel, scale in (
        ("queues.png", "backlog", "backlog_flops", "backlog at slot start (GFLOP)", GFLOP),
        ("lyapunov.png", "lyapunov", "lyapunov", "L(Q) at slot start (GFLOP^2)", 1.0),
    ):
        fig, axes = plt.subplots(1, n, figsize=(4 * n, 3.4), squeeze=False)
        for ax, m in zip(axes[0], methods, strict=True):
            live = lives[m]
            if key_live == "backlog":
                meas = [r["backlog_flops"] for r in live.controller]
            else:
                meas = [r["lyapunov_start"] for r in live.controller]
            sim_vals = [0.0] + [s[key_sim] for s in sims[m].slots][:-1]  # after slot t-1 = start of t
            t = np.arange(len(meas)) * tau
            shade_faults(ax, next(s for s in summary if s["method"] == m).get("faults", []), tau, len(meas))
            ax.plot(t, np.asarray(meas) / scale, "-", label="measured")
            ax.plot(np.arange(len(sim_vals)) * tau, np.asarray(sim_vals) / scale, "--", label="simulated")
            ax.set_title(m)
            ax.set_xlabel("time (s)")
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel(ylabel)
        axes[0][0].legend()
        fig.tight_layout()
        written.append(_save(fig, out / name))
    return written


def shade_faults(ax, faults: list[dict[str, Any]], tau: float, slots: int) -> None:
    """Shade every fault window with known slots on a per-slot time axis (x = slot x tau)."""
    for k, f in enumerate(faults):
        if f["start_slot"] is None:
            continue
        end = f["end_slot"] if f["end_slot"] is not None else slots
        ax.axvspan(f["start_slot"] * tau, end * tau, color="red", alpha=0.15, label="fault" if k == 0 else None)


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


# ---- documents ---------------------------------------------------------------------------------
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
) -> tuple[Path, Path]:
    """report.md and report.html in ``out``; ``source`` (report-only) says where the live files
    came from."""
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
        ("h2", "Completion time per task"),
        (
            "p",
            "Measured: the live run's task records (arrival at the slot start to the result on the vehicle). "
            "Simulated: the same scenario, seed and episode in the simulator with the method deciding there. "
            "Replayed: the live run's own decisions through the simulator (what is left is the model's error). "
            "Gap = (measured - simulated) / simulated.",
        ),
        ("table", results_rows(summary)),
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
            f"measured CPU load {_share(s['cpu_load']['measured'])} (estimated {_share(s['cpu_load']['estimated'])}), "
            f"wall time {'-' if s['wall_s'] is None else format(s['wall_s'], '.0f')} s."
        )
        blocks.append(("p", extra))
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
    md = _render_md(blocks)
    html_text = _render_html(blocks)
    md_path = out / "report.md"
    html_path = out / "report.html"
    md_path.write_text(md)
    html_path.write_text(html_text)
    return md_path, html_path


def _render_md(blocks: list[tuple[str, Any]]) -> str:
    out = []
    for kind, body in blocks:
        if kind == "h1":
            out.append(f"# {body}\n")
        elif kind == "h2":
            out.append(f"## {body}\n")
        elif kind == "p":
            out.append(f"{body}\n")
        elif kind == "table":
            out.append(markdown_table(body) + "\n")
        elif kind == "img":
            out.append(f"![{body}]({body})\n")
    return "\n".join(out)


def _render_html(blocks: list[tuple[str, Any]]) -> str:
    out = [
        "<!doctype html><html><head><meta charset='utf-8'><title>splitrt hil report</title>",
        "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto}table{border-collapse:collapse;"
        "margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td:first-child{text-align:left}"
        "img{max-width:100%}</style></head><body>",
    ]
    for kind, body in blocks:
        if kind in ("h1", "h2"):
            out.append(f"<{kind}>{html.escape(body)}</{kind}>")
        elif kind == "p":
            out.append(f"<p>{html.escape(body)}</p>")
        elif kind == "table":
            rows = "".join(
                "<tr>"
                + "".join(f"<{'th' if i == 0 else 'td'}>{html.escape(c)}</{'th' if i == 0 else 'td'}>" for c in r)
                + "</tr>"
                for i, r in enumerate(body)
            )
            out.append(f"<table>{rows}</table>")
        elif kind == "img":
            out.append(f"<p><img src='{html.escape(body)}' alt='{html.escape(body)}'></p>")
    out.append("</body></html>")
    return "\n".join(out)


def write_summary(summary: list[dict[str, Any]], out: Path) -> Path:
    path = out / "summary.json"
    path.write_text(json.dumps(summary, indent=1) + "\n")
    return path


def write_sim(sim: SimResult, path: Path) -> None:
    with path.open("w") as f:
        for t in sim.tasks:
            f.write(json.dumps(t) + "\n")
