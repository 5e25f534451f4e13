"""Baseline decision methods, all behind `splitrt.policy.methods.registry.Method` and all vectorised over environments.

Every method's joint action goes through the same slot model (policy/sim/slot.py), so the RSU's
compute is always split by the same KKT allocation (eqs 43-52).

| name | rule |
|---|---|
| ``local``, ``offload``, ``random`` | not here: the vehicle's own deciders (splitrt.edge_runtime.decide.deciders) run per CV (splitrt.policy.methods.live_rules): every CV runs its whole DNN; sends the raw input to the RSU (cut 0, node 0); uniform over its valid actions |
| ``greedy`` | the paper's greedy: cut where the transmitted tensor is smallest, offload to the reachable node with the shortest queue (splitrt.edge_runtime.decide.deciders.greedy_choice) |
| ``neurosurgeon`` | each CV alone picks the (cut, node) of least estimated latency from this slot's rates, queues and device speeds, ignoring the other CVs (no waiting term, no allocation: it counts on the RSU's fair share F / K for its type) |
| ``ga`` | genetic algorithm per slot (defaults: population 50, 50 generations, crossover 0.9, elites 2) (after Sun et al., TVT 2018, as the paper uses it): chromosome = every CV's action (phi, xi), fitness = the slot objective (below, default P2(t)); random valid initial population of ``population``, binary tournament selection, uniform crossover with probability ``crossover``, per-gene mutation to a random valid action with probability ``mutation`` (default 1/N), ``elites`` best kept, ``generations`` rounds; returns the best chromosome seen. ``budget`` > 0 fixes the objective evaluations per slot instead (see `Genetic`) |
| ``p2-optimal`` | exhaustive search of the slot's joint action space: the minimum of the slot objective (default P2(t)) over every valid joint action (fully local counted once per CV, a CV without a task has one choice); refuses scenarios whose worst-case space prod_i (L_k J + 1) exceeds ``max_joint`` (default 1e6: 3 CVs with up to 5 SVs) |
| ``best-known`` | the best completion-time policy the project knows how to compute: the slot objective "queue pressure + V' sum_i d_i" (V' = ``objective_v``, default 150; see below) minimised exhaustively where the joint space is at most ``max_joint`` (3 CVs), else by a GA of ``budget`` evaluations per slot (default 10,000) seeded with the all-local and the Neurosurgeon joint actions |

The slot objective. P2(t) (eq 33) = Q (A - S) + V sum_i d_i is the drift-plus-penalty surrogate
at the scenario's V, with queues in GFLOP (so the pressure is in GFLOP^2 and scaling the queue
unit by c acts like scaling V by c^2). ``objective_v`` = V' > 0 replaces V by V' in the planner's
objective only (the RSU's P3 allocation keeps the scenario's V): pressure + V' sum_i d_i. P2-optimal
is the exact minimiser of P2(t) on each slot (no method scores a lower P2(t) on the same slot,
tested), not of completion time: at 3 CVs, 5 SVs, V = 10, T = 300 best-known completes in 0.773 s
against its 1.064 s (docs/results/2026-12-03-references.md). Like every per-slot planner it is myopic:
none of these is the optimum of the long-run problem P1. `splitrt.policy.methods.bounds` gives a proven floor.
"""

from __future__ import annotations

import math

import numpy as np

from splitrt.edge_runtime.decide.deciders import greedy_choice
from splitrt.edge_runtime.sysmodel.observation import ValidSampler
from splitrt.policy.methods.registry import MethodNotApplicable
from splitrt.policy.sim.env import SlotView, VecEnv
from splitrt.policy.sim.slot import SlotOutcome


def slot_objective(outcome: SlotOutcome, objective_v: float = 0.0) -> np.ndarray:
    """What a per-slot planner minimises (module docstring): P2(t) for ``objective_v`` = 0, else
    queue pressure + objective_v * sum_i d_i (GFLOP^2 + V' x seconds). Shape (..., E)."""
    if objective_v <= 0:
        return outcome.p2
    return outcome.pressure + objective_v * outcome.completion_s.sum(axis=-1)


def _all(view: SlotView, actions: np.ndarray) -> np.ndarray:
    return np.broadcast_to(np.asarray(actions, dtype=np.int64), view.mask.shape[:2]).copy()


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
        budget: int = 0,
        objective_v: float = 0.0,
        seed_heuristics: bool = False,
    ) -> None:
        """``budget`` > 0: objective evaluations per slot and environment, replacing ``generations``:
        population min(population, budget), then generations = (budget - population) // (population
        - elites) (a budget below the population is random sampling). ``objective_v`` > 0: fitness
        pressure + objective_v * sum d (module docstring), else P2(t). ``seed_heuristics``: the
        initial population includes the all-local and the Neurosurgeon joint actions."""
        if budget < 0:
            raise ValueError(f"GA budget must be >= 0 evaluations per slot, got {budget}")
        if budget:
            population = max(2, min(population, budget))
            elites = min(elites, population - 1)
            generations = max(0, budget - population) // (population - elites)
        if population < 2 or generations < 0 or not 0 <= elites < population:
            raise ValueError(
                f"GA needs population >= 2, generations >= 0, 0 <= elites < population (got {population}, {generations}, {elites})"
            )
        if objective_v < 0:
            raise ValueError(f"GA objective_v must be >= 0 (0 = P2 at the scenario's V), got {objective_v}")
        self.objective_v = objective_v
        self.seed_heuristics = seed_heuristics
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
        sampler = ValidSampler(mask)  # every CV's valid actions

        def draw(shape: tuple[int, ...]) -> np.ndarray:
            return sampler.draw(rng, shape)

        pop = draw((p,))  # (P, E, N)
        if self.seed_heuristics:
            pop[0] = view.local_actions()
            pop[1 % p] = Neurosurgeon().act(obs, state, mask, view)

        def fitness(actions: np.ndarray) -> np.ndarray:
            return slot_objective(view.evaluate(actions), self.objective_v)

        fit = fitness(pop)  # (P, E)
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
            fit = np.concatenate([np.take_along_axis(fit, ranked[: self.elites], axis=0), fitness(child)])
        best = fit.argmin(axis=0)
        return pop[best, envs]

    @property
    def evaluations(self) -> int:
        """Objective evaluations per slot and environment."""
        return self.population + self.generations * (self.population - self.elites)


class P2Optimal:
    name = "p2-optimal"

    def __init__(self, max_joint: int = 1_000_000, chunk: int = 16_384, objective_v: float = 0.0) -> None:
        if objective_v < 0:
            raise ValueError(f"objective_v must be >= 0 (0 = P2 at the scenario's V), got {objective_v}")
        self.max_joint = max_joint
        self.chunk = chunk
        self.objective_v = objective_v

    @staticmethod
    def worst_case(env_or_view: VecEnv | SlotView) -> int:
        """Joint actions with every SV reachable: prod_i ((L_k) * J + 1)."""
        tables = env_or_view.tables
        return math.prod(int((c - 1) * tables.n_nodes + 1) for c in tables.n_cuts)

    def reset(self, env: VecEnv, seed: int | None) -> None:
        size = self.worst_case(env)
        if size > self.max_joint:
            raise MethodNotApplicable(
                f"{self.name}: {env.n_agents} CVs x {env.n_nodes} nodes have up to {size:.3g} joint actions per slot, "
                f"over max_joint = {self.max_joint:.3g} (use fewer CVs/SVs or --method-opt {self.name}.max_joint=...)"
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
                    f"{self.name}: {size} joint actions in env {e} exceed max_joint = {self.max_joint}"
                )
            sizes = tuple(len(c) for c in lists)
            best_p2, best_action = np.inf, None
            for start in range(0, size, self.chunk):
                digits = np.unravel_index(np.arange(start, min(start + self.chunk, size)), sizes)
                block = np.stack([c[d] for c, d in zip(lists, digits, strict=True)], axis=-1)  # (B, N)
                p2 = slot_objective(one.evaluate(block[:, None, :]), self.objective_v)[:, 0]
                k = int(p2.argmin())
                if p2[k] < best_p2:
                    best_p2, best_action = p2[k], block[k]
            best[e] = best_action
        return best


#: V' of best-known: the best of V' = 10 / 50 / 150 / 500 / 2000 for a GA at 5 CVs (T = 300), within
#: noise of the best at 7 CVs (docs/results/2026-12-03-references.md).
BEST_KNOWN_V = 150.0


class BestKnown:
    """The completion-time reference (module docstring): exhaustive on "pressure + V' sum d" where
    the joint space fits ``max_joint``, else a heuristic-seeded GA of ``budget`` evaluations."""

    name = "best-known"

    def __init__(self, objective_v: float = BEST_KNOWN_V, budget: int = 10_000, max_joint: int = 1_000_000) -> None:
        self.objective_v = objective_v
        self.budget = budget
        self.max_joint = max_joint
        self.inner: P2Optimal | Genetic | None = None

    def reset(self, env: VecEnv, seed: int | None) -> None:
        if P2Optimal.worst_case(env) <= self.max_joint:
            self.inner = P2Optimal(max_joint=self.max_joint, objective_v=self.objective_v)
        else:
            self.inner = Genetic(budget=self.budget, objective_v=self.objective_v, seed_heuristics=True)
        self.inner.reset(env, seed)

    @property
    def search(self) -> str:
        return "exhaustive" if isinstance(self.inner, P2Optimal) else f"ga({self.budget})"

    def act(self, obs: np.ndarray, state: np.ndarray, mask: np.ndarray, view: SlotView) -> np.ndarray:
        assert self.inner is not None, "reset() first"
        return self.inner.act(obs, state, mask, view)
