"""The batched environment: API shapes, the eq-53 layout, masks (eq 25), determinism, episodes."""

from __future__ import annotations

import numpy as np
import pytest

from splitrt.edge_runtime.sysmodel import lyapunov
from splitrt.edge_runtime.sysmodel import observation as layout
from splitrt.edge_runtime.sysmodel.observation import sample_valid
from splitrt.policy.sim import scenario as config
from splitrt.policy.sim.env import VecEnv


def random_episode(env: VecEnv, policy_seed: int, seed: int | None = None) -> list:
    rng = np.random.default_rng(policy_seed)
    obs, state, mask = env.reset(seed)
    trace = [(obs, state, mask)]
    while True:
        obs, state, mask, reward, done, info = env.step(sample_valid(rng, mask))
        trace.append((obs, state, mask, reward, info))
        if done.all():
            return trace


def test_api_shapes_and_sizes():
    env = VecEnv(config.paper(n_cvs=3, n_svs=4), n_envs=6, seed=0)
    assert (env.n_envs, env.n_agents, env.n_nodes, env.obs_dim, env.state_dim) == (6, 3, 5, 11, 33)
    assert env.agent_model == ["alexnet", "resnet18", "vgg16"]
    np.testing.assert_array_equal(env.n_actions, [13 * 5, 13 * 5, 23 * 5])
    assert env.max_actions == 115
    obs, state, mask = env.reset()
    assert obs.shape == (6, 3, 11) and obs.dtype == np.float32
    assert state.shape == (6, 33) and state.dtype == np.float32
    assert mask.shape == (6, 3, 115) and mask.dtype == bool
    np.testing.assert_array_equal(state, obs.reshape(6, 33))  # eq 54
    obs, state, mask, reward, done, info = env.step(np.zeros((6, 3), dtype=np.int64))
    assert reward.shape == (6,) and reward.dtype == np.float64 and done.shape == (6,)
    shapes = {k: v.shape for k, v in info.items()}
    for k in ("completion_s", "local_s", "tx_s", "rsu_s", "sv_s", "q_loc_flops", "tasks"):
        assert shapes[k] == (6, 3), k
    assert shapes["q_rsu_flops"] == (6, 3) and shapes["q_sv_flops"] == (6, 4)
    assert shapes["rsu_alloc_flops_per_s"] == (6, 3)
    for k in ("lyapunov", "drift", "penalty", "p2", "invalid_actions"):
        assert shapes[k] == (6,), k


def test_observation_layout_is_eq53_and_info_is_consistent():
    env = VecEnv(config.paper(n_cvs=3, n_svs=2), n_envs=2, seed=1)
    trace = random_episode(env, policy_seed=0)
    j = env.n_nodes
    for obs, _, _, reward, info in trace[1:4]:
        types = env.tables.agent_type
        np.testing.assert_allclose(obs[..., layout.Q_LOC], info["q_loc_flops"], rtol=1e-6)
        np.testing.assert_allclose(obs[..., layout.Q_RSU], info["q_rsu_flops"][:, types], rtol=1e-6)
        np.testing.assert_allclose(
            obs[..., layout.sv_queue_slice(j)], np.repeat(info["q_sv_flops"][:, None], 3, 1), rtol=1e-6
        )
        parts = info["local_s"] + info["tx_s"] + info["rsu_s"] + info["sv_s"]
        np.testing.assert_allclose(info["completion_s"], parts)  # eq 17
        np.testing.assert_allclose(reward, -info["p2"])  # eq 57
        l_q = lyapunov.lyapunov([info["q_loc_flops"], info["q_rsu_flops"], info["q_sv_flops"]])
        np.testing.assert_allclose(info["lyapunov"], l_q)  # eq 29 after the slot
        assert np.all(info["completion_s"] > 0)  # one task per CV per slot, each delayed
    # positions: own and SVs' x along the road, in coverage
    env.reset(seed=1)
    obs = env.reset(seed=1)[0]
    pos = env.positions_m()[..., 0]
    np.testing.assert_allclose(obs[..., layout.own_position_index(j)], pos[:, :3], rtol=1e-6)
    np.testing.assert_allclose(obs[..., layout.sv_position_slice(j)], np.repeat(pos[:, None, 3:], 3, 1), rtol=1e-6)


def test_masks_follow_the_v2v_radius():
    env = VecEnv(config.paper(n_cvs=4, n_svs=5), n_envs=8, seed=2)
    _, _, mask = env.reset()
    n_checked_far = 0
    for _ in range(10):
        pos = env.positions_m()
        d = np.linalg.norm(pos[:, :4, None, :] - pos[:, None, 4:, :], axis=-1)  # (E, CV, SV)
        for i in range(4):
            n_cuts = env.tables.n_cuts[i]
            grid = mask[:, i, : n_cuts * env.n_nodes].reshape(8, n_cuts, env.n_nodes)
            assert not mask[:, i, n_cuts * env.n_nodes :].any()  # padding
            assert grid[:, -1, :].all()  # fully local: every node index valid
            assert grid[:, :-1, 0].all()  # the RSU is always reachable
            np.testing.assert_array_equal(grid[:, :-1, 1:], np.repeat((d[:, i] <= 150.0)[:, None, :], n_cuts - 1, 1))
            n_checked_far += int((d[:, i] > 150.0).sum())
            # the same as the shared layout's action_mask
            node_ok = np.concatenate([np.ones((8, 1), bool), d[:, i] <= 150.0], axis=1)
            np.testing.assert_array_equal(mask[:, i, : n_cuts * env.n_nodes], layout.action_mask(n_cuts, node_ok))
        _, _, mask, *_ = env.step(np.zeros((8, 4), dtype=np.int64))
    assert n_checked_far > 0  # some SVs really were out of range


def test_invalid_actions_raise_or_run_local():
    sc = config.paper(n_cvs=2, n_svs=5)
    env = VecEnv(sc, n_envs=4, seed=0)
    _, _, mask = env.reset()
    far = np.argwhere(~mask[:, :, : env.n_actions.min()])
    assert len(far), "expected an SV beyond 150 m in some environment"
    e, i, a = far[0]
    actions = np.zeros((4, 2), dtype=np.int64)
    actions[e, i] = a
    with pytest.raises(ValueError, match=f"invalid action {a} for CV {i} in env {e}"):
        env.step(actions)
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros((4, 3), dtype=np.int64))
    lenient = VecEnv(sc, n_envs=4, seed=0, invalid_action="local")
    lenient.reset()
    *_, info = lenient.step(actions)
    assert info["invalid_actions"][e] == 1 and info["tx_s"][e, i] == 0.0 and info["local_s"][e, i] > 0


def test_seeded_determinism_and_batch_independence():
    sc = config.paper(n_cvs=3, n_svs=3, slots=6)
    a = random_episode(VecEnv(sc, n_envs=3, seed=11), policy_seed=5)
    b = random_episode(VecEnv(sc, n_envs=3, seed=11), policy_seed=5)
    for x, y in zip(a[1:], b[1:], strict=True):
        np.testing.assert_array_equal(x[0], y[0])
        np.testing.assert_array_equal(x[3], y[3])
    c = random_episode(VecEnv(sc, n_envs=3, seed=12), policy_seed=5)
    assert not np.array_equal(a[-1][0], c[-1][0])
    # environment e is the same episode whatever the batch size (child e of the seed)
    small = VecEnv(sc, n_envs=2, seed=11)
    big = VecEnv(sc, n_envs=5, seed=11)
    small.reset()
    big.reset()
    np.testing.assert_array_equal(small.view().state.rate_bps, big.view().state.rate_bps[:2])
    np.testing.assert_array_equal(small.positions_m(), big.positions_m()[:2])


def test_randomness_does_not_depend_on_the_actions():
    sc = config.paper(n_cvs=3, n_svs=3, slots=5)
    env_a, env_b = VecEnv(sc, n_envs=2, seed=4), VecEnv(sc, n_envs=2, seed=4)
    _, _, mask = env_a.reset()
    env_b.reset()
    rng = np.random.default_rng(0)
    for _ in range(5):
        va, vb = env_a.view(), env_b.view()
        np.testing.assert_array_equal(va.state.rate_bps, vb.state.rate_bps)
        np.testing.assert_array_equal(va.state.cv_flops_per_s, vb.state.cv_flops_per_s)
        np.testing.assert_array_equal(env_a.positions_m(), env_b.positions_m())
        _, _, mask, *_ = env_a.step(sample_valid(rng, mask))
        env_b.step(np.broadcast_to(vb.local_actions(), (2, 3)).copy())


def test_episode_end_and_reset():
    sc = config.paper(n_cvs=2, n_svs=1, slots=3)
    env = VecEnv(sc, n_envs=2, seed=0)
    with pytest.raises(RuntimeError, match="call reset"):
        env.step(np.zeros((2, 2), dtype=np.int64))
    env.reset()
    dones = [env.step(np.zeros((2, 2), dtype=np.int64))[4] for _ in range(3)]
    assert [d.tolist() for d in dones] == [[False, False], [False, False], [True, True]]
    with pytest.raises(RuntimeError, match="call reset"):
        env.step(np.zeros((2, 2), dtype=np.int64))
    first = env.reset(seed=0)[0]
    again = env.reset(seed=0)[0]
    np.testing.assert_array_equal(first, again)
    nxt = env.reset()[0]  # continues the stream: a new episode
    assert not np.array_equal(first, nxt)


@pytest.mark.parametrize(("arrivals", "rate"), [("bernoulli", 0.3), ("poisson", 0.7)])
def test_stochastic_arrivals(arrivals, rate):
    sc = config.paper(n_cvs=4, n_svs=2, slots=30, arrivals=arrivals, arrival_rate_per_slot=rate)
    env = VecEnv(sc, n_envs=50, seed=0)
    env.reset()
    tasks, comps = [], []
    for _ in range(30):
        *_, info = env.step(np.zeros((50, 4), dtype=np.int64))
        tasks.append(info["tasks"])
        comps.append(info["completion_s"])
    tasks, comps = np.array(tasks), np.array(comps)
    assert tasks.mean() == pytest.approx(rate, abs=0.05)
    if arrivals == "bernoulli":
        assert set(np.unique(tasks)) == {0, 1}
    assert np.all(comps[tasks == 0] == 0) and np.all(comps[tasks > 0] > 0)


def test_calibrated_preset_runs():
    env = VecEnv(config.calibrated(n_cvs=3, n_svs=3, slots=4), n_envs=2, seed=0)
    env.reset()
    for _ in range(4):
        *_, reward, done, info = env.step(np.zeros((2, 3), dtype=np.int64))
    assert done.all() and np.all(np.isfinite(reward)) and np.all(info["completion_s"] > 0)


def test_given_link_rates_replace_the_channel_model_in_the_transfer():
    """Measured links (multi-host runs): the rates given are the ones a transfer takes, 8 D / R."""
    sc = config.paper(n_cvs=3, n_svs=2, slots=4)
    model = VecEnv(sc, n_envs=1, seed=3)
    model.reset()
    rates, tx = [], []
    actions = np.zeros((1, 3), dtype=np.int64)  # cut 0 (the input) to the RSU
    for _ in range(sc.slots):
        rates.append(model.view().state.rate_bps[0].copy())
        *_, info = model.step(actions)
        tx.append(info["tx_s"][0].copy())
    rates = np.stack(rates)
    for factor in (1.0, 2.0):
        env = VecEnv(sc, n_envs=1, seed=3, link_rates_bps=rates * factor)
        env.reset()
        for t in range(sc.slots):
            np.testing.assert_allclose(env.view().state.rate_bps[0], rates[t] * factor)
            *_, info = env.step(actions)
            np.testing.assert_allclose(info["tx_s"][0], tx[t] / factor, rtol=1e-12)
    with pytest.raises(ValueError, match="link_rates_bps must be"):
        VecEnv(sc, n_envs=1, seed=3, link_rates_bps=rates[:, :2])
