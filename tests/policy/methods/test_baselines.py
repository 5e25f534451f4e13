"""Baselines on tiny instances, the method registry, and p2-optimal as the per-slot minimum of P2."""

from __future__ import annotations

import numpy as np
import pytest

from splitrt.edge_runtime.decide.deciders import greedy_choice
from splitrt.edge_runtime.errors import SplitrtError
from splitrt.policy.methods.baselines import Genetic, P2Optimal
from splitrt.policy.methods.registry import METHODS, MethodNotApplicable, make_method, parse_method_options
from splitrt.policy.sim import scenario as config
from splitrt.policy.sim.env import VecEnv

#: the rule-based methods (the learned ones need a trained policy: tests/policy/test_learned.py)
BASELINES = [m for m in METHODS if not METHODS[m].learned]

TINY = config.paper(n_cvs=2, n_svs=2, slots=6)


def run(name: str, scenario: config.Scenario, n_envs: int = 2, seed: int = 0, **options: str):
    env = VecEnv(scenario, n_envs=n_envs, seed=seed)
    method = make_method(name, options)
    method.reset(env, seed)
    obs, state, mask = env.reset()
    infos, actions = [], []
    for _ in range(scenario.slots):
        a = method.act(obs, state, mask, env.view())
        assert a.shape == (n_envs, scenario.n_cvs) and np.issubdtype(a.dtype, np.integer)
        assert np.take_along_axis(mask, a[..., None], -1).all(), f"{name} chose a masked action"
        actions.append(a)
        obs, state, mask, _, _, info = env.step(a)
        infos.append(info)
    return actions, infos


NO_SV = config.paper(n_cvs=2, n_svs=0, slots=3)  # J = 1: the RSU alone


@pytest.mark.parametrize("scenario", [TINY, NO_SV], ids=["2cv-2sv", "2cv-0sv"])
@pytest.mark.parametrize("name", BASELINES)
def test_every_baseline_plays_valid_deterministic_episodes(name, scenario):
    first, infos = run(name, scenario)
    again, _ = run(name, scenario)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert all(np.all(np.isfinite(i["completion_s"])) for i in infos)


def test_local_and_offload_do_what_they_say():
    _, infos = run("local", TINY)
    assert all(i["tx_s"].sum() == 0 and i["rsu_s"].sum() == 0 and i["sv_s"].sum() == 0 for i in infos)
    actions, infos = run("offload", TINY)
    assert all((a == 0).all() for a in actions)  # cut 0, node 0
    assert all(i["local_s"].sum() == 0 and i["sv_s"].sum() == 0 and (i["rsu_s"] > 0).all() for i in infos)


def test_greedy_is_the_smallest_tensor_and_the_shortest_queue():
    env = VecEnv(config.paper(n_cvs=3, n_svs=3, slots=5), n_envs=3, seed=1)
    method = make_method("greedy")
    obs, state, mask = env.reset()
    for _ in range(5):
        view = env.view()
        a = method.act(obs, state, mask, view)
        for i, model in enumerate(env.agent_model):
            cut_bytes = view.workloads[model].cut_bytes
            queues = np.concatenate([obs[:, i, 1:2], obs[:, i, 2 : env.n_nodes + 1]], axis=1)
            cut, node = greedy_choice(cut_bytes, queues, view.node_ok[:, i])
            np.testing.assert_array_equal(a[:, i], cut * env.n_nodes + node)
            assert np.all(cut_bytes[a[:, i] // env.n_nodes] == cut_bytes[:-1].min())
        obs, state, mask, *_ = env.step(a)


def test_neurosurgeon_is_latency_optimal_when_alone():
    """One CV of the only DNN type: its fair share is the whole RSU, so its estimate is exact."""
    sc = config.paper(n_cvs=1, n_svs=2, models=("resnet18",), slots=6)
    env = VecEnv(sc, n_envs=3, seed=2)
    method = make_method("neurosurgeon")
    obs, state, mask = env.reset()
    for _ in range(6):
        view = env.view()
        a = method.act(obs, state, mask, view)
        every = np.arange(env.max_actions)[:, None, None] * np.ones((1, 3, 1), dtype=np.int64)
        delays = np.where(mask[:, 0].T, view.evaluate(every).completion_s[..., 0], np.inf)  # (A, E)
        np.testing.assert_allclose(view.evaluate(a).completion_s[:, 0], delays.min(axis=0), rtol=1e-12)
        obs, state, mask, *_ = env.step(a)


def test_ga_finds_the_optimum_of_a_small_space():
    sc = config.paper(n_cvs=1, n_svs=1, slots=4)
    env = VecEnv(sc, n_envs=2, seed=3)
    ga, exhaustive = Genetic(population=20, generations=15), P2Optimal()
    ga.reset(env, 0)
    exhaustive.reset(env, 0)
    obs, state, mask = env.reset()
    for _ in range(4):
        view = env.view()
        a_ga, a_or = ga.act(obs, state, mask, view), exhaustive.act(obs, state, mask, view)
        np.testing.assert_allclose(view.evaluate(a_ga).p2, view.evaluate(a_or).p2, rtol=1e-12)
        obs, state, mask, *_ = env.step(a_ga)


@pytest.mark.parametrize("scenario", [TINY, config.paper(n_cvs=3, n_svs=1, slots=4, v=150.0)])
def test_p2_optimal_is_never_worse_than_any_baseline_on_the_same_slot(scenario):
    env = VecEnv(scenario, n_envs=2, seed=5)
    methods = {name: make_method(name) for name in BASELINES}
    for m in methods.values():
        m.reset(env, 0)
    obs, state, mask = env.reset()
    rng = np.random.default_rng(0)
    for _ in range(scenario.slots):
        view = env.view()
        p2 = {name: view.evaluate(m.act(obs, state, mask, view)).p2 for name, m in methods.items()}
        for name, value in p2.items():
            assert np.all(p2["p2-optimal"] <= value + 1e-9 * np.abs(value)), name
        # and below every joint action we can think of: a few hundred random ones
        from splitrt.edge_runtime.sysmodel.observation import sample_valid

        cands = sample_valid(rng, mask, (300,))
        assert np.all(p2["p2-optimal"] <= view.evaluate(cands).p2.min(axis=0) + 1e-9)
        obs, state, mask, *_ = env.step(methods["random"].act(obs, state, mask, view))


def test_p2_optimal_refuses_large_instances():
    env = VecEnv(config.paper(), n_envs=1, seed=0)
    with pytest.raises(MethodNotApplicable, match="joint actions per slot, over max_joint"):
        make_method("p2-optimal").reset(env, 0)
    assert P2Optimal.worst_case(env) == 73 * 73 * 133 * 73 * 73  # (L_k J + 1) per CV: 12*6+1, 22*6+1


def test_registry_and_options():
    ga = make_method("ga", {"population": "8", "generations": "3"})
    assert (ga.population, ga.generations) == (8, 3)
    assert make_method("p2-optimal", {"max_joint": "1e6"}).max_joint == 1_000_000
    with pytest.raises(SplitrtError, match="unknown method 'mad3rl'"):
        make_method("mad3rl")
    with pytest.raises(SplitrtError, match="ga has no option 'pop'"):
        make_method("ga", {"pop": "3"})
    with pytest.raises(SplitrtError, match="not a valid int"):
        make_method("ga", {"population": "many"})
    assert parse_method_options(["ga.population=80", "p2-optimal.max_joint=10"]) == {
        "ga": {"population": "80"},
        "p2-optimal": {"max_joint": "10"},
    }
    with pytest.raises(SplitrtError, match="METHOD.KEY=VALUE"):
        parse_method_options(["population=80"])
