"""Fit the as-run model's per-task overheads (policy/sim/asrun.py `Overheads`) from live task records.

Every fitted value is a statistic of the records' own duration parts
(splitrt.edge_runtime.formats.records), over the tasks that completed (``remote`` or ``local``):

| overhead | fitted from |
|---|---|
| ``decide_s``, ``decide_by`` | mean ``decide_s``, over all tasks and per decider |
| ``local_handoff_s`` | mean ``local_wait_s`` of the tasks with a head (cut >= 1) that found the local FIFO empty (``q_loc_flops`` = 0) |
| ``encode_s``, ``encode_s_per_byte`` | least squares of ``encode_s`` on the payload bytes (offloaded tasks) |
| ``link_s``, ``link_s_per_byte`` | least squares, on the payload bytes, of ``transfer_s`` minus the shaped uplink time (the bytes over the tc rates of the link from the send on, per slot) |
| ``link_jitter_s`` | the residual standard deviation of that fit |
| ``rsu_handoff_s``, ``sv_handoff_s`` | mean ``remote_wait_s`` of the tasks that found their queue empty (``remote_backlog_tasks`` = 0) |
| ``rsu_other_s``, ``sv_other_s`` | mean ``remote_other_s`` per node kind |
| ``decode_s`` | mean ``decode_s`` of the remote tasks |

A slope that comes out negative (noise) is set to 0 and the intercept refitted as the mean. Each
fit's count and residual spread go into the file next to the values, so a calibration from too
few tasks shows. Files: ``{"format_version": 1, "overheads": {...}, "fits": {...},
"source": ..., "methods": [...], "scenario": ..., "tasks": n}``; `load_calibration` (the
simulator side) reads them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from splitrt.edge_runtime.errors import SplitrtError
from splitrt.policy.sim.asrun import CALIBRATION_VERSION, Overheads, shaped_end_s
from splitrt.tools.hil.plan import HilPlan
from splitrt.tools.hil.runner import LiveResult

#: fewer tasks than this in a fit make its value the default 0 (and the fit says so)
MIN_TASKS = 3


def _mean_fit(values: list[float]) -> tuple[float, dict[str, Any]]:
    if len(values) < MIN_TASKS:
        return 0.0, {"n": len(values), "note": f"fewer than {MIN_TASKS} tasks: 0"}
    a = np.asarray(values, dtype=np.float64)
    return float(max(a.mean(), 0.0)), {"n": len(a), "mean_s": float(a.mean()), "std_s": float(a.std())}


def _line_fit(x: list[float], y: list[float]) -> tuple[float, float, dict[str, Any]]:
    """(intercept, slope) of y on x, both >= 0, with the fit's count and residual std."""
    if len(y) < MIN_TASKS:
        return 0.0, 0.0, {"n": len(y), "note": f"fewer than {MIN_TASKS} tasks: 0"}
    xa, ya = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if np.ptp(xa) > 0:
        slope, intercept = np.polyfit(xa, ya, 1)
    else:
        slope, intercept = 0.0, float(ya.mean())
    if slope < 0:
        slope, intercept = 0.0, float(ya.mean())
    intercept = max(float(intercept), 0.0)
    resid = ya - (intercept + slope * xa)
    return intercept, float(slope), {"n": len(ya), "residual_std_s": float(resid.std()), "mean_s": float(ya.mean())}


def shaped_uplink_s(plan: HilPlan, cv: int, node: int, send_s: float, n_bytes: float) -> float:
    """Seconds for ``n_bytes`` sent at ``send_s`` (from slot 0) over link (cv, node) at the tc rates."""
    start = max(send_s, 0.0)
    return shaped_end_s(plan.rates_bps[:, cv, node], plan.scenario.slot_s, start, n_bytes) - start


def estimate_epoch(records: list[dict[str, Any]], plan: HilPlan) -> float:
    """Slot 0's start (unix s) from the records: tasks arrive at their slot's start (median)."""
    tau = plan.scenario.slot_s
    starts = [r["arrival_unix_s"] - r["slot"] * tau for r in records if r.get("arrival_unix_s") is not None]
    return float(np.median(starts)) if starts else math.nan


def fit_overheads(
    plan: HilPlan, lives: Iterable[LiveResult], plans: dict[str, HilPlan] | None = None
) -> tuple[Overheads, dict[str, Any]]:
    """The overheads of the records of ``lives`` (module docstring) and each fit's detail;
    ``plans[method]`` replaces ``plan``'s link rates for that method's records (measured links)."""
    ids = [cv.id for cv in plan.cvs]
    decide: list[float] = []
    decide_by: dict[str, list[float]] = {}
    handoff, enc_x, enc_y, link_x, link_y, decode = [], [], [], [], [], []
    node_wait: dict[str, list[float]] = {"rsu": [], "sv": []}
    node_other: dict[str, list[float]] = {"rsu": [], "sv": []}
    n_tasks = 0
    for live in lives:
        link_plan = (plans or {}).get(live.method, plan)
        epoch = live.epoch_unix_s if math.isfinite(live.epoch_unix_s) else estimate_epoch(live.records, plan)
        for r in live.records:
            if r.get("outcome") not in ("remote", "local") or r.get("cut") is None:
                continue
            n_tasks += 1
            decide.append(r["decide_s"])
            decide_by.setdefault(str(r.get("decider", "")), []).append(r["decide_s"])
            if r["cut"] >= 1 and not r.get("q_loc_flops"):
                handoff.append(r["local_wait_s"])
            if r["outcome"] != "remote":
                continue
            n_bytes = float(r["bytes"])
            enc_x.append(n_bytes)
            enc_y.append(r["encode_s"])
            kind = "rsu" if r["node"] == 0 else "sv"
            if r.get("remote_backlog_tasks") == 0:
                node_wait[kind].append(r["remote_wait_s"])
            node_other[kind].append(r["remote_other_s"])
            decode.append(r["decode_s"])
            if math.isfinite(epoch) and r["vehicle_id"] in ids:
                sent = (
                    r["arrival_unix_s"]
                    - epoch
                    + r["decide_s"]
                    + r["local_wait_s"]
                    + r["local_compute_s"]
                    + r["encode_s"]
                )
                shaped = shaped_uplink_s(link_plan, ids.index(r["vehicle_id"]), int(r["node"]), sent, n_bytes)
                if math.isfinite(shaped):
                    link_x.append(n_bytes)
                    link_y.append(r["transfer_s"] - shaped)
    if n_tasks == 0:
        raise SplitrtError("no completed task records to calibrate from")
    fits: dict[str, Any] = {}
    values: dict[str, Any] = {}
    values["decide_s"], fits["decide_s"] = _mean_fit(decide)
    values["decide_by"] = {}
    for name, ds in sorted(decide_by.items()):
        if name and len(ds) >= MIN_TASKS:
            values["decide_by"][name], fits[f"decide_by.{name}"] = _mean_fit(ds)
    values["local_handoff_s"], fits["local_handoff_s"] = _mean_fit(handoff)
    values["encode_s"], values["encode_s_per_byte"], fits["encode"] = _line_fit(enc_x, enc_y)
    values["link_s"], values["link_s_per_byte"], fits["link"] = _line_fit(link_x, link_y)
    values["link_jitter_s"] = fits["link"].get("residual_std_s", 0.0)
    for kind in ("rsu", "sv"):
        values[f"{kind}_handoff_s"], fits[f"{kind}_handoff_s"] = _mean_fit(node_wait[kind])
        values[f"{kind}_other_s"], fits[f"{kind}_other_s"] = _mean_fit(node_other[kind])
    values["decode_s"], fits["decode_s"] = _mean_fit(decode)
    return Overheads.from_dict(values, "calibration"), {"fits": fits, "tasks": n_tasks}


def write_calibration(
    path: Path, plan: HilPlan, lives: list[LiveResult], source: str, plans: dict[str, HilPlan] | None = None
) -> tuple[Overheads, Path]:
    """Fit from ``lives`` and write the calibration file at ``path`` (``plans`` as in fit_overheads)."""
    overheads, detail = fit_overheads(plan, lives, plans)
    data = {
        "format_version": CALIBRATION_VERSION,
        "source": source,
        "methods": [live.method for live in lives],
        "scenario": plan.preset_scenario.name,
        "slot_s": plan.scenario.slot_s,
        "tasks": detail["tasks"],
        "overheads": overheads.to_dict(),
        "fits": detail["fits"],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")
    return overheads, path
