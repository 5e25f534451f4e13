"""A proven floor on any policy's mean completion time: the `lower-bound` reference of `splitrt evaluate`.

What it bounds. In the paper's model (policy/sim/slot.py) a task's delay d_i (eq 17) grows with every
queue it meets (local, RSU type, SV), and the episode's draws (tasks, device speeds, links) do not
depend on the actions (policy/sim/env.py). So for every slot t and every policy,

    sum_i m_i d_i(t)  >=  F_t = min over joint actions a and RSU splits f (sum_k f_k = F, f >= 0)
                              of  sum_i m_i d_i(a, f, all queues = 0),

and the episode's mean completion sum_t sum_i m_i d_i / sum_t sum_i m_i >= sum_t F_t / sum_t sum_i m_i.
Same-slot waiting (eqs 11, 15) is kept: it depends only on this slot's decisions. The split f is
free (the P3 allocation every method uses is one feasible f), and the queues each method really
builds are dropped, so the floor is loose exactly where queues matter (a heavily loaded RSU).

Computing F_t. With zero queues, a node n serving the jobs I_n (job i: m_i tasks, w_i edge FLOPs)
charges them sum_{i in I_n} m_i d_i = c_n / f_n with c_n = (sum_i m_i w_i + W_n M_n) / 2
(W_n = sum w_i, M_n = sum m_i), and the best split of the RSU over its type containers gives
sum_k c_k / f_k = (sum_k sqrt(c_k))^2 / F (Cauchy-Schwarz). The rest (local compute, eq 7, and
transmission, eqs 4-5) is separable per CV. Enumerating every joint action of a group of CVs
gives F_t exactly; we do so for groups of up to ``group`` CVs (default 3: the exact floor at up to
3 CVs, about 1e5 joint actions).

Beyond that, a relaxation that stays valid: split the CVs into groups and add the groups' floors.
This never exceeds F_t because every coupling term is superadditive over disjoint job sets:
c(A u B) = c(A) + c(B) + (W_A M_B + W_B M_A) / 2 >= c(A) + c(B) for each node, and for the RSU
(sum_k sqrt(c_k(A) + c_k(B)))^2 >= (sum_k sqrt c_k(A))^2 + (sum_k sqrt c_k(B))^2 (Minkowski's
inequality in R^2). Two partitions are tried (consecutive CVs, which mixes DNN types, and CVs
sorted by type) and the larger floor is kept per slot; tests check grouped <= exact on 3 CVs and
floor <= every method on random small scenarios.
"""

from __future__ import annotations

import math

import numpy as np

from splitrt.policy.sim.env import SlotView, VecEnv


class LowerBound:
    """Not a policy: ``slot_floor`` gives F_t per environment; ``act`` plays all-local so that the
    episode advances (the floor does not depend on the state)."""

    name = "lower-bound"
    is_bound = True

    def __init__(self, group: int = 3, chunk: int = 8192) -> None:
        if group < 1:
            raise ValueError(f"lower-bound group must be >= 1 CV, got {group}")
        self.group = group
        self.chunk = chunk
        self.partitions: list[list[list[int]]] = []

    @property
    def exact(self) -> bool:
        return len(self.partitions) == 1 and len(self.partitions[0]) == 1

    def reset(self, env: VecEnv, seed: int | None) -> None:
        self.partitions = partitions(env.tables.agent_type, self.group)

    def act(self, obs: np.ndarray, state: np.ndarray, mask: np.ndarray, view: SlotView) -> np.ndarray:
        return np.broadcast_to(view.local_actions(), mask.shape[:2]).astype(np.int64)

    def slot_floor(self, view: SlotView) -> np.ndarray:
        """(E,) F_t: the least sum_i m_i d_i of this slot under any policy (module docstring)."""
        parts = per_cv_costs(view)
        best = np.zeros(view.n_envs)
        for k, partition in enumerate(self.partitions):
            floor = sum(group_floor(view, parts, g, self.chunk) for g in partition)
            best = floor if k == 0 else np.maximum(best, floor)
        return best


def partitions(agent_type: np.ndarray, group: int) -> list[list[list[int]]]:
    """Ways to split the CVs into groups of at most ``group``: one group if they fit, else
    consecutive CVs and CVs sorted by DNN type (duplicates removed)."""
    n = len(agent_type)
    if n <= group:
        return [[list(range(n))]]
    by_index = list(range(n))
    by_type = sorted(range(n), key=lambda i: (int(agent_type[i]), i))
    out = []
    for order in (by_index, by_type):
        split = [order[s : s + group] for s in range(0, n, group)]
        if split not in out:
            out.append(split)
    return out


def per_cv_costs(view: SlotView) -> dict[str, np.ndarray]:
    """Per CV and action (E, N, A = C J): the separable cost m (local + transmission) at zero
    queues (+inf where masked), the job's edge FLOPs w, its tasks m (E, N), and the action's
    coupling bin (N, A): the RSU container of the CV's type (0..K-1), SV s (K + s), or -1 (local)."""
    t, st = view.tables, view.state
    j, c_max = t.n_nodes, t.max_cuts
    n = t.n_agents
    m = np.asarray(st.tasks, dtype=np.float64)  # (E, N)
    cut = np.repeat(np.arange(c_max), j)  # (A,)
    node = np.tile(np.arange(j), c_max)
    agents = np.arange(n)[:, None]
    local_cut = (t.n_cuts - 1)[:, None]  # (N, 1)
    offload = cut[None, :] < local_cut  # (N, A)
    b = t.local_flops[agents, cut[None, :]]  # (N, A) per task
    local_s = np.where(cut[None, None, :] > 0, b[None] * m[..., None] / st.cv_flops_per_s[..., None], 0.0)
    rate = st.rate_bps[:, :, node]  # (E, N, A)
    data = np.where(offload, t.cut_bytes[agents, cut[None, :]], 0.0)[None] * m[..., None]
    with np.errstate(divide="ignore", invalid="ignore"):
        tx_s = np.where(offload[None], 8.0 * data / rate, 0.0)
    sep = m[..., None] * (local_s + tx_s)
    sep = np.where(view.mask, sep, np.inf)
    edge = np.where(node[None, :] == 0, t.rsu_flops[agents, cut[None, :]], t.sv_flops[agents, cut[None, :]])
    w = np.where(offload, edge, 0.0)[None] * m[..., None]  # (E, N, A)
    bins = np.where(node[None, :] == 0, t.agent_type[:, None], t.n_types + node[None, :] - 1)
    bins = np.where(offload, bins, -1)
    # One fully local action per CV (its J encodings are the same action).
    keep = offload | ((cut[None, :] == local_cut) & (node[None, :] == 0))
    return {"sep": sep, "w": w, "m": m, "bins": bins, "keep": keep}


def undominated(parts: dict[str, np.ndarray]) -> np.ndarray:
    """(E, N, A) bool: the actions worth enumerating. Action a of a CV is dropped when another
    action a' of the same CV is at least as good in every joint action: a' in the same coupling
    bin (or fully local, which couples with nothing) with sep' <= sep and w' <= w (the coupling
    costs grow with w). Ties keep the lower index."""
    sep, w, bins, keep = parts["sep"], parts["w"], parts["bins"], parts["keep"]
    cand = keep[None] & np.isfinite(sep)  # (E, N, A)
    s_a, s_b = sep[..., :, None], sep[..., None, :]  # a = row, a' = column
    w_a, w_b = w[..., :, None], w[..., None, :]
    same = (bins[:, :, None] == bins[:, None, :]) | (bins[:, None, :] == -1)  # (N, A, A')
    a_idx = np.arange(sep.shape[-1])
    better = (s_b < s_a) | (w_b < w_a) | ((s_b == s_a) & (w_b == w_a) & (a_idx[None, :] < a_idx[:, None]))
    dominated = cand[..., None, :] & same[None] & (s_b <= s_a) & (w_b <= w_a) & better
    return cand & ~dominated.any(axis=-1)


def group_floor(view: SlotView, parts: dict[str, np.ndarray], group: list[int], chunk: int) -> np.ndarray:
    """(E,) exact min over the group's joint actions of its zero-queue slot cost (the others absent)."""
    t, st = view.tables, view.state
    k_types = t.n_types
    useful = parts.get("useful")
    if useful is None:
        useful = parts["useful"] = undominated(parts)
    out = np.empty(view.n_envs)
    for e in range(view.n_envs):
        lists = [np.flatnonzero(useful[e, i]) for i in group]
        sizes = [len(x) for x in lists]
        total = math.prod(sizes)
        best = np.inf
        m = parts["m"][e, group]  # (G,)
        for start in range(0, total, chunk):
            digits = np.unravel_index(np.arange(start, min(start + chunk, total)), sizes)
            actions = [lst[d] for lst, d in zip(lists, digits, strict=True)]  # G x (B,)
            cost = np.zeros(len(actions[0]))
            w, bins = [], []
            for i, a in zip(group, actions, strict=True):
                cost += parts["sep"][e, i, a]
                w.append(parts["w"][e, i, a])
                bins.append(parts["bins"][i, a])
            rsu_root = np.zeros_like(cost)
            for r in np.unique(np.concatenate(bins)):
                if r < 0:
                    continue
                big_w = np.zeros_like(cost)
                big_m = np.zeros_like(cost)
                s_mw = np.zeros_like(cost)
                for g in range(len(group)):
                    here = bins[g] == r
                    if here.any():
                        wg = np.where(here, w[g], 0.0)
                        big_w += wg
                        big_m += np.where(here, m[g], 0.0)
                        s_mw += m[g] * wg
                c = 0.5 * (s_mw + big_w * big_m)
                if r < k_types:
                    rsu_root += np.sqrt(c)
                else:
                    cost += c / st.sv_flops_per_s[e, r - k_types]
            cost += rsu_root**2 / t.rsu_flops_per_s
            best = min(best, float(cost.min()))
        out[e] = best
    return out
