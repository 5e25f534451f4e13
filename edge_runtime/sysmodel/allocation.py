"""Closed-form convex allocation of the RSU's compute among DNN types (SYSTEM_MODEL.md P3, eqs 43-52).

One implementation for everyone: the live RSU server (splitrt.edge_runtime.node.server) calls it every slot
from its measured queues, and the simulator (policy/) calls it vectorised over environments.

P3:   min_f  sum_k [ Gamma_k / f_k  -  Q_k * f_k * tau ]   s.t.  sum_k f_k = F,  f_k >= 0
      Gamma_k = V*Q_k + V*sum_{i in I_k} W_i + (V/2) * sum_{i in I_k} sum_{i' != i in I_k} W_i'
              = V * (Q_k + W_k * (n_k + 1) / 2)       with W_k = sum_{i in I_k} W_i, n_k = |I_k|

KKT:  f_k* = sqrt(Gamma_k / (eta* - Q_k * tau)),  eta* > max_k Q_k * tau,  sum_k f_k* = F.

Units. `kkt_allocation` is unit-agnostic, but P3 is not scale-free: Gamma/f is in V x seconds
whatever the unit, while Q*f*tau scales with the square of the queue unit. The paper reads GHz
as GFLOP/s and its V = 10, 50, 150 only trade delay against backlog at that scale, so every
caller goes through `allocate_rsu`, which takes FLOPs and FLOP/s and solves P3 in GFLOPs and
GFLOP/s (`QUEUE_UNIT_FLOPS`), the same unit the Lyapunov terms use (splitrt.edge_runtime.sysmodel.lyapunov).

Numerics. With queues of 1e9-1e10 FLOPs the root eta* sits a hair above max_k Q_k*tau (offsets of
~1e-9 against ~1e9), below the resolution of eta itself. So we never form eta: we bisect
s = eta* - max_k(Q_k*tau) in log space, using the exact gaps g_k = max(Q*tau) - Q_k*tau:

      h(s) = sum_k sqrt(Gamma_k / (s + g_k)) - F,   decreasing in s > 0.

The bracket is analytic: the type attaining the max has g = 0, so h(Gamma_max_type / F^2) >= 0, and
sqrt(Gamma_k/(s+g_k)) <= sqrt(Gamma_k/s) gives h((sum_k sqrt(Gamma_k) / F)^2) <= 0.
The root is found by Newton's method on log(sum_k sqrt(Gamma_k / (s + g_k))) - log F in y = log s
(exactly linear when every active type has g = 0, nearly so otherwise: a few steps), safeguarded
by the bracket, which shrinks like a bisection's every iteration and takes any step that would
leave it; at most 64 iterations, i.e. never worse than 64 halvings of the log-bracket (double
precision). The result is rescaled so that sum_k f_k = F exactly.

Edge cases (tested):
- a type with Gamma_k = 0 (no queue, no task this slot) gets f_k = ``floor_flops`` (default 0:
  the paper's choice); the other types share F minus the floors;
- all Gamma_k = 0 (the RSU is idle): F is split equally (nothing to serve, so the split has no
  cost, and a task arriving before the next slot is not starved);
- huge queues (1e12+ FLOPs): handled by the log-space bisection above.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

_ITERATIONS = 64  # the bracket halves at least every iteration: 64 reach double precision
_TOLERANCE = 1e-14  # on y = log s: s (and so f) to ~1e-14 relative; tighter chases rounding noise

#: Queues, workloads and CPU speeds enter P3 and the Lyapunov terms in units of 1 GFLOP (GFLOP/s).
QUEUE_UNIT_FLOPS = 1e9


def rsu_gamma(q_flops: np.ndarray, w_flops: np.ndarray, n_tasks: np.ndarray, v: float) -> np.ndarray:
    """Gamma_k of P3 from the type-k queue Q_k, the summed edge FLOPs W_k of this slot's type-k
    tasks offloaded to the RSU and their count n_k. Broadcasts over any leading shape."""
    q = np.asarray(q_flops, dtype=np.float64)
    w = np.asarray(w_flops, dtype=np.float64)
    n = np.asarray(n_tasks, dtype=np.float64)
    return v * (q + w * (n + 1.0) / 2.0)


def p3_objective(f: np.ndarray, gamma: np.ndarray, q_flops: np.ndarray, tau_s: float) -> np.ndarray:
    """sum_k [Gamma_k / f_k - Q_k f_k tau] over the last axis (types with Gamma_k = 0 add -Q f tau)."""
    f = np.asarray(f, dtype=np.float64)
    gamma = np.asarray(gamma, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(gamma > 0, gamma / f, 0.0)
    return np.sum(ratio - np.asarray(q_flops, dtype=np.float64) * f * tau_s, axis=-1)


def kkt_allocation(
    gamma: np.ndarray,
    q_flops: np.ndarray,
    f_total: float,
    tau_s: float,
    floor_flops: float = 0.0,
) -> np.ndarray:
    """Optimal f_k (FLOP/s) of P3 for every type; shape of ``gamma`` (..., K).

    ``gamma`` and ``q_flops`` broadcast together; the last axis is the DNN type. Leading axes
    (environments, slots) are solved independently and at once.
    """
    gamma = np.asarray(gamma, dtype=np.float64)
    q = np.broadcast_to(np.asarray(q_flops, dtype=np.float64), gamma.shape)
    if f_total <= 0:
        raise ValueError(f"RSU compute must be positive, got {f_total} FLOP/s")
    if tau_s <= 0:
        raise ValueError(f"slot length must be positive, got {tau_s} s")
    if np.any(gamma < 0) or np.any(q < 0):
        raise ValueError("Gamma and queue backlogs must be non-negative")
    k = gamma.shape[-1]
    active = gamma > 0
    n_active = active.sum(axis=-1, keepdims=True)
    n_idle = k - n_active
    budget = f_total - floor_flops * n_idle  # what the active types share
    if np.any((n_active > 0) & (budget <= 0)):
        raise ValueError(f"floor {floor_flops} FLOP/s per idle type leaves nothing of F = {f_total} FLOP/s")

    qt = q * tau_s
    top = np.max(np.where(active, qt, -np.inf), axis=-1, keepdims=True)
    top = np.where(n_active > 0, top, 0.0)
    gaps = np.where(active, top - qt, np.inf)  # exact, >= 0; inf for idle types
    safe_gamma = np.where(active, gamma, 0.0)
    g_top = np.max(np.where(active & (gaps == 0), safe_gamma, 0.0), axis=-1, keepdims=True)
    b = np.where(n_active > 0, budget, 1.0)
    tiny = np.finfo(np.float64).tiny
    lo = np.log(np.maximum(g_top, tiny)) - 2.0 * np.log(b)
    hi = 2.0 * (np.log(np.maximum(np.sum(np.sqrt(safe_gamma), axis=-1, keepdims=True), tiny)) - np.log(b))
    lo = np.minimum(lo, hi)

    log_b = np.log(b)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        # Safeguarded Newton on psi(y) = log(sum_k sqrt(Gamma_k / (e^y + g_k))) - log(b), y = log s:
        # psi is exactly linear in y when every active type sits at the top (g_k = 0) and close to
        # linear otherwise, so Newton needs a handful of steps; any step leaving the bracket
        # [lo, hi] (which shrinks every iteration, as in a bisection) is replaced by its midpoint.
        y = 0.5 * (lo + hi)
        for _ in range(_ITERATIONS):
            s = np.exp(y)
            denom = s + gaps  # inf for idle types: their terms are 0 / inf = 0
            terms = np.sqrt(safe_gamma / denom)
            total = terms.sum(axis=-1, keepdims=True)
            too_much = total > b  # psi(y) > 0: root lies above y
            lo = np.where(too_much, y, lo)
            hi = np.where(too_much, hi, y)
            slope = -0.5 * np.sum(terms * (s / denom), axis=-1, keepdims=True) / total  # psi'(y) < 0
            y_new = y - (np.log(total) - log_b) / slope
            y_new = np.where((y_new >= lo) & (y_new <= hi), y_new, 0.5 * (lo + hi))
            scale = _TOLERANCE * np.maximum(1.0, np.abs(y))
            converged = (np.abs(y_new - y) <= scale) | (hi - lo <= scale)
            y = y_new
            if converged.all():
                break
    s = np.exp(y)
    with np.errstate(divide="ignore", invalid="ignore"):
        f = np.where(active, np.sqrt(safe_gamma / (s + gaps)), 0.0)
    f_sum = f.sum(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        f = np.where(active, f * (b / f_sum), floor_flops)
    # An idle RSU (no type has work) splits F equally.
    idle = n_active == 0
    return np.where(idle, f_total / k, f)


def allocate_rsu(
    q_flops: np.ndarray,
    w_flops: np.ndarray,
    n_tasks: np.ndarray,
    f_total_flops_per_s: float,
    tau_s: float,
    v: float,
    floor_flops_per_s: float = 0.0,
) -> np.ndarray:
    """The RSU's per-type compute (FLOP/s) for this slot: Gamma from the type queues Q_k, this
    slot's offloaded edge FLOPs W_k and task counts n_k, then `kkt_allocation`, all solved in
    GFLOP units (see the module docstring). Shapes (..., K) -> (..., K)."""
    unit = QUEUE_UNIT_FLOPS
    q = np.asarray(q_flops, dtype=np.float64) / unit
    gamma = rsu_gamma(q, np.asarray(w_flops, dtype=np.float64) / unit, n_tasks, v)
    f = kkt_allocation(gamma, q, f_total_flops_per_s / unit, tau_s, floor_flops_per_s / unit)
    return f * unit


def queue_inputs(items: Iterable[tuple[int, float]], slot: int) -> tuple[float, float, int]:
    """(Q_k, W_k, n_k) of one RSU queue at ``slot`` from its tasks' (arrival slot, edge FLOPs):
    Q_k the work that arrived in earlier slots, W_k and n_k the work and count of this slot's
    arrivals (the paper's offloads of the slot; a live RSU sees them one by one)."""
    q = w = 0.0
    n = 0
    for arrived, flops in items:
        if arrived < slot:
            q += flops
        else:
            w += flops
            n += 1
    return q, w, n
