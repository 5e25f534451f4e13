"""One slot of the paper's system model as a pure function: state + joint action -> delays, queues, P2.

`evaluate_slot` is the whole of eqs 3-17 (delays), 8/10/16 (queues), 43-52 (the RSU's KKT
allocation, via splitrt.edge_runtime.sysmodel.allocation.allocate_rsu) and 29-33 (Lyapunov terms), vectorised over
environments and over any number of candidate joint actions: the env's step calls it once, and
the GA, p2-optimal and best-known call it on thousands of candidates to score P2(t) without stepping.

Shapes: E environments, N CVs (agents), S SVs, J = S + 1 nodes (node 0 = RSU), K DNN types,
C = the largest cut count. Actions (..., E, N) encode (cut, node) as cut * J + node (eq 55); cut
c runs segments [0, c) on the CV (the paper's phi = c + 1) and c = n_cuts - 1 is fully local (the
node index is then ignored: phi = L_k + 1 means xi is all zero, eq 24). Actions must be valid
(the env masks them); a CV without a task this slot contributes nothing whatever its action.

Per CV i with m tasks this slot (a "job": m x FLOPs and bytes, one decision), b = local FLOPs
and w = edge FLOPs at the cut, D = bytes crossing it:

| quantity | formula | eq |
|---|---|---|
| local delay | (Q_loc + b) / f_loc, 0 when cut = 0 (phi = 1) | 7 |
| local queue | max(Q_loc - f_loc tau + 1[cut != 0] b, 0) | 8 |
| transmission | 8 D / R to the chosen node, 0 when fully local | 4, 5 |
| RSU compute | (Q_k + w) / f_k + (W_k - w) / (2 f_k) | 9, 11 |
| RSU queue | max(Q_k - f_k tau + W_k, 0) | 10 |
| SV compute | (Q_j + w) / f_j + (W_j - w) / (2 f_j) | 13, 15 |
| SV queue | max(Q_j - f_j tau + W_j, 0) | 16 |
| completion | local + transmission + RSU compute + SV compute | 12, 14, 17 |

W_k / W_j are this slot's edge FLOPs offloaded to type k at the RSU / to SV j, so the second
term (eq 11's waiting) is the other tasks' work at half speed: on average half of them are
served first. f_k comes from P3 (eqs 43-52) with this slot's W_k, n_k (count of jobs) and V.
Note: P3's Gamma_k as published is V*Q_k + V*sum W_i + (V/2)*sum_i sum_{i' != i} W_i', while
the RSU delays above sum to V*(n_k Q_k + W_k (n_k + 1)/2) / f_k in P2: the two agree for n_k <= 1.
We keep the paper's P3 (it is the allocation every method shares) and its P2; so for n_k >= 2
the allocation is the paper's, not the exact P2 minimiser over f.

Then (splitrt.edge_runtime.sysmodel.lyapunov): arrivals A = (1[cut != 0] b per CV, W_k, W_j), service
S = (f_loc tau, f_k tau, f_j tau), P2 = sum Q (A - S) + V sum_i d_i (eq 33) in GFLOP units,
reward -P2 (eq 57), L(Q) (eq 29) before and after, drift = L(Q(t+1)) - L(Q(t)).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from splitrt.edge_runtime.sysmodel import lyapunov
from splitrt.edge_runtime.sysmodel.allocation import allocate_rsu
from splitrt.edge_runtime.sysmodel.arrivals import per_queue, task_arrivals
from splitrt.edge_runtime.sysmodel.channel import path_gain_db, rate_bps, transmission_delay_s
from splitrt.policy.sim.scenario import Scenario
from splitrt.policy.sim.workloads import Workload


@dataclass(frozen=True, eq=False)
class Tables:
    """What never changes within a scenario: per-CV cut tables and the allocation constants."""

    n_nodes: int  # J
    n_types: int  # K
    agent_type: np.ndarray  # (N,) int: index of the CV's DNN type
    n_cuts: np.ndarray  # (N,) int: L_k + 1 of the CV's DNN
    cut_bytes: np.ndarray  # (N, C) bytes, padded with the fully local cut
    local_flops: np.ndarray  # (N, C) FLOPs on the CV
    rsu_flops: np.ndarray  # (N, C) FLOPs at the RSU
    sv_flops: np.ndarray  # (N, C) FLOPs at an SV
    type_onehot: np.ndarray  # (N, K) float
    slot_s: float
    v: float
    rsu_flops_per_s: float
    rsu_floor_flops_per_s: float

    @property
    def n_agents(self) -> int:
        return len(self.agent_type)

    @property
    def max_cuts(self) -> int:
        return self.cut_bytes.shape[1]

    @classmethod
    def build(cls, scenario: Scenario, workloads: dict[str, Workload]) -> Tables:
        types = list(scenario.types)
        models = scenario.cv_models()
        c_max = max(workloads[m].n_cuts for m in models)

        def padded(attr: str) -> np.ndarray:
            out = np.empty((len(models), c_max))
            for i, m in enumerate(models):
                row = getattr(workloads[m], attr)
                out[i, : len(row)] = row
                out[i, len(row) :] = row[-1]  # beyond L_k + 1: copies of the fully local cut
            return out

        agent_type = np.array([types.index(m) for m in models], dtype=np.int64)
        return cls(
            n_nodes=scenario.n_nodes,
            n_types=len(types),
            agent_type=agent_type,
            n_cuts=np.array([workloads[m].n_cuts for m in models], dtype=np.int64),
            cut_bytes=padded("cut_bytes"),
            local_flops=padded("local_flops"),
            rsu_flops=padded("rsu_flops"),
            sv_flops=padded("sv_flops"),
            type_onehot=np.eye(len(types))[agent_type],
            slot_s=scenario.slot_s,
            v=scenario.v,
            rsu_flops_per_s=scenario.rsu_flops_per_s,
            rsu_floor_flops_per_s=scenario.rsu_floor_flops_per_s,
        )


@dataclass(frozen=True, eq=False)
class Links:
    """This slot's links (eqs 1-2) from CV positions and Rayleigh fading, rates computed on demand.

    A step needs only the rate of each CV's chosen link (`rate_to`); planners that compare every
    node read the full (E, N, J) matrix (`rate_bps`, computed once and cached). ``Links.fixed``
    wraps given rates (hand-built slots in tests).
    """

    positions_m: np.ndarray | None  # (E, V, 2): the N CVs, then the S SVs
    fading: np.ndarray | None  # (E, N, J): |u|^2 per link
    scenario: Scenario | None
    matrix: np.ndarray | None = None  # (E, N, J) given rates instead

    @classmethod
    def fixed(cls, rate_bps: np.ndarray) -> Links:
        return cls(None, None, None, np.asarray(rate_bps, dtype=np.float64))

    @functools.cached_property
    def rate_bps(self) -> np.ndarray:
        if self.matrix is not None:
            return self.matrix
        assert self.scenario is not None and self.positions_m is not None and self.fading is not None
        return link_rates_bps(self.scenario, self.positions_m, self.fading)[0]

    def rate_to(self, node: np.ndarray) -> np.ndarray:
        """Rate (..., E, N) of every CV's link to ``node`` (..., E, N)."""
        n_cvs = node.shape[-1]
        e_idx = np.arange(node.shape[-2])[:, None]
        i_idx = np.arange(n_cvs)
        if self.matrix is not None or "rate_bps" in self.__dict__ or node.ndim > 2:
            return self.rate_bps[e_idx, i_idx, node]
        sc = self.scenario
        assert sc is not None and self.positions_m is not None and self.fading is not None
        to_rsu = node == 0
        last = self.positions_m.shape[-2] - 1  # (clipped: with no SV at all, every node is the RSU)
        target = self.positions_m[e_idx, np.minimum(n_cvs + np.maximum(node - 1, 0), last)]  # (E, N, 2) the chosen SV
        tx = np.where(to_rsu, 0.0, target[..., 0])
        ty = np.where(to_rsu, sc.rsu_offset_m, target[..., 1])
        cv = self.positions_m[:, :n_cvs]
        d = np.sqrt((cv[..., 0] - tx) ** 2 + (cv[..., 1] - ty) ** 2)
        gain_db = np.where(
            to_rsu,
            path_gain_db(d, sc.v2i_gain_intercept_db, sc.v2i_gain_slope_db),
            path_gain_db(d, sc.v2v_gain_intercept_db, sc.v2v_gain_slope_db),
        )
        fading = self.fading[e_idx, i_idx, node]
        return rate_bps(sc.bandwidth_hz, sc.tx_power_dbm, sc.noise_dbm, gain_db, fading)

    def select(self, env: int) -> Links:
        sl = slice(env, env + 1)
        if self.matrix is not None:
            return Links.fixed(self.matrix[sl])
        assert self.positions_m is not None and self.fading is not None
        return Links(self.positions_m[sl], self.fading[sl], self.scenario)


@dataclass(frozen=True, eq=False)
class SlotState:
    """The system at the start of a slot, leading axis E (environments)."""

    q_loc_flops: np.ndarray  # (E, N)
    q_rsu_flops: np.ndarray  # (E, K)
    q_sv_flops: np.ndarray  # (E, S)
    cv_flops_per_s: np.ndarray  # (E, N)
    sv_flops_per_s: np.ndarray  # (E, S)
    links: Links  # this slot's channel from every CV to every node
    tasks: np.ndarray  # (E, N) tasks generated this slot (0 = nothing to decide)

    @property
    def rate_bps(self) -> np.ndarray:
        """(E, N, J) this slot's rate from every CV to every node (node 0 = RSU), bit/s."""
        return self.links.rate_bps

    def select(self, env: int) -> SlotState:
        """The state of environment ``env`` alone (leading axis kept, of length 1)."""
        sl = slice(env, env + 1)
        fields = {k: getattr(self, k)[sl] for k in self.__dataclass_fields__ if k != "links"}
        return SlotState(links=self.links.select(env), **fields)


@dataclass(frozen=True, eq=False)
class SlotOutcome:
    """Everything one slot produces; leading axes (..., E) of the actions that made it."""

    local_s: np.ndarray  # (..., E, N) eq 7
    tx_s: np.ndarray  # (..., E, N) eqs 4-5
    rsu_s: np.ndarray  # (..., E, N) eqs 9 + 11
    sv_s: np.ndarray  # (..., E, N) eqs 13 + 15
    completion_s: np.ndarray  # (..., E, N) eq 17
    q_loc_next_flops: np.ndarray  # (..., E, N)
    q_rsu_next_flops: np.ndarray  # (..., E, K)
    q_sv_next_flops: np.ndarray  # (..., E, S)
    rsu_alloc_flops_per_s: np.ndarray  # (..., E, K) P3's f_k
    lyapunov: np.ndarray  # (..., E) L(Q(t+1)), eq 29, GFLOP^2
    drift: np.ndarray  # (..., E) L(Q(t+1)) - L(Q(t))
    pressure: np.ndarray  # (..., E) sum Q (A - S), GFLOP^2
    penalty: np.ndarray  # (..., E) V sum_i d_i
    p2: np.ndarray  # (..., E) eq 33

    @property
    def reward(self) -> np.ndarray:
        return lyapunov.reward(self.p2)


def link_rates_bps(scenario: Scenario, positions_m: np.ndarray, fading: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rates (..., N, J) from every CV to every node and CV-SV distances (..., N, S).

    ``positions_m`` (..., V, 2) with the N CVs first and the S SVs after; ``fading`` (..., N, J)
    is |u|^2 per link. The RSU stands at (0, rsu_offset_m) (eqs 1-2; V2I law to node 0, V2V to SVs).
    """
    n = scenario.n_cvs
    x, y = positions_m[..., 0], positions_m[..., 1]
    d_rsu = np.sqrt(x[..., :n] ** 2 + (y[..., :n] - scenario.rsu_offset_m) ** 2)  # (..., N)
    d_sv = np.sqrt((x[..., :n, None] - x[..., None, n:]) ** 2 + (y[..., :n, None] - y[..., None, n:]) ** 2)
    gain_db = np.concatenate(
        [
            path_gain_db(d_rsu, scenario.v2i_gain_intercept_db, scenario.v2i_gain_slope_db)[..., None],
            path_gain_db(d_sv, scenario.v2v_gain_intercept_db, scenario.v2v_gain_slope_db),
        ],
        axis=-1,
    )
    rates = rate_bps(scenario.bandwidth_hz, scenario.tx_power_dbm, scenario.noise_dbm, gain_db, fading)
    return rates, d_sv


def sv_in_range(scenario: Scenario, positions_m: np.ndarray) -> np.ndarray:
    """(..., N, S) bool: SV within the V2V radius of each CV (eq 25). ``positions_m`` (..., V, 2)."""
    n = scenario.n_cvs
    x, y = positions_m[..., 0], positions_m[..., 1]
    d2 = (x[..., :n, None] - x[..., None, n:]) ** 2 + (y[..., :n, None] - y[..., None, n:]) ** 2
    return d2 <= scenario.v2v_radius_m**2


def _per_env(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """values (E, M) picked per element by index (..., E, N) -> (..., E, N)."""
    return values[np.arange(values.shape[0])[:, None], index]


def evaluate_slot(tables: Tables, state: SlotState, actions: np.ndarray) -> SlotOutcome:
    """The slot's outcome for joint ``actions`` (..., E, N) (see the module docstring)."""
    j = tables.n_nodes
    tau = tables.slot_s
    actions = np.asarray(actions, dtype=np.int64)
    cut = actions // j
    node = actions % j
    agents = np.arange(tables.n_agents)

    m = np.asarray(state.tasks, dtype=np.float64)  # (E, N)
    offload, runs_local, b, to_rsu, w_rsu, to_sv, w_sv = task_arrivals(
        cut,
        node,
        tables.n_cuts,
        tables.local_flops[agents, cut],
        tables.rsu_flops[agents, cut],
        tables.sv_flops[agents, cut],
        m,
    )
    data = np.where(offload, tables.cut_bytes[agents, cut] * m, 0.0)

    # eq 7: local delay; eq 4-5: transmission to the chosen node
    local_s = np.where(runs_local, (state.q_loc_flops + b) / state.cv_flops_per_s, 0.0)
    rate = state.links.rate_to(node)
    tx_s = transmission_delay_s(data, rate)

    # RSU: per-type work, P3 allocation (eqs 43-52), eqs 9 + 11
    w_k = per_queue(w_rsu, tables.type_onehot)  # (..., E, K)
    n_k = per_queue(to_rsu, tables.type_onehot)
    q_rsu = state.q_rsu_flops
    f_k = allocate_rsu(
        np.broadcast_to(q_rsu, w_k.shape),
        w_k,
        n_k,
        tables.rsu_flops_per_s,
        tau,
        tables.v,
        tables.rsu_floor_flops_per_s,
    )
    t = tables.agent_type
    with np.errstate(divide="ignore", invalid="ignore"):
        rsu_s = np.where(
            to_rsu,
            (q_rsu[..., t] + w_rsu) / f_k[..., t] + (w_k[..., t] - w_rsu) / (2.0 * f_k[..., t]),
            0.0,
        )

    # SVs: eqs 13 + 15, one queue per SV over all types
    n_sv = j - 1
    if n_sv > 0:
        at_sv = to_sv[..., None] & (node[..., None] == np.arange(1, j))  # (..., E, N, S)
        w_j = np.sum(np.where(at_sv, w_sv[..., None], 0.0), axis=-2)  # (..., E, S)
        sv_index = np.maximum(node - 1, 0)
        f_i = _per_env(state.sv_flops_per_s, sv_index)
        q_i = _per_env(state.q_sv_flops, sv_index)
        w_i = np.take_along_axis(w_j, sv_index, axis=-1)
        sv_s = np.where(to_sv, (q_i + w_sv) / f_i + (w_i - w_sv) / (2.0 * f_i), 0.0)
    else:
        w_j = np.zeros((*w_k.shape[:-1], 0))
        sv_s = np.zeros_like(local_s)

    completion_s = local_s + tx_s + rsu_s + sv_s  # eq 17

    # queues (eqs 8, 10, 16) and the Lyapunov terms (eqs 29-33)
    service = [state.cv_flops_per_s * tau, f_k * tau, state.sv_flops_per_s * tau]
    arrivals = [b, w_k, w_j]
    now = [state.q_loc_flops, q_rsu, state.q_sv_flops]
    nxt = [lyapunov.queue_update(q, s, a) for q, s, a in zip(now, service, arrivals, strict=True)]
    l_now = lyapunov.lyapunov(now)
    l_next = lyapunov.lyapunov(nxt)
    pressure = lyapunov.queue_pressure(now, arrivals, service)
    penalty = lyapunov.penalty(completion_s, tables.v)
    return SlotOutcome(
        local_s=local_s,
        tx_s=tx_s,
        rsu_s=rsu_s,
        sv_s=sv_s,
        completion_s=completion_s,
        q_loc_next_flops=nxt[0],
        q_rsu_next_flops=nxt[1],
        q_sv_next_flops=nxt[2],
        rsu_alloc_flops_per_s=f_k,
        lyapunov=l_next,
        drift=l_next - l_now,
        pressure=pressure,
        penalty=penalty,
        p2=pressure + penalty,
    )
