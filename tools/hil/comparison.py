"""The numbers of a `splitrt hil` report: a method's live run against the simulator.

`compare` runs the simulated side of one method's live run (the method deciding in the simulator on
the same scenario and seed, and the live decisions replayed there) and `method_summary` turns the
three into the method's record of ``summary.json``: completion-time statistics and gaps, the delay
split into the simulator's five parts, backlog and Lyapunov values, live bookkeeping and the fault
windows with the outcomes of the tasks around them (`fault_summary`). The keys are listed in
tools/hil/report.py, which composes these numbers with the tables, plots and documents.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from splitrt.policy.sim.asrun import Overheads
from splitrt.tools.hil.faults import FaultWindow, split_by_window
from splitrt.tools.hil.plan import HilPlan
from splitrt.tools.hil.runner import LiveResult
from splitrt.tools.hil.simulate import COMPONENTS, SimResult, measured_components, replay, simulate

GFLOP = 1e9
#: Queues "grow" when the backlog's slope over the second half exceeds this fraction of the work
#: arriving per slot.
GROWTH_FRACTION = 0.05


# ---- per-task statistics ---------------------------------------------------------------------
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


def arriving_flops(plan: HilPlan) -> float:
    """FLOPs arriving per slot: a task per CV, its whole model."""
    return sum(float(plan.work.models[cv.model]["local_flops"][-1]) for cv in plan.cvs)


def backlog_stats(b: np.ndarray, arriving: float) -> dict[str, Any]:
    """Mean, max, final backlog (GFLOP), its growth per slot over the second half, growing or not."""
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

    arriving = arriving_flops(plan)
    b_meas = measured_backlog(live) if live.controller else np.zeros(0)
    b_sim = np.array([s["backlog_flops"] for s in sim.slots])

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
        "p95_gap_pct": gap_pct(measured["p95_s"], simulated["p95_s"]),
        "tasks_generated": generated,
        "tasks_completed": len(done),
        "tasks_failed": len(live.records) - len(done) + (generated - len(live.records)),
        "link_emulation": live.link_emulation,
        "measured": measured,
        "simulated": simulated,
        "replayed": replayed,
        "replay_gap_pct": gap_pct(measured["mean_s"], replayed["mean_s"]),
        "replay_p95_gap_pct": gap_pct(measured["p95_s"], replayed["p95_s"]),
        "decisions_agree": agree,
        "components_measured_s": comp_m,
        "components_simulated_s": comp_s,
        "components_replayed_s": comp_r,
        "backlog": {"measured": backlog_stats(b_meas, arriving), "simulated": backlog_stats(b_sim, arriving)},
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


#: link-jitter draws the as-run prediction averages over (when the calibration has a jitter)
AS_RUN_DRAWS = 16


def pooled(results: list[SimResult]) -> SimResult:
    """The tasks of every draw (each tagged with its ``draw``) as one prediction; the first
    draw's slots and actions."""
    tasks = [{**t, "draw": k} for k, r in enumerate(results) for t in r.tasks]
    first = results[0]
    return SimResult(first.method, first.kind, tasks, first.slots, first.actions, first.invalid_actions)


def draw_stats(results: list[SimResult]) -> dict[str, Any]:
    """`stats` of each draw's tasks, averaged over the draws (``n``: every draw's tasks)."""
    per = [stats([t["completion_s"] for t in r.tasks]) for r in results]
    if not per or any(p["n"] == 0 for p in per):
        return stats([])
    out = {k: float(np.mean([p[k] for p in per])) for k in ("mean_s", "p50_s", "p95_s")}
    return {"n": sum(p["n"] for p in per), **out}


def as_run_summary(
    plan: HilPlan, live: LiveResult, sims: list[SimResult], reps: list[SimResult], calibration: str
) -> dict[str, Any]:
    """The as-run model's keys of a method's summary record (tools/hil/report.py lists them):
    each statistic the mean over the draws of that draw's value (`draw_stats`), the spread of
    the draws' means, decisions agreeing averaged over the draws."""
    done = [r for r in live.records if r["outcome"] != "failed"]
    measured = stats([r["total_s"] for r in done])
    sim, rep = pooled(sims), pooled(reps)
    as_run, replayed = draw_stats(sims), draw_stats(reps)
    arriving = arriving_flops(plan)

    def spread(results: list[SimResult]) -> float | None:
        means = [np.mean([t["completion_s"] for t in r.tasks]) for r in results if r.tasks]
        return float(100 * np.std(means) / np.mean(means)) if len(means) > 1 and np.mean(means) > 0 else None

    agree = [float(np.mean(rp.actions == s.actions)) for s, rp in zip(sims, reps, strict=True) if s.actions.size]
    return {
        "as_run": as_run,
        "as_run_gap_pct": gap_pct(measured["mean_s"], as_run["mean_s"]),
        "as_run_p95_gap_pct": gap_pct(measured["p95_s"], as_run["p95_s"]),
        "as_run_replayed": replayed,
        "as_run_replay_gap_pct": gap_pct(measured["mean_s"], replayed["mean_s"]),
        "as_run_replay_p95_gap_pct": gap_pct(measured["p95_s"], replayed["p95_s"]),
        "as_run_decisions_agree": float(np.mean(agree)) if agree else None,
        "as_run_draws": len(sims),
        "as_run_spread_pct": spread(sims),
        "as_run_replay_spread_pct": spread(reps),
        "components_as_run_s": {k: _mean([t[k] for t in sim.tasks]) for k in COMPONENTS},
        "components_as_run_replayed_s": {k: _mean([t[k] for t in rep.tasks]) for k in COMPONENTS},
        "as_run_backlog": backlog_stats(np.array([s["backlog_flops"] for s in sim.slots]), arriving),
        "as_run_lyapunov": {
            "mean_lyapunov": _mean([s["lyapunov"] for s in sim.slots]),
            "mean_drift": _mean([s["drift"] for s in sim.slots]),
            "mean_penalty": _mean([s["penalty"] for s in sim.slots]),
        },
        "as_run_calibration": calibration,
    }


def compare_as_run(
    plan: HilPlan, live: LiveResult, options: dict[str, str] | None, overheads: Overheads, calibration: str
) -> tuple[SimResult, SimResult, dict[str, Any]]:
    """The as-run model's side of a method's live run (the method deciding on the as-run queues,
    and the live decisions replayed), over `AS_RUN_DRAWS` draws of the link jitter when the
    calibration has one (else one deterministic run); written next to the live files
    (``as_run_tasks.jsonl``, ``as_run_replay_tasks.jsonl`` with every draw's tasks,
    ``as_run_slots.json`` of the first draw); returns the pooled results and the summary keys."""
    draws = AS_RUN_DRAWS if overheads.link_jitter_s > 0 else 1
    sims = [simulate(plan, live.method, options, model="as-run", overheads=overheads, draw=k) for k in range(draws)]
    reps = [replay(plan, live.method, live.records, model="as-run", overheads=overheads, draw=k) for k in range(draws)]
    sim, rep = pooled(sims), pooled(reps)
    write_sim(sim, live.out_dir / "as_run_tasks.jsonl")
    write_sim(rep, live.out_dir / "as_run_replay_tasks.jsonl")
    (live.out_dir / "as_run_slots.json").write_text(json.dumps(sim.slots) + "\n")
    return sim, rep, as_run_summary(plan, live, sims, reps, calibration)


def _mean(values: list[float]) -> float | None:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(vals)) if vals else None


def write_summary(summary: list[dict[str, Any]], out: Path) -> Path:
    path = out / "summary.json"
    path.write_text(json.dumps(summary, indent=1) + "\n")
    return path


def write_sim(sim: SimResult, path: Path) -> None:
    with path.open("w") as f:
        for t in sim.tasks:
            f.write(json.dumps(t) + "\n")
