"""The lower bound (policy/methods/bounds.py): below every method, exact on one CV, the grouped relaxation
below the exact floor; best-known against p2-optimal."""

from __future__ import annotations

import numpy as np
import pytest

from splitrt.policy.evaluate import Setting, run_episodes, summarize
from splitrt.policy.methods.bounds import LowerBound, per_cv_costs, undominated
from splitrt.policy.methods.registry import METHODS, make_method
from splitrt.policy.sim import scenario as config
from splitrt.policy.sim.env import VecEnv
from splitrt.policy.sim.slot import SlotState

#: every rule-based method and planner (the learned ones need a trained policy of the same shape)
POLICIES = [m for m in METHODS if not METHODS[m].learned and m != "lower-bound"]
SMALL_OPTIONS = {"ga": {"population": "12", "generations": "6"}, "best-known": {"budget": "300"}}


def random_scenarios(count: int, seed: int) -> list[config.Scenario]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        arrivals = str(rng.choice(["paper", "bernoulli", "poisson"]))
        rate = {"paper": 1.0, "bernoulli": float(rng.uniform(0.3, 1.0)), "poisson": float(rng.uniform(0.5, 2.0))}
        out.append(
            config.paper(
                n_cvs=int(rng.integers(1, 4)),
                n_svs=int(rng.integers(0, 3)),
                slots=int(rng.integers(4, 9)),
                v=float(10 ** rng.uniform(-1, 3)),
                arrivals=arrivals,
                arrival_rate_per_slot=rate[arrivals],
                rsu_flops_per_s=float(rng.uniform(5e9, 40e9)),
            )
        )
    return out


@pytest.mark.parametrize(
    "scenario", random_scenarios(6, seed=11), ids=lambda s: f"{s.n_cvs}cv-{s.n_svs}sv-{s.arrivals}"
)
def test_lower_bound_is_below_every_method_on_the_same_episodes(scenario):
    setting = Setting(scenario.n_cvs, scenario.n_svs, scenario.v)
    floor = run_episodes(scenario, LowerBound(), n_seeds=3, seed=5)
    bound = summarize("lower-bound", setting, floor)["mean_completion_s"]
    assert bound > 0
    for name in POLICIES:
        ep = run_episodes(scenario, make_method(name, SMALL_OPTIONS.get(name)), n_seeds=3, seed=5)
        np.testing.assert_array_equal(ep.tasks, floor.tasks)  # the same episodes
        # per slot and environment, not only on average
        assert np.all(floor.completion_sum_s <= ep.completion_sum_s * (1 + 1e-12) + 1e-15), name
        assert bound <= summarize(name, setting, ep)["mean_completion_s"] * (1 + 1e-12), name


def test_one_cv_floor_is_the_best_action_at_zero_queues():
    """One CV owns the RSU (P3 gives its type all of F), so at zero queues the floor is exactly the
    least eq-17 delay over its valid actions, whatever queues the episode has built."""
    sc = config.paper(n_cvs=1, n_svs=2, slots=6, models=("vgg16",))
    env = VecEnv(sc, n_envs=4, seed=3)
    lb = LowerBound()
    lb.reset(env, 0)
    obs, state, mask = env.reset()
    for _ in range(sc.slots):
        view = env.view()
        st = view.state
        empty = SlotState(
            np.zeros_like(st.q_loc_flops),
            np.zeros_like(st.q_rsu_flops),
            np.zeros_like(st.q_sv_flops),
            st.cv_flops_per_s,
            st.sv_flops_per_s,
            st.links,
            st.tasks,
        )
        every = np.arange(env.max_actions)[:, None, None] * np.ones((1, 4, 1), dtype=np.int64)
        from splitrt.policy.sim.slot import evaluate_slot

        delays = evaluate_slot(view.tables, empty, every).completion_s[..., 0]  # (A, E)
        best = np.where(mask[:, 0].T, delays, np.inf).min(axis=0)
        np.testing.assert_allclose(lb.slot_floor(view), best, rtol=1e-12)
        obs, state, mask, *_ = env.step(make_method("offload").act(obs, state, mask, view))  # queues grow


def test_grouped_relaxation_is_below_the_exact_floor():
    sc = config.paper(n_cvs=3, n_svs=2, slots=5, models=("resnet18", "resnet18", "alexnet"))
    env = VecEnv(sc, n_envs=3, seed=9)
    exact, pairs, singles = LowerBound(group=3), LowerBound(group=2), LowerBound(group=1)
    for m in (exact, pairs, singles):
        m.reset(env, 0)
    assert exact.exact and not pairs.exact
    obs, state, mask = env.reset()
    gaps = []
    for _ in range(sc.slots):
        view = env.view()
        f3, f2, f1 = exact.slot_floor(view), pairs.slot_floor(view), singles.slot_floor(view)
        assert np.all(f2 <= f3 * (1 + 1e-12)) and np.all(f1 <= f2 * (1 + 1e-12))
        gaps.append(f3 - f1)
        obs, state, mask, *_ = env.step(exact.act(obs, state, mask, view))
    assert np.max(gaps) > 0  # the coupling of same-slot work is real: singles lose it


def test_dominance_pruning_keeps_the_optimum():
    """Enumerating only undominated actions gives the same floor as enumerating every action."""
    sc = config.paper(n_cvs=2, n_svs=2, slots=4)
    env = VecEnv(sc, n_envs=3, seed=4)
    lb = LowerBound()
    lb.reset(env, 0)
    obs, state, mask = env.reset()
    from splitrt.policy.methods.bounds import group_floor

    for _ in range(sc.slots):
        view = env.view()
        parts = per_cv_costs(view)
        pruned = undominated(parts)
        assert pruned.sum() < (parts["keep"][None] & mask).sum()  # it prunes something
        full = dict(parts, useful=parts["keep"][None] & mask)
        np.testing.assert_allclose(group_floor(view, parts, [0, 1], 4096), group_floor(view, full, [0, 1], 4096))
        obs, state, mask, *_ = env.step(make_method("offload").act(obs, state, mask, view))


def test_best_known_beats_p2_optimal_on_completion_at_3_cvs():
    """On fixed seeds, long enough for queues to matter: best-known (exhaustive on pressure + V' sum d)
    completes faster than p2-optimal (exhaustive on P2 at V = 10) and stays above the floor."""
    sc = config.paper(n_cvs=3, n_svs=2, slots=40)
    setting = Setting(3, 2, sc.v)
    res = {
        name: summarize(name, setting, run_episodes(sc, make_method(name), n_seeds=2, seed=1))
        for name in ("best-known", "p2-optimal", "lower-bound")
    }
    assert res["lower-bound"]["mean_completion_s"] <= res["best-known"]["mean_completion_s"]
    assert res["best-known"]["mean_completion_s"] < res["p2-optimal"]["mean_completion_s"]
