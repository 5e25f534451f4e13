"""The RSU's compute shares: P3 (SYSTEM_MODEL.md eqs 43-52) solved from the node's live queues.

The share of type k is f_k / F with f from `allocate_rsu`, solved at every slot boundary, before
answering a state request (so the snapshot's allocation is that of its queues), and after arrivals
while two or more types have work (only then can the shares change what runs next): at most every
``resolve_s`` (default tau / 10), and at once when the arriving type's share is 0 (so no type
waits for its first share). Inputs per type: `queue_inputs` of its tasks queued or running.
The server decides when; this class holds the bookkeeping and does the solve.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from splitrt.edge_runtime.node.scheduler import FairScheduler
from splitrt.edge_runtime.sysmodel.allocation import allocate_rsu, queue_inputs


class RsuAllocator:
    """``allocation``: the inputs and output of the last solve (the snapshot's ``allocation``);
    ``dirty``: a task arrived since; ``last_solve``: when (perf_counter s)."""

    def __init__(self, capacity_flops_per_s: float, slot_s: float, v: float, resolve_s: float) -> None:
        self.capacity_flops_per_s = capacity_flops_per_s
        self.slot_s = slot_s
        self.v = v
        self.resolve_s = resolve_s
        self.allocation: dict[str, Any] | None = None
        self.dirty = False
        self.last_solve = -float("inf")

    @staticmethod
    def contended(sched: FairScheduler) -> bool:
        """(lock) Two or more types have work."""
        return sum(1 for name in sched.names if next(sched.jobs(name), None) is not None) >= 2

    def inputs(self, sched: FairScheduler, slot: int, now: float) -> tuple[list[str], np.ndarray]:
        """(lock) The queue names and their (Q, W, n) rows at ``slot``; marks the solve as done at ``now``."""
        names = sched.names
        rows = np.array([queue_inputs(((j.slot, j.flops) for j in sched.jobs(name)), slot) for name in names])
        self.dirty = False
        self.last_solve = now
        return names, rows.reshape(len(names), 3)

    def solve(self, inputs: tuple[list[str], np.ndarray], slot: int, time_s: float) -> tuple[dict[str, float], dict]:
        """(no lock) The shares by queue and the allocation record of this solve."""
        names, rows = inputs
        q, w, n = rows[:, 0], rows[:, 1], rows[:, 2]
        capacity = self.capacity_flops_per_s
        f = allocate_rsu(q, w, n, capacity, self.slot_s, self.v)
        shares = {name: float(f[k] / capacity) for k, name in enumerate(names)}
        allocation = {
            "slot": slot,
            "time_s": time_s,
            "tau_s": self.slot_s,
            "v": self.v,
            "capacity_flops_per_s": capacity,
            "q_flops": dict(zip(names, q.tolist(), strict=True)),
            "w_flops": dict(zip(names, w.tolist(), strict=True)),
            "n_tasks": dict(zip(names, n.astype(int).tolist(), strict=True)),
            "f_flops_per_s": dict(zip(names, f.tolist(), strict=True)),
            "share": shares,
        }
        return shares, allocation
