"""Compare decision methods on the same seeded episodes: per-slot CSV, summary.json, plots.

For every setting (#CVs, #SVs, V) one `VecEnv` with ``n_seeds`` environments is built from the
base scenario; environment e is seeded as child e of SeedSequence(seed), and all randomness is
drawn independently of the actions (policy/sim/env.py), so every method faces exactly the same
episodes. Methods come from the registry in policy/methods/registry.py; one that cannot run a setting
(`MethodNotApplicable`, e.g. p2-optimal on a large instance) is skipped and listed in
``skipped.json`` and on the console, never silently dropped. Two entries are references, not
policies: ``lower-bound`` (policy/methods/bounds.py, a proven floor on any policy's mean completion) and
``best-known`` (policy/methods/baselines.py, the best completion-time planner the project computes); the
console table gives every method's ratio to both where they ran on the same setting.

Outputs in OUT/:

- ``slots.csv``: one row per method, setting, seed and slot: ``completion_s`` (mean per-task delay
  of eq 17 over that slot's tasks, plus the decision time with ``charge_decision``; empty if there
  were none), ``tasks``, the delay parts ``local_s, tx_s, rsu_s, sv_s`` (means over tasks),
  ``backlog_flops`` (all queues after the slot) and its parts ``q_loc_flops, q_rsu_flops,
  q_sv_flops``, ``lyapunov, drift, penalty, p2, reward`` (eqs 29-33, 57) and ``decide_s`` (the
  method's decision time per environment-slot). A bound's rows carry only its per-slot floor.
  Rows are appended after each (method, setting), so an interrupted sweep keeps what it finished.
- ``summary.json``: one record per (method, setting) with the fields of ``SUMMARY_FIELDS``:
  ``mean_completion_s`` is the mean over seeds of each seed's mean per-task delay, ``ci95_s`` the
  half-width of its Student-t 95% interval over seeds (null for one seed); ``p95_completion_s``
  the mean over seeds of each seed's 95th percentile over tasks; backlogs (FLOPs) are over every
  slot and seed; ``backlog_slope_flops_per_slot`` the mean over seeds of the least-squares slope
  of the total backlog over the second half of the slots, with its 95% CI; ``queues_grow`` the
  number of seeds whose queues grow (`growing_seeds`: last quarter's mean backlog above the
  second quarter's by more than half, and by more than one slot's arriving work); ``decide_s`` the median decision time per environment-slot; ``search``
  how a reference searched (best-known: exhaustive or ga(budget); lower-bound: exact or grouped).
- ``summary.md``: the console table in Markdown (`format_summary`).
- ``skipped.json``, ``config.json`` (the resolved base scenario and the sweep), and PNG plots:
  ``completion_vs_cvs.png``, ``completion_vs_svs.png``, ``completion_vs_v.png`` (the other two
  parameters held at 5 / 5 / V = 10 when swept, else at the middle value), ``backlog_vs_v.png``
  (the mean backlog of the same V sweep: the Lyapunov trade-off),
  ``completion_vs_decision.png`` (every method at that base setting against its measured decision
  time, the lower bound as a line) and ``backlog_over_slots.png`` (mean backlog per slot there).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from splitrt.policy.methods.registry import Method, MethodNotApplicable, make_method
from splitrt.policy.sim.asrun import AsRunEnv, make_env, task_table
from splitrt.policy.sim.scenario import Scenario
from splitrt.policy.sim.slot import Tables

log = logging.getLogger(__name__)

CSV_FIELDS = (
    "method",
    "cvs",
    "svs",
    "v",
    "seed",
    "slot",
    "completion_s",
    "tasks",
    "local_s",
    "tx_s",
    "rsu_s",
    "sv_s",
    "backlog_flops",
    "q_loc_flops",
    "q_rsu_flops",
    "q_sv_flops",
    "lyapunov",
    "drift",
    "penalty",
    "p2",
    "reward",
    "decide_s",
)
SUMMARY_FIELDS = (
    "method",
    "cvs",
    "svs",
    "v",
    "seeds",
    "slots",
    "mean_completion_s",
    "ci95_s",
    "p95_completion_s",
    "mean_backlog_flops",
    "max_backlog_flops",
    "backlog_slope_flops_per_slot",
    "slope_ci95_flops_per_slot",
    "queues_grow",
    "decide_s",
    "charge_decision",
    "search",
)


@dataclass(frozen=True)
class Setting:
    cvs: int
    svs: int
    v: float


def settings_grid(cvs: Sequence[int], svs: Sequence[int], vs: Sequence[float], grid: str) -> list[Setting]:
    """``product``: every combination; ``sweeps``: the paper's three one-at-a-time sweeps around the base."""
    if grid == "product":
        return [Setting(c, s, v) for c in cvs for s in svs for v in vs]
    base = base_setting(cvs, svs, vs)
    out = [Setting(c, base.svs, base.v) for c in cvs]
    out += [Setting(base.cvs, s, base.v) for s in svs]
    out += [Setting(base.cvs, base.svs, v) for v in vs]
    return list(dict.fromkeys(out))


def _pick(values: Sequence[Any], preferred: Any) -> Any:
    return preferred if preferred in values else sorted(values)[len(values) // 2]


def base_setting(cvs: Sequence[int], svs: Sequence[int], vs: Sequence[float]) -> Setting:
    """The point the plots hold fixed: 5 CVs, 5 SVs, V = 10 (the paper's), else middle values."""
    return Setting(_pick(cvs, 5), _pick(svs, 5), _pick(vs, 10.0))


@dataclass
class Episodes:
    """Per-slot results of one method on one setting: arrays (seeds, T), per task (seeds, T, N)."""

    completion_sum_s: np.ndarray
    tasks: np.ndarray
    parts_sum_s: dict[str, np.ndarray]
    backlog: dict[str, np.ndarray]
    lyapunov: dict[str, np.ndarray]
    decide_s: np.ndarray
    job_completion_s: np.ndarray | None = None  # (seeds, T, N) every CV's delay (all its m tasks)
    job_tasks: np.ndarray | None = None  # (seeds, T, N) m
    is_bound: bool = False  # a reference floor, not a policy: no queues, no per-task delays
    work_per_slot_flops: float = 0.0  # mean FLOPs arriving per slot (`arriving_work_flops`)


def run_episodes(
    scenario: Scenario, method: Method, n_seeds: int, seed: int, *, charge_decision: bool = False
) -> Episodes:
    """One episode per seed, all seeds batched in one VecEnv.

    ``decide_s`` is the wall time of the method's decision per environment and slot: one call for
    all seeds divided by the seeds, or with ``charge_decision`` one call per environment (the
    method sees that environment alone, as a deployed decider would) timed on its own. With
    ``charge_decision`` each task's completion is eq 17 plus the decision time of its slot and
    environment (the decision delays every task it decides; queues evolve as without it). A
    bound (`splitrt.policy.methods.bounds`) records its per-slot floor F_t as the slot's completion sum.
    """
    env = make_env(scenario, n_envs=n_seeds, seed=seed)
    method.reset(env, seed)
    obs, state, mask = env.reset()
    t_slots = scenario.slots
    shape = (n_seeds, t_slots)
    comp = np.zeros(shape)
    tasks = np.zeros(shape)
    parts = {k: np.zeros(shape) for k in ("local_s", "tx_s", "rsu_s", "sv_s")}
    backlog = {k: np.zeros(shape) for k in ("q_loc_flops", "q_rsu_flops", "q_sv_flops")}
    lyap = {k: np.zeros(shape) for k in ("lyapunov", "drift", "penalty", "p2")}
    decide = np.zeros(shape)
    jobs = np.zeros((*shape, scenario.n_cvs))
    job_m = np.zeros((*shape, scenario.n_cvs))
    bound = bool(getattr(method, "is_bound", False))
    for t in range(t_slots):
        view = env.view()
        if charge_decision:
            actions = np.empty((n_seeds, scenario.n_cvs), dtype=np.int64)
            for e in range(n_seeds):
                one, sl = view.select(e), slice(e, e + 1)
                start = time.perf_counter()
                actions[e] = method.act(obs[sl], state[sl], mask[sl], one)[0]
                decide[e, t] = time.perf_counter() - start
        else:
            start = time.perf_counter()
            actions = method.act(obs, state, mask, view)
            decide[:, t] = (time.perf_counter() - start) / n_seeds
        floor = method.slot_floor(view) if bound else None
        obs, state, mask, _, _, info = env.step(actions)
        m = info["tasks"]
        tasks[:, t] = m.sum(axis=-1)
        comp[:, t] = (info["completion_s"] * m).sum(axis=-1)
        if floor is not None:
            comp[:, t] = floor
        if charge_decision:
            comp[:, t] = comp[:, t] + decide[:, t] * tasks[:, t]
        jobs[:, t] = info["completion_s"] + (decide[:, t, None] if charge_decision else 0.0)
        job_m[:, t] = m
        for k in parts:
            parts[k][:, t] = (info[k] * m).sum(axis=-1)
        for k in backlog:
            backlog[k][:, t] = info[k].sum(axis=-1)
        for k in lyap:
            lyap[k][:, t] = info[k]
    if isinstance(env, AsRunEnv) and not bound:  # completions exist once the queues have served the tasks
        table = task_table(env)
        m = np.maximum(table["tasks"], 1)
        comp[:] = table["completion_s"].sum(axis=-1) + (decide * tasks if charge_decision else 0.0)
        jobs[:] = table["completion_s"] / m + (decide[..., None] if charge_decision else 0.0)
        for k in parts:
            parts[k][:] = table[k].sum(axis=-1)
        lyap["penalty"][:] = scenario.v * table["completion_s"].sum(axis=-1)
    if bound:  # the env was stepped all-local only to advance it: nothing of it describes the bound
        for table in (parts, backlog, lyap):
            for k in table:
                table[k][:] = np.nan
    work = arriving_work_flops(scenario, env.tables)
    return Episodes(comp, tasks, parts, backlog, lyap, decide, jobs, job_m, bound, work)


def total_backlog(ep: Episodes) -> np.ndarray:
    return sum(ep.backlog.values())  # type: ignore[return-value]


def _ci95(values: np.ndarray) -> float | None:
    n = len(values)
    if n < 2:
        return None
    from scipy.stats import t as student_t

    return float(student_t.ppf(0.975, n - 1) * values.std(ddof=1) / math.sqrt(n))


def weighted_quantile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    """The q-quantile of ``values`` repeated ``weights`` times (the lower one at a tie)."""
    keep = weights > 0
    v, w = values[keep], weights[keep]
    if not len(v):
        return math.nan
    order = np.argsort(v, kind="stable")
    cum = np.cumsum(w[order])
    return float(v[order][np.searchsorted(cum, q * cum[-1], side="left")])


def backlog_slope(back: np.ndarray) -> np.ndarray:
    """(seeds,) least-squares slope of the total backlog over the second half of the slots, FLOPs/slot."""
    t_slots = back.shape[1]
    half = back[:, t_slots // 2 :]
    if half.shape[1] < 2:
        return np.zeros(back.shape[0])
    x = np.arange(half.shape[1], dtype=np.float64)
    x -= x.mean()
    return (half - half.mean(axis=1, keepdims=True)) @ x / (x @ x)


#: a seed's queues "grow" when the mean total backlog of the last quarter of the slots exceeds
#: that of the second quarter by more than this fraction of the latter, and by more than the
#: work that arrives in one slot on average (all CVs' whole DNNs, `arriving_work_flops`).
#: (Measured on T = 300 runs: bounded runs wander by +-10 GFLOP around ~20 GFLOP, under the
#: 41 GFLOP arriving per slot at 5 CVs; linear growth from empty gives +133% of the second quarter.)
GROWTH_FRACTION = 0.5


def arriving_work_flops(scenario: Scenario, tables: Tables) -> float:
    """Mean FLOPs arriving per slot: every CV's whole DNN times its mean tasks per slot."""
    rate = 1.0 if scenario.arrivals == "paper" else scenario.arrival_rate_per_slot
    whole = tables.local_flops[np.arange(tables.n_agents), tables.n_cuts - 1]
    return float(rate * whole.sum())


def growing_seeds(back: np.ndarray, work_per_slot_flops: float) -> np.ndarray:
    """(seeds,) bool: the growth mark per seed (see GROWTH_FRACTION); backlog (seeds, T) in FLOPs."""
    quarters = np.array_split(np.asarray(back, dtype=np.float64), 4, axis=1)
    second, last = quarters[1].mean(axis=1), quarters[3].mean(axis=1)
    return last - second > np.maximum(GROWTH_FRACTION * second, work_per_slot_flops)


def queues_grow(back: np.ndarray, work_per_slot_flops: float) -> int:
    """How many seeds' queues grow (`growing_seeds`)."""
    return int(growing_seeds(back, work_per_slot_flops).sum())


def backlog_fields(back: np.ndarray, work_per_slot_flops: float) -> dict[str, Any]:
    """The summary's backlog statistics from the total backlog (seeds, T), FLOPs."""
    slope = backlog_slope(back)
    return {
        "mean_backlog_flops": float(back.mean()),
        "max_backlog_flops": float(back.max()),
        "backlog_slope_flops_per_slot": float(slope.mean()),
        "slope_ci95_flops_per_slot": _ci95(slope),
        "queues_grow": queues_grow(back, work_per_slot_flops),
    }


def rescore(out_dir: Path) -> list[dict[str, Any]]:
    """Recompute the backlog statistics of an evaluation's summary.json from its slots.csv (the
    per-slot backlog is stored exactly) with this version's definitions; rewrites summary.json
    and summary.md and returns the records. Completion statistics are kept as they are."""
    from splitrt.policy.sim.workloads import load_workloads

    config = json.loads((out_dir / "config.json").read_text())
    base = Scenario.from_dict(config["scenario"], source=str(out_dir / "config.json"))
    summary = json.loads((out_dir / "summary.json").read_text())
    backlogs: dict[tuple[str, int, int, float], dict[tuple[int, int], float]] = {}
    with (out_dir / "slots.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row["backlog_flops"]:
                key = (row["method"], int(row["cvs"]), int(row["svs"]), float(row["v"]))
                backlogs.setdefault(key, {})[(int(row["seed"]), int(row["slot"]))] = float(row["backlog_flops"])
    work: dict[tuple[int, int], float] = {}  # per (CVs, SVs): V does not change the arriving work
    for record in summary:
        cells = backlogs.get((record["method"], record["cvs"], record["svs"], float(record["v"])))
        if not cells:
            continue
        back = np.zeros((record["seeds"], record["slots"]))
        for (e, t), value in cells.items():
            back[e, t] = value
        size = (record["cvs"], record["svs"])
        if size not in work:
            scenario = base.replace(n_cvs=record["cvs"], n_svs=record["svs"])
            work[size] = arriving_work_flops(scenario, Tables.build(scenario, load_workloads(scenario)))
        record.update(backlog_fields(back, work[size]))
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out_dir / "summary.md").write_text(format_summary(summary, markdown=True))
    return summary


def summarize(method: str, setting: Setting, ep: Episodes) -> dict[str, Any]:
    """One summary record (module docstring); completion statistics are over tasks."""
    per_seed = ep.completion_sum_s.sum(axis=1) / np.maximum(ep.tasks.sum(axis=1), 1)
    n = len(per_seed)
    out: dict[str, Any] = {
        "method": method,
        "cvs": setting.cvs,
        "svs": setting.svs,
        "v": setting.v,
        "seeds": n,
        "slots": int(ep.tasks.shape[1]),
        "mean_completion_s": float(per_seed.mean()),
        "ci95_s": _ci95(per_seed),
        "p95_completion_s": None,
        "mean_backlog_flops": None,
        "max_backlog_flops": None,
        "backlog_slope_flops_per_slot": None,
        "slope_ci95_flops_per_slot": None,
        "queues_grow": None,
        "decide_s": float(np.median(ep.decide_s)),
        "charge_decision": False,
        "search": None,
    }
    if ep.is_bound:
        out["decide_s"] = None  # not a decision: the floor is computed, not played
        return out
    if ep.job_completion_s is not None and ep.job_tasks is not None:
        p95 = [weighted_quantile(ep.job_completion_s[e].ravel(), ep.job_tasks[e].ravel(), 0.95) for e in range(n)]
        out["p95_completion_s"] = float(np.mean(p95))
    out.update(backlog_fields(total_backlog(ep), ep.work_per_slot_flops))
    return out


def csv_rows(method: str, setting: Setting, seed: int, ep: Episodes) -> list[dict[str, Any]]:
    rows = []
    back = total_backlog(ep)
    n_seeds, t_slots = ep.tasks.shape
    for e in range(n_seeds):
        for t in range(t_slots):
            m = ep.tasks[e, t]

            def per_task(x: np.ndarray, e: int = e, t: int = t, m: float = m) -> str:
                return repr(float(x[e, t] / m)) if m > 0 else ""

            rows.append(
                {
                    "method": method,
                    "cvs": setting.cvs,
                    "svs": setting.svs,
                    "v": setting.v,
                    "seed": e,
                    "slot": t,
                    "completion_s": per_task(ep.completion_sum_s),
                    "tasks": int(m),
                    **{k: per_task(v) for k, v in ep.parts_sum_s.items()},
                    "backlog_flops": float(back[e, t]),
                    **{k: float(v[e, t]) for k, v in ep.backlog.items()},
                    **{k: float(v[e, t]) for k, v in ep.lyapunov.items()},
                    "reward": -float(ep.lyapunov["p2"][e, t]),
                    "decide_s": float(ep.decide_s[e, t]),
                }
            )
            rows[-1] = {k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in rows[-1].items()}
    return rows


def sweep(
    base: Scenario,
    methods: Sequence[str],
    settings: Sequence[Setting],
    n_seeds: int,
    seed: int,
    out_dir: Path,
    method_options: dict[str, dict[str, str]] | None = None,
    progress: Callable[[int, str], None] | None = None,
    charge_decision: bool = False,
    variants: dict[str, str] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[tuple[str, Setting], np.ndarray]]:
    """Run every method on every setting; write slots.csv / summary.json / skipped.json as it goes.

    Returns (summary records, skipped entries, mean backlog per slot per (method, setting)).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / "slots.csv"
    with csv_path.open("w", newline="") as handle:
        csv.DictWriter(handle, fieldnames=CSV_FIELDS).writeheader()
    summary: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    backlog_curves: dict[tuple[str, Setting], np.ndarray] = {}
    options = method_options or {}
    for setting in settings:
        scenario = base.replace(n_cvs=setting.cvs, n_svs=setting.svs, v=setting.v)
        for name in methods:
            label = f"{name} cvs={setting.cvs} svs={setting.svs} V={setting.v:g}"
            method = make_method((variants or {}).get(name, name), options.get(name))
            try:
                ep = run_episodes(scenario, method, n_seeds, seed, charge_decision=charge_decision)
            except MethodNotApplicable as exc:
                log.warning("skipped %s: %s", label, exc)
                skipped.append({"method": name, **setting.__dict__, "reason": str(exc)})
                (out_dir / "skipped.json").write_text(json.dumps(skipped, indent=1) + "\n")
                if progress:
                    progress(scenario.slots, label + " (skipped)")
                continue
            with csv_path.open("a", newline="") as handle:
                csv.DictWriter(handle, fieldnames=CSV_FIELDS).writerows(csv_rows(name, setting, seed, ep))
            record = summarize(name, setting, ep)
            record["charge_decision"] = charge_decision
            if name == "lower-bound":
                record["search"] = "exact" if getattr(method, "exact", False) else "grouped relaxation"
            elif hasattr(method, "search"):
                record["search"] = method.search
            summary.append(record)
            if not ep.is_bound:
                backlog_curves[(name, setting)] = total_backlog(ep).mean(axis=0)
            (out_dir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
            if progress:
                progress(scenario.slots, label)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out_dir / "skipped.json").write_text(json.dumps(skipped, indent=1) + "\n")
    return summary, skipped, backlog_curves


# ---- plots ---------------------------------------------------------------------------------
def plot(
    summary: list[dict[str, Any]],
    backlog_curves: dict[tuple[str, Setting], np.ndarray],
    base: Setting,
    out_dir: Path,
    slot_s: float,
) -> list[Path]:
    """The six PNGs (see the module docstring); returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(r["method"] for r in summary))
    written = []
    sweeps = (
        ("cvs", "number of client vehicles", lambda r: r["svs"] == base.svs and r["v"] == base.v, "svs", "v"),
        ("svs", "number of service vehicles", lambda r: r["cvs"] == base.cvs and r["v"] == base.v, "cvs", "v"),
        ("v", "Lyapunov V", lambda r: r["cvs"] == base.cvs and r["svs"] == base.svs, "cvs", "svs"),
    )

    def finish(fig: Any, ax: Any, name: str, legend_size: int) -> None:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=legend_size)
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=110)
        plt.close(fig)
        written.append(out_dir / name)

    panels = [
        (*sweep, "mean_completion_s", "ci95_s", "mean task completion time (s)", "completion") for sweep in sweeps
    ]
    panels.append((*sweeps[2], "mean_backlog_flops", None, "mean total backlog (GFLOP; queue unit 1 GFLOP)", "backlog"))
    for key, xlabel, keep, fixed_a, fixed_b, field, err_field, ylabel, stem in panels:
        fig, ax = plt.subplots(figsize=(6, 4))
        scale = 1e9 if stem == "backlog" else 1.0
        for method in methods:
            rows = sorted(
                (r for r in summary if r["method"] == method and keep(r) and r[field] is not None), key=lambda r: r[key]
            )
            if not rows:
                continue
            x = [r[key] for r in rows]
            y = [r[field] / scale for r in rows]
            err = [(r[err_field] or 0.0) if err_field else 0.0 for r in rows]
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=method)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(
            f"{fixed_a} = {getattr(base, fixed_a):g}, {fixed_b} = {getattr(base, fixed_b):g}; 95% CI over seeds"
        )
        if key == "v":
            ax.set_xscale("log")
        if stem == "backlog":
            ax.set_yscale("symlog", linthresh=1.0)
        xs = sorted({r[key] for r in summary if keep(r)})
        ax.set_xticks(xs, [f"{x:g}" for x in xs])
        finish(fig, ax, f"{stem}_vs_{key}.png", 8)

    fig, ax = plt.subplots(figsize=(6, 4))
    at_base = [
        r
        for r in summary
        if (r["cvs"], r["svs"], r["v"]) == (base.cvs, base.svs, base.v) and r["method"] != "lower-bound"
    ]
    for r in at_base:
        ax.errorbar(
            max(r["decide_s"], 1e-6),
            r["mean_completion_s"],
            yerr=r["ci95_s"] or 0.0,
            marker="o",
            capsize=3,
            label=r["method"],
        )
    floor = _reference(summary, "lower-bound", at_base[0]) if at_base else None
    if floor:
        ax.axhline(floor, color="k", linestyle="--", linewidth=1, label="lower bound")
    ax.set_xscale("log")
    ax.set_yscale("log")  # methods whose queues grow sit orders of magnitude above the rest
    ax.set_xlabel("decision time per slot and environment (s, measured)")
    ax.set_ylabel("mean task completion time (s)")
    ax.set_title(f"cvs = {base.cvs}, svs = {base.svs}, V = {base.v:g}; 95% CI over seeds")
    finish(fig, ax, "completion_vs_decision.png", 7)

    fig, ax = plt.subplots(figsize=(6, 4))
    for method in methods:
        curve = backlog_curves.get((method, base))
        if curve is not None:
            ax.plot((np.arange(len(curve)) + 1), curve / 1e9, label=method)
    ax.set_xlabel(f"slot ({slot_s:g} s each)")
    ax.set_ylabel("total queue backlog (GFLOP)")
    ax.set_title(f"cvs = {base.cvs}, svs = {base.svs}, V = {base.v:g}; mean over seeds")
    ax.set_yscale("symlog", linthresh=1.0)
    finish(fig, ax, "backlog_over_slots.png", 8)
    return written


def _reference(summary: list[dict[str, Any]], name: str, r: dict[str, Any]) -> float | None:
    for ref in summary:
        if ref["method"] == name and all(ref[k] == r[k] for k in ("cvs", "svs", "v", "slots")):
            return ref["mean_completion_s"]
    return None


def format_summary(summary: list[dict[str, Any]], markdown: bool = False) -> str:
    """The console table: completion (mean, 95% CI, p95), backlog (mean, second-half slope, a
    "grows" mark), decision time, and the ratios to best-known and to the lower bound where those
    references ran on the same setting. ``markdown``: the same table in Markdown (summary.md)."""
    rows = [
        (
            "method",
            "cvs",
            "svs",
            "V",
            "T",
            "seeds",
            "completion s",
            "±95%",
            "p95 s",
            "x best-known",
            "x bound",
            "backlog GFLOP",
            "slope GFLOP/slot",
            "queues",
            "decide ms",
        )
    ]
    for r in summary:
        ci = "" if r["ci95_s"] is None else f"{r['ci95_s']:.3f}"
        best, floor = _reference(summary, "best-known", r), _reference(summary, "lower-bound", r)
        mean = r["mean_completion_s"]

        def opt(key: str, fmt: str, scale: float = 1.0, r: dict[str, Any] = r) -> str:
            return "" if r.get(key) is None else format(r[key] / scale, fmt)

        rows.append(
            (
                r["method"],
                str(r["cvs"]),
                str(r["svs"]),
                f"{r['v']:g}",
                str(r.get("slots", "")),
                str(r["seeds"]),
                f"{mean:.3f}",
                ci,
                opt("p95_completion_s", ".3f"),
                "" if not best else f"{mean / best:.2f}",
                "" if not floor else f"{mean / floor:.2f}",
                opt("mean_backlog_flops", ".1f", 1e9),
                opt("backlog_slope_flops_per_slot", "+.3f", 1e9),
                ""
                if r.get("queues_grow") is None
                else (f"GROW {r['queues_grow']}/{r['seeds']}" if r["queues_grow"] else "bounded"),
                opt("decide_s", ".2f", 1e-3),
            )
        )
    if markdown:
        lines = ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join([lines[0], "|" + "---|" * len(rows[0]), *lines[1:]]) + "\n"
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        for row in rows
    )
