"""Measured links: on real hosts nothing shapes the links, so the simulator's side of the comparison
takes the rates the vehicles measured instead of the channel model's.

`measured_plan(plan, records)` is ``plan`` with ``rates_bps[t, cv, node]`` replaced by what the
records of that slot measured on that link: 8 x payload bytes / transfer seconds of every remote
task that CV sent there in slot t (their mean when several). A link without a transfer in a slot
takes that link's median over the slots that had one; a link never used keeps the channel
model's rate (nothing was measured; no task of the run crossed it, so no simulated one does).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


def measured_rates(plan, records: list[dict[str, Any]]) -> tuple[np.ndarray, dict[str, int]]:
    """(T, N, J) rates in bit/s and {"measured", "filled", "model"}: how many entries came from each source."""
    t_slots, n, j = plan.rates_bps.shape
    ids = {cv.id: i for i, cv in enumerate(plan.cvs)}
    total = np.zeros((t_slots, n, j))
    count = np.zeros((t_slots, n, j))
    for r in records:
        if r.get("outcome") != "remote" or r.get("node") is None or r.get("vehicle_id") not in ids:
            continue
        b, s, slot = float(r.get("bytes") or 0), float(r.get("transfer_s") or 0), r.get("slot")
        if b > 0 and s > 0 and slot is not None and 0 <= int(slot) < t_slots and 0 <= int(r["node"]) < j:
            total[int(slot), ids[r["vehicle_id"]], int(r["node"])] += 8.0 * b / s
            count[int(slot), ids[r["vehicle_id"]], int(r["node"])] += 1
    rates = np.array(plan.rates_bps, dtype=np.float64, copy=True)
    seen = count > 0
    rates[seen] = total[seen] / count[seen]
    filled = 0
    for i in range(n):
        for k in range(j):
            col = seen[:, i, k]
            if col.any() and not col.all():
                rates[~col, i, k] = float(np.median(rates[col, i, k]))
                filled += int((~col).sum())
    info = {"measured": int(seen.sum()), "filled": filled, "model": int(seen.size - seen.sum() - filled)}
    return rates, info


def measured_plan(plan, records: list[dict[str, Any]]):
    rates, _ = measured_rates(plan, records)
    return dataclasses.replace(plan, rates_bps=rates, links="measured")
