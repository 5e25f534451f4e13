"""Baseline decision methods, all behind `policy.methods.Method` and all vectorised over environments.

Every method's joint action goes through the same slot model (policy/slot.py), so the RSU's
compute is always split by the same KKT allocation (eqs 43-52).

| name | rule |
|---|---|
| ``local`` | every CV runs its whole DNN (cut = L_k) |
| ``offload`` | every CV sends the raw input to the RSU (cut 0, node 0) |
| ``random`` | uniform over each CV's valid actions |
| ``greedy`` | the paper's greedy: cut where the transmitted tensor is smallest, offload to the reachable node with the shortest queue (edge_runtime.decision.greedy_choice) |
| ``neurosurgeon`` | each CV alone picks the (cut, node) of least estimated latency from this slot's rates, queues and device speeds, ignoring the other CVs (no waiting term, no allocation: it counts on the RSU's fair share F / K for its type) |
| ``ga`` | genetic algorithm per slot (defaults: population 50, 50 generations, crossover 0.9, elites 2) (after Sun et al., TVT 2018, as the paper uses it): chromosome = every CV's action (phi, xi), fitness = P2(t) of the slot; random valid initial population of ``population``, binary tournament selection, uniform crossover with probability ``crossover``, per-gene mutation to a random valid action with probability ``mutation`` (default 1/N), ``elites`` best kept, ``generations`` rounds; returns the best chromosome seen |
| ``oracle`` | exhaustive search of the slot's joint action space: the minimum of P2(t) over every valid joint action (fully local counted once per CV, a CV without a task has one choice); refuses scenarios whose worst-case space prod_i (L_k J + 1) exceeds ``max_joint`` (default 1e6: 3 CVs with up to 5 SVs) |

The oracle minimises exactly what P2-driven methods minimise each slot, so on the same slot no
method can score a lower P2(t) (tested). It is myopic like them: it is not the optimum of the
long-run problem P1.
"""

from __future__ import annotations

import math

import numpy as np

from edge_runtime.decision import greedy_choice
from policy.env import SlotView, VecEnv
from policy.methods import MethodNotApplicable


def _all(view: SlotView, actions: np.ndarray) -> np.ndarray:
    return np.broadcast_to(np.asarray(actions, dtype=np.int64), view.mask.shape[:2]).copy()


class LocalOnly:
    name = "local"

    def reset(self, env: VecEnv, seed: int | None) -> None:
        pass

    def act(self, obs: np.ndarray, state: np.ndarray, mask: np.ndarray, view: SlotView) -> np.ndarray:
        return _all(view, view.local_actions())


class FullOffload:
    name = "offload"

    def reset(self, env: VecEnv, seed: int | None) -> None:
        pass

    def act(self, obs: np.ndarray, state: np.ndarray, mask: np.ndarray, view: SlotView) -> np.ndarray:
        return _all(view, 0)  # cut 0, node 0: the raw input to the RSU, always reachable


def sample_valid(rng: np.random.Generator, mask: np.ndarray, shape: tuple[int, ...] = ()) -> np.ndarray:
    """Uniform draws among the True entries of ``mask`` (..., A): result (*shape, ...)."""
    scores = np.where(mask, rng.random((*shape, *mask.shape)), -1.0)
    return scores.argmax(axis=-1)


class RandomChoice:
    name = "random"

    def __init__(self, seed: int | None = None) -> None:
        self._seed = seed
        self.rng = np.random.default_rng(seed)

    def reset(self, env: VecEnv, seed: int | None) -> None:
        self.rng = np.random.default_rng(seed if self._seed is None else self._seed)

    def act(self, obs: np.ndarray, state: np.ndarray, mask: np.ndarray, view: SlotView) -> np.ndarray:
        return sample_valid(self.rng, mask)


class Greedy:
    name = "greedy"

    def reset(self, env: VecEnv, seed: int | None) -> None:
        pass

    def act(self, obs: np.ndarray, state: np.ndarray, mask: np.ndarray, view: SlotView) -> np.ndarray:
        j = view.tables.n_nodes
        queues = obs[..., 1 : j + 1].astype(np.float64)  # own type's RSU queue, then every SV (eq 53)
        out = np.empty(mask.shape[:2], dtype=np.int64)
        models = view.scenario.cv_models()
        for model in dict.fromkeys(models):
            agents = [i for i, m in enumerate(models) if m == model]
            cut, node = greedy_choice(view.workloads[model].cut_bytes, queues[:, agents], view.node_ok[:, agents])
            out[:, agents] = cut * j + node
        return out


class Neurosurgeon:
    name = "neurosurgeon"

    def reset(self, env: VecEnv, seed: int | None) -> None:
        pass

    def act(self, obs: np.ndarray, state: np.ndarray, mask: np.ndarray, view: SlotView) -> np.ndarray:
        t, st = view.tables, view.state
        j = t.n_nodes
        n_cuts = t.max_cuts
        local_flops = t.local_flops[None, :, :, None]  # (1, N, C, 1)
        q_loc = st.q_loc_flops[:, :, None, None]
        f_loc = st.cv_flops_per_s[:, :, None, None]
        cut = np.arange(n_cuts)[None, None, :, None]
        local_s = np.where(cut > 0, (q_loc + local_flops) / f_loc, 0.0)
        tx_s = 8.0 * t.cut_bytes[None, :, :, None] / st.rate_bps[:, :, None, :]  # (E, N, C, J)
        fair_share = t.rsu_flops_per_s / t.n_types
        q_rsu = st.q_rsu_flops[:, t.agent_type][:, :, None]  # (E, N, 1)
        edge_rsu = (q_rsu + t.rsu_flops[None]) / fair_share  # (E, N, C)
        edge_sv = (st.q_sv_flops[:, None, None, :] + t.sv_flops[None, :, :, None]) / st.sv_flops_per_s[:, None, None, :]
        edge_s = np.concatenate([edge_rsu[..., None], np.broadcast_to(edge_sv, (*edge_rsu.shape, j - 1))], axis=-1)
        latency = local_s + tx_s + edge_s  # (E, N, C, J)
        is_local = cut == (t.n_cuts - 1)[None, :, None, None]
        latency = np.where(is_local, local_s, latency).reshape(*mask.shape[:2], n_cuts * j)
        return np.where(mask, latency, np.inf).argmin(axis=-1)


class Genetic:
    name = "ga"

    def __init__(
        self,
        population: int = 50,
        generations: int = 50,
        crossover: float = 0.9,
        mutation: float = 0.0,
        elites: int = 2,
        seed: int | None = None,
    ) -> None:
        if population < 2 or generations < 0 or not 0 <= elites < population:
            raise ValueError(
                f"GA needs population >= 2, generations >= 0, 0 <= elites < population (got {population}, {generations}, {elites})"
            )
        self.population = population
        self.generations = generations
        self.crossover = crossover
        self.mutation = mutation  # 0 = 1/N
        self.elites = elites
        self._seed = seed
        self.rng = np.random.default_rng(seed)

    def reset(self, env: VecEnv, seed: int | None) -> None:
        self.rng = np.random.default_rng(seed if self._seed is None else self._seed)

    def act(self, obs: np.ndarray, state: np.ndarray, mask: np.ndarray, view: SlotView) -> np.ndarray:
        rng = self.rng
        p, e, n = self.population, mask.shape[0], mask.shape[1]
        p_mut = self.mutation if self.mutation > 0 else 1.0 / n
        # Valid actions of every CV, listed first by a stable sort: draw the r-th with r < count.
        order = np.argsort(~mask, axis=-1, kind="stable")
        counts = mask.sum(axis=-1)

        def draw(shape: tuple[int, ...]) -> np.ndarray:
            r = (rng.random((*shape, e, n)) * counts).astype(np.int64)
            return np.take_along_axis(np.broadcast_to(order, (*shape, *order.shape)), r[..., None], axis=-1)[..., 0]

        pop = draw((p,))  # (P, E, N)
        fit = view.evaluate(pop).p2  # (P, E)
        envs = np.arange(e)
        for _ in range(self.generations):
            ranked = np.argsort(fit, axis=0, kind="stable")  # (P, E)
            elite = np.take_along_axis(pop, ranked[: self.elites, :, None], axis=0)
            k = p - self.elites
            contenders = rng.integers(0, p, (2, k, e))
            pick = np.where(fit[contenders[0], envs] <= fit[contenders[1], envs], contenders[0], contenders[1])
            mates = rng.integers(0, p, (k, e))
            parent_a = pop[pick, envs[None, :]]  # (k, E, N)
            parent_b = pop[mates, envs[None, :]]
            cross = (rng.random((k, e, 1)) < self.crossover) & (rng.random((k, e, n)) < 0.5)
            child = np.where(cross, parent_b, parent_a)
            child = np.where(rng.random((k, e, n)) < p_mut, draw((k,)), child)
            pop = np.concatenate([elite, child], axis=0)
            fit = np.concatenate([np.take_along_axis(fit, ranked[: self.elites], axis=0), view.evaluate(child).p2])
        best = fit.argmin(axis=0)
        return pop[best, envs]


class Oracle:
    name = "oracle"

    def __init__(self, max_joint: int = 1_000_000, chunk: int = 16_384) -> None:
        self.max_joint = max_joint
        self.chunk = chunk

    @staticmethod
    def worst_case(env_or_view: VecEnv | SlotView) -> int:
        """Joint actions with every SV reachable: prod_i ((L_k) * J + 1)."""
        tables = env_or_view.tables
        return math.prod(int((c - 1) * tables.n_nodes + 1) for c in tables.n_cuts)

    def reset(self, env: VecEnv, seed: int | None) -> None:
        size = self.worst_case(env)
        if size > self.max_joint:
            raise MethodNotApplicable(
                f"oracle: {env.n_agents} CVs x {env.n_nodes} nodes have up to {size:.3g} joint actions per slot, "
                f"over max_joint = {self.max_joint:.3g} (use fewer CVs/SVs or --method-opt oracle.max_joint=...)"
            )

    def candidates(self, view: SlotView) -> list[np.ndarray]:
        """Per CV of a one-environment view: its distinct valid actions."""
        local = view.local_actions()
        out = []
        for i in range(view.tables.n_agents):
            if view.state.tasks[0, i] == 0:
                out.append(np.array([local[i]]))
                continue
            valid = np.flatnonzero(view.mask[0, i])
            valid = valid[(valid // view.tables.n_nodes) != view.tables.n_cuts[i] - 1]  # offloading ones
            out.append(np.concatenate([valid, [local[i]]]))
        return out

    def act(self, obs: np.ndarray, state: np.ndarray, mask: np.ndarray, view: SlotView) -> np.ndarray:
        best = np.empty(mask.shape[:2], dtype=np.int64)
        for e in range(view.n_envs):
            one = view.select(e)
            lists = self.candidates(one)
            size = math.prod(len(c) for c in lists)
            if size > self.max_joint:
                raise MethodNotApplicable(
                    f"oracle: {size} joint actions in env {e} exceed max_joint = {self.max_joint}"
                )
            sizes = tuple(len(c) for c in lists)
            best_p2, best_action = np.inf, None
            for start in range(0, size, self.chunk):
                digits = np.unravel_index(np.arange(start, min(start + self.chunk, size)), sizes)
                block = np.stack([c[d] for c, d in zip(lists, digits, strict=True)], axis=-1)  # (B, N)
                p2 = one.evaluate(block[:, None, :]).p2[:, 0]
                k = int(p2.argmin())
                if p2[k] < best_p2:
                    best_p2, best_action = p2[k], block[k]
            best[e] = best_action
        return best
