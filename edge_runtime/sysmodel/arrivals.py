"""What a slot's decisions add to each queue: the arrivals A(t) of eqs 8, 10 and 16 (SYSTEM_MODEL.md
"Computation and queues"), written once for the simulator (policy/sim/slot.py, vectorised over
environments) and for the controller on measured records (splitrt.edge_runtime.experiment.controller).

A task cut at c (manifest indexing: segments [0, c) run on its CV; c = n_cuts - 1 is fully local)
adds its head's work b to its CV's local queue when c > 0, and, when it offloads (c < n_cuts - 1),
its tail's work to the RSU queue of its DNN type (node 0) or to the chosen SV's queue (node j > 0).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class TaskArrivals(NamedTuple):
    """Per task: whether it offloads / runs a head, and the work it adds where."""

    offload: np.ndarray  # bool: the tail leaves the CV
    runs_local: np.ndarray  # bool: a head runs on the CV (cut > 0)
    b: np.ndarray  # head work on the CV's queue (eq 8)
    to_rsu: np.ndarray  # bool
    w_rsu: np.ndarray  # tail work at the RSU (eq 10, per type)
    to_sv: np.ndarray  # bool
    w_sv: np.ndarray  # tail work at the chosen SV (eq 16)


def task_arrivals(
    cut: np.ndarray,
    node: np.ndarray,
    n_cuts: np.ndarray,
    local_at_cut: np.ndarray,
    rsu_at_cut: np.ndarray,
    sv_at_cut: np.ndarray,
    tasks: np.ndarray | float = 1.0,
) -> TaskArrivals:
    """Per task (any shape, broadcast): `TaskArrivals`.

    ``*_at_cut`` are the work tables read at each task's cut; ``tasks`` the number of tasks
    behind each entry (the simulator's per-CV arrivals; 0: none). ``node`` < 0 means no node."""
    tasks = np.asarray(tasks, dtype=np.float64)
    has = tasks > 0
    offload = (cut < n_cuts - 1) & has
    runs_local = (cut > 0) & has
    b = np.where(runs_local, local_at_cut * tasks, 0.0)
    to_rsu = offload & (node == 0)
    to_sv = offload & (node > 0)
    w_rsu = np.where(to_rsu, rsu_at_cut * tasks, 0.0)
    w_sv = np.where(to_sv, sv_at_cut * tasks, 0.0)
    return TaskArrivals(offload, runs_local, b, to_rsu, w_rsu, to_sv, w_sv)


def per_queue(values: np.ndarray, owner_onehot: np.ndarray) -> np.ndarray:
    """Sum per-task ``values`` (..., N) into their queues with ``owner_onehot`` (N, K) -> (..., K)."""
    return np.sum(values[..., :, None] * owner_onehot, axis=-2)
