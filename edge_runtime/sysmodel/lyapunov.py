"""Lyapunov bookkeeping of the queue controller (SYSTEM_MODEL.md "Objective and Lyapunov transform",
eqs 8, 10, 16, 29-33, 57), shared by the simulator and the live edge server.

Queues are kept in FLOPs everywhere, but every quadratic quantity here is computed in GFLOPs
(`QUEUE_UNIT_FLOPS`, the unit `allocation.allocate_rsu` solves P3 in): the paper reads GHz as
GFLOP/s, and its V = 10..150 only trades delay against backlog at that scale (see the
allocation module's docstring). So L(Q) is in GFLOP^2, Q * (arrivals - service) in GFLOP^2, and the
penalty V * sum d_i in V x seconds.

A "queue set" is a list of arrays, one per kind of queue (local queues (..., N), RSU type queues
(..., K), SV queues (..., S)); sums run over the last axis of each and over the list, so any
leading shape (environments, candidate actions) is kept.

- eq (29)  L(Q) = 1/2 (sum Q_loc^2 + sum Q_k^2 + sum Q_veh^2)
- drift    Delta(t) = L(Q(t+1)) - L(Q(t))   (the realised one-slot drift, for logging)
- eq (33)  P2(t) = sum Q(t) * (A(t) - S(t)) + V * sum_i d_i(t)   (the per-slot objective: the
           drift-plus-penalty bound of eq 32 without its constant B; A = FLOPs arriving at a queue
           this slot, S = its service f * tau)
- eq (57)  r(t) = -P2(t), the common reward of every agent.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from splitrt.edge_runtime.sysmodel.allocation import QUEUE_UNIT_FLOPS


def queue_update(q_flops: np.ndarray, service_flops: np.ndarray, arrivals_flops: np.ndarray) -> np.ndarray:
    """Q(t+1) = max(Q(t) - service + arrivals, 0) (eqs 8, 10, 16), in FLOPs, elementwise."""
    return np.maximum(np.asarray(q_flops) - service_flops + arrivals_flops, 0.0)


def _sum_last(parts: Sequence[np.ndarray]) -> np.ndarray:
    total = None
    for p in parts:
        s = np.sum(p, axis=-1)
        total = s if total is None else total + s
    if total is None:
        raise ValueError("a queue set needs at least one array")
    return total


def lyapunov(queues_flops: Sequence[np.ndarray]) -> np.ndarray:
    """L(Q) of eq (29) in GFLOP^2, over the last axis of every array in the queue set."""
    return 0.5 * _sum_last([np.square(np.asarray(q, dtype=np.float64) / QUEUE_UNIT_FLOPS) for q in queues_flops])


def drift(queues_now_flops: Sequence[np.ndarray], queues_next_flops: Sequence[np.ndarray]) -> np.ndarray:
    """Realised one-slot drift L(Q(t+1)) - L(Q(t)) in GFLOP^2 (the quantity eq 31 bounds)."""
    return lyapunov(queues_next_flops) - lyapunov(queues_now_flops)


def queue_pressure(
    queues_flops: Sequence[np.ndarray],
    arrivals_flops: Sequence[np.ndarray],
    service_flops: Sequence[np.ndarray],
) -> np.ndarray:
    """sum Q(t) * (A(t) - S(t)) in GFLOP^2: the queue part of P2(t) (eq 33). Lists align per kind."""
    if not (len(queues_flops) == len(arrivals_flops) == len(service_flops)):
        raise ValueError("queues, arrivals and service must list the same kinds of queue")
    u = QUEUE_UNIT_FLOPS
    return _sum_last(
        [
            (np.asarray(q, dtype=np.float64) / u) * ((np.asarray(a) - np.asarray(s)) / u)
            for q, a, s in zip(queues_flops, arrivals_flops, service_flops, strict=True)
        ]
    )


def penalty(delays_s: np.ndarray, v: float) -> np.ndarray:
    """V * sum_i d_i over the last axis (eq 33's penalty; delays in seconds)."""
    return v * np.sum(np.asarray(delays_s, dtype=np.float64), axis=-1)


def p2_objective(
    queues_flops: Sequence[np.ndarray],
    arrivals_flops: Sequence[np.ndarray],
    service_flops: Sequence[np.ndarray],
    delays_s: np.ndarray,
    v: float,
) -> np.ndarray:
    """P2(t) of eq (33): queue_pressure + V * sum_i d_i."""
    return queue_pressure(queues_flops, arrivals_flops, service_flops) + penalty(delays_s, v)


def reward(p2: np.ndarray) -> np.ndarray:
    """The common reward of eq (57): r(t) = -P2(t)."""
    return -np.asarray(p2)
