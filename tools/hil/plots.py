"""The plots of a `splitrt hil` report (matplotlib, Agg backend, PNGs next to the report).

``completion_cdf.png``: completion-time CDFs per method, measured / simulated / replayed;
``components.png``: the mean delay per task in the simulator's five parts, stacked;
``queues.png`` and ``lyapunov.png``: backlog and L(Q) at each slot start, measured against
simulated, with the fault windows shaded (`shade_faults`); the queue and Lyapunov plots add the
as-run model's trajectory (its first draw) where ``<method>/as_run_slots.json`` exists.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from splitrt.tools.hil.comparison import GFLOP
from splitrt.tools.hil.plan import HilPlan
from splitrt.tools.hil.runner import LiveResult
from splitrt.tools.hil.simulate import COMPONENTS, SimResult


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
            as_run = _as_run_slots(live.out_dir)
            if as_run:
                vals = [0.0] + [s[key_sim] for s in as_run][:-1]
                ax.plot(np.arange(len(vals)) * tau, np.asarray(vals) / scale, ":", label="as-run")
            ax.set_title(m)
            ax.set_xlabel("time (s)")
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel(ylabel)
        axes[0][0].legend()
        fig.tight_layout()
        written.append(_save(fig, out / name))
    return written


def _as_run_slots(method_dir: Path) -> list[dict[str, Any]]:
    """The as-run model's per-slot queues of a method (``as_run_slots.json``; none before it ran)."""
    import json

    path = method_dir / "as_run_slots.json"
    try:
        return json.loads(path.read_text()) if path.is_file() else []
    except (OSError, ValueError):
        return []


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
