"""Compare decision methods on the same seeded episodes: per-slot CSV, summary.json, plots.

For every setting (#CVs, #SVs, V) one `VecEnv` with ``n_seeds`` environments is built from the
base scenario; environment e is seeded as child e of SeedSequence(seed), and all randomness is
drawn independently of the actions (policy/env.py), so every method faces exactly the same
episodes. Methods come from the registry in policy/methods.py; one that cannot run a setting
(`MethodNotApplicable`, e.g. the oracle on a large instance) is skipped and listed in
``skipped.json`` and on the console, never silently dropped.

Outputs in OUT/:

- ``slots.csv``: one row per method, setting, seed and slot: ``completion_s`` (mean per-task delay
  of eq 17 over that slot's tasks; empty if there were none), ``tasks``, the delay parts
  ``local_s, tx_s, rsu_s, sv_s`` (means over tasks), ``backlog_flops`` (all queues after the
  slot) and its parts ``q_loc_flops, q_rsu_flops, q_sv_flops``, ``lyapunov, drift, penalty, p2,
  reward`` (eqs 29-33, 57) and ``decide_s`` (the method's decision time per environment-slot).
  Rows are appended after each (method, setting), so an interrupted sweep keeps what it finished.
- ``summary.json``: a list of ``{"method", "cvs", "svs", "v", "seeds", "mean_completion_s",
  "ci95_s", "mean_backlog_flops", "max_backlog_flops"}``. ``mean_completion_s`` is the mean over
  seeds of each seed's mean per-task delay, ``ci95_s`` the half-width of its Student-t 95%
  interval over seeds (null for one seed); backlogs are over every slot and seed.
- ``skipped.json``, ``config.json`` (the resolved base scenario and the sweep), and PNG plots:
  ``completion_vs_cvs.png``, ``completion_vs_svs.png``, ``completion_vs_v.png`` (the other two
  parameters held at 5 / 5 / V = 10 when swept, else at the middle value) and
  ``backlog_over_slots.png`` (mean backlog per slot at that base setting).
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

from policy.config import Scenario
from policy.env import VecEnv
from policy.methods import Method, MethodNotApplicable, make_method

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
    "mean_completion_s",
    "ci95_s",
    "mean_backlog_flops",
    "max_backlog_flops",
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
    """Per-slot results of one method on one setting: arrays (seeds, T)."""

    completion_sum_s: np.ndarray
    tasks: np.ndarray
    parts_sum_s: dict[str, np.ndarray]
    backlog: dict[str, np.ndarray]
    lyapunov: dict[str, np.ndarray]
    decide_s: np.ndarray


def run_episodes(scenario: Scenario, method: Method, n_seeds: int, seed: int) -> Episodes:
    """One episode per seed, all seeds batched in one VecEnv."""
    env = VecEnv(scenario, n_envs=n_seeds, seed=seed)
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
    for t in range(t_slots):
        start = time.perf_counter()
        actions = method.act(obs, state, mask, env.view())
        decide[:, t] = (time.perf_counter() - start) / n_seeds
        obs, state, mask, _, _, info = env.step(actions)
        m = info["tasks"]
        tasks[:, t] = m.sum(axis=-1)
        comp[:, t] = (info["completion_s"] * m).sum(axis=-1)
        for k in parts:
            parts[k][:, t] = (info[k] * m).sum(axis=-1)
        for k in backlog:
            backlog[k][:, t] = info[k].sum(axis=-1)
        for k in lyap:
            lyap[k][:, t] = info[k]
    return Episodes(comp, tasks, parts, backlog, lyap, decide)


def total_backlog(ep: Episodes) -> np.ndarray:
    return sum(ep.backlog.values())  # type: ignore[return-value]


def summarize(method: str, setting: Setting, ep: Episodes) -> dict[str, Any]:
    per_seed = ep.completion_sum_s.sum(axis=1) / np.maximum(ep.tasks.sum(axis=1), 1)
    n = len(per_seed)
    ci = None
    if n > 1:
        from scipy.stats import t as student_t

        ci = float(student_t.ppf(0.975, n - 1) * per_seed.std(ddof=1) / math.sqrt(n))
    back = total_backlog(ep)
    return {
        "method": method,
        "cvs": setting.cvs,
        "svs": setting.svs,
        "v": setting.v,
        "seeds": n,
        "mean_completion_s": float(per_seed.mean()),
        "ci95_s": ci,
        "mean_backlog_flops": float(back.mean()),
        "max_backlog_flops": float(back.max()),
    }


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
            method = make_method(name, options.get(name))
            try:
                ep = run_episodes(scenario, method, n_seeds, seed)
            except MethodNotApplicable as exc:
                log.warning("skipped %s: %s", label, exc)
                skipped.append({"method": name, **setting.__dict__, "reason": str(exc)})
                (out_dir / "skipped.json").write_text(json.dumps(skipped, indent=1) + "\n")
                if progress:
                    progress(scenario.slots, label + " (skipped)")
                continue
            with csv_path.open("a", newline="") as handle:
                csv.DictWriter(handle, fieldnames=CSV_FIELDS).writerows(csv_rows(name, setting, seed, ep))
            summary.append(summarize(name, setting, ep))
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
    """The four PNGs (see the module docstring); returns their paths."""
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
    for key, xlabel, keep, fixed_a, fixed_b in sweeps:
        fig, ax = plt.subplots(figsize=(6, 4))
        for method in methods:
            rows = sorted((r for r in summary if r["method"] == method and keep(r)), key=lambda r: r[key])
            if not rows:
                continue
            x = [r[key] for r in rows]
            y = [r["mean_completion_s"] for r in rows]
            err = [r["ci95_s"] or 0.0 for r in rows]
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=method)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("mean task completion time (s)")
        ax.set_title(
            f"{fixed_a} = {getattr(base, fixed_a):g}, {fixed_b} = {getattr(base, fixed_b):g}; 95% CI over seeds"
        )
        if key == "v":
            ax.set_xscale("log")
        xs = sorted({r[key] for r in summary if keep(r)})
        ax.set_xticks(xs, [f"{x:g}" for x in xs])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        path = out_dir / f"completion_vs_{key}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    fig, ax = plt.subplots(figsize=(6, 4))
    for method in methods:
        curve = backlog_curves.get((method, base))
        if curve is not None:
            ax.plot((np.arange(len(curve)) + 1), curve / 1e9, label=method)
    ax.set_xlabel(f"slot ({slot_s:g} s each)")
    ax.set_ylabel("total queue backlog (GFLOP)")
    ax.set_title(f"cvs = {base.cvs}, svs = {base.svs}, V = {base.v:g}; mean over seeds")
    ax.set_yscale("symlog", linthresh=1.0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    path = out_dir / "backlog_over_slots.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)
    return written


def format_summary(summary: list[dict[str, Any]]) -> str:
    rows = [("method", "cvs", "svs", "V", "seeds", "completion s", "±95%", "mean backlog GFLOP", "max GFLOP")]
    for r in summary:
        ci = "" if r["ci95_s"] is None else f"{r['ci95_s']:.3f}"
        rows.append(
            (
                r["method"],
                str(r["cvs"]),
                str(r["svs"]),
                f"{r['v']:g}",
                str(r["seeds"]),
                f"{r['mean_completion_s']:.3f}",
                ci,
                f"{r['mean_backlog_flops'] / 1e9:.1f}",
                f"{r['max_backlog_flops'] / 1e9:.1f}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        for row in rows
    )
