"""The PettingZoo ParallelEnv: PettingZoo's own conformance and seed tests, plus the mapping."""

from __future__ import annotations

import numpy as np
from pettingzoo.test import parallel_api_test, parallel_seed_test

from splitrt.policy.sim import scenario as config
from splitrt.policy.sim.pz_env import SplitrtParallelEnv

SCENARIO = config.paper(n_cvs=3, n_svs=3, slots=12)


def test_parallel_api_conformance():
    parallel_api_test(SplitrtParallelEnv(SCENARIO, seed=0), num_cycles=40)


def test_parallel_seed_test():
    parallel_seed_test(lambda: SplitrtParallelEnv(SCENARIO), num_cycles=20)


def test_spaces_state_reward_and_truncation():
    env = SplitrtParallelEnv(SCENARIO, seed=3)
    obs, infos = env.reset(seed=3)
    assert env.agents == ["cv_0", "cv_1", "cv_2"]
    assert env.action_space("cv_2").n == 23 * 4  # VGG16: 23 cuts x J = 4
    assert obs["cv_0"]["observation"].shape == (9,) and obs["cv_0"]["action_mask"].dtype == np.int8
    np.testing.assert_array_equal(env.state(), np.concatenate([obs[a]["observation"] for a in env.agents]))
    steps = 0
    while env.agents:
        actions = {a: int(np.flatnonzero(obs[a]["action_mask"])[0]) for a in env.agents}
        obs, rewards, terms, truncs, infos = env.step(actions)
        steps += 1
        assert len(set(rewards.values())) == 1  # the common reward (eq 57)
        assert rewards["cv_0"] == -infos["cv_0"]["p2"]
        assert not any(terms.values())
        assert all(truncs.values()) == (steps == SCENARIO.slots)
        assert not any(i["invalid_action"] for i in infos.values())
    assert steps == SCENARIO.slots and env.agents == []


def test_a_masked_action_runs_local_and_is_flagged():
    env = SplitrtParallelEnv(config.paper(n_cvs=2, n_svs=5), seed=0)
    for _ in range(20):
        obs, _ = env.reset()
        blocked = {a: np.flatnonzero(o["action_mask"] == 0) for a, o in obs.items()}
        agent = next((a for a, b in blocked.items() if len(b)), None)
        if agent is not None:
            break
    assert agent is not None, "expected a masked SV in 20 episodes"
    _, _, _, _, infos = env.step({agent: int(blocked[agent][0])})
    assert infos[agent]["invalid_action"] and infos[agent]["tx_s"] == 0.0
