"""The imitation phase, the training reward, the deterministic decision and cross-count policies."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from splitrt.edge_runtime.decide.onnx_policy import OnDevicePolicy
from splitrt.edge_runtime.errors import SplitrtError
from splitrt.policy.evaluate import run_episodes
from splitrt.policy.learn.demonstrate import DEMO_TEMPERATURE, imitation_loss, make_expert, target_sets
from splitrt.policy.learn.train import Learner, TrainConfig, load_run, make_env, train, training_reward
from splitrt.policy.methods.baselines import slot_objective
from splitrt.policy.methods.learned import LearnedPolicy
from splitrt.policy.sim.scenario import preset

#: Imitation only, small: 2 CVs and 1 SV, a cheap GA expert on best-known's objective.
IMITATE = dict(
    cvs=2,
    svs=1,
    expert="ga:budget=120;objective_v=150",
    dagger_rounds=3,
    dagger_slots=12,
    bc_steps=80,
    demo_cvs="1,2",
    episodes=0,
    n_envs=8,
    dagger_envs=8,
    steps=3,
    hidden=64,
    threads=1,
    seed=2,
)


@pytest.fixture(scope="module")
def imitated(tmp_path_factory):
    out = tmp_path_factory.mktemp("imitated")
    train(TrainConfig(method="mad2rl", **IMITATE), out, progress=False)
    return out


def test_the_fully_local_cut_is_one_action_whatever_its_node_index():
    n_cuts, j = np.array([3, 2]), 2  # CV 0: cuts 0..2, CV 1: cuts 0..1; A = 3 * 2
    actions = np.array([[1, 2]])  # CV 0: cut 0 at SV 1; CV 1: cut 1 (its local cut) at the RSU
    got = target_sets(actions, n_cuts, j, 6)
    assert got[0, 0].tolist() == [False, True, False, False, False, False]
    assert got[0, 1].tolist() == [False, False, True, True, False, False]


def test_the_imitation_loss_is_minus_the_log_probability_of_the_target_set():
    score = torch.tensor([[0.5, -1.0, 2.0, float("-inf")]])
    target = torch.tensor([[True, True, False, False]])
    p = np.exp(np.array([0.5, -1.0, 2.0]) / DEMO_TEMPERATURE)
    p /= p.sum()
    assert float(imitation_loss(score, target)) == pytest.approx(-np.log(p[0] + p[1]), rel=1e-5)


def test_the_training_reward_is_best_knowns_slot_objective_or_the_papers():
    cfg = TrainConfig(cvs=2, svs=1, objective_v=150.0)
    env = make_env(cfg, 3, seed=4)
    env.reset()
    actions = np.zeros((3, 2), dtype=np.int64)  # everything at the RSU (always reachable)
    outcome = env.view().evaluate(actions)
    _, _, _, reward, _, info = env.step(actions)
    np.testing.assert_allclose(training_reward(cfg, reward, info), -slot_objective(outcome, 150.0), rtol=1e-9)
    paper = TrainConfig(cvs=2, svs=1, objective_v=0.0)
    np.testing.assert_array_equal(training_reward(paper, reward, info), reward)
    np.testing.assert_allclose(reward, -outcome.p2, rtol=1e-9)


def test_bad_imitation_settings_are_refused_with_the_flag_named():
    with pytest.raises(SplitrtError, match="--demo-cvs"):
        TrainConfig(demo_cvs="3,x")
    with pytest.raises(SplitrtError, match="--demo-cvs"):
        TrainConfig(demo_cvs="0,3")
    with pytest.raises(SplitrtError, match="--decision-noise"):
        TrainConfig(decision_noise="some")
    with pytest.raises(SplitrtError, match="nothing to train"):
        TrainConfig(expert="none", episodes=0)
    with pytest.raises(SplitrtError, match="unknown method 'gaa'"):
        make_expert("gaa:budget=3")
    assert TrainConfig(demo_cvs="").demo_counts() == [5]


def test_imitation_improves_mean_completion_over_the_untrained_policy(imitated, tmp_path):
    """Seeded: the imitated actor, deployed through ONNX, completes tasks faster than the same
    network untrained (exported the same way), on the same evaluation episodes."""
    from splitrt.policy.learn.export import export_actor

    cfg, env, _ = load_run(imitated)
    untrained = Learner(cfg, env)
    untrained.fit_actor_normaliser(np.zeros((4, env.obs_dim), np.float32) + 1e9)
    meta = json.loads((imitated / "policy" / "policy.json").read_text())
    export_actor(
        untrained.actor,
        tmp_path / "untrained",
        {k: meta[k] for k in ("method", "n_nodes", "types", "scenario", "noise")},
    )
    scenario = preset("paper", n_cvs=2, n_svs=1, v=10.0, slots=40)

    def completion(directory) -> float:
        ep = run_episodes(scenario, LearnedPolicy("mad2rl", str(directory)), 8, 123)
        return float(ep.completion_sum_s.sum() / ep.tasks.sum())

    assert completion(imitated / "policy") < completion(tmp_path / "untrained")
    rows = list(csv.DictReader((imitated / "imitation.csv").open()))
    assert len(rows) == 3 and rows[0]["agreement_before"] == "nan"  # round 0 plays the expert only
    # every round's actor is validated; the exported one is the round with the shortest completion
    chosen = min(range(3), key=lambda r: float(rows[r]["val_completion_s"]))
    assert meta["selected"]["imitation_round"] == chosen and meta["selected"]["iteration"] == 0
    assert int(rows[-1]["demonstrations"]) == 3 * 8 * 12 * (1 + 2)  # rounds x envs x slots x CVs


def test_a_zero_noise_policy_decides_in_one_deterministic_pass_equal_to_torch(imitated):
    _, env, learner = load_run(imitated, snapshot="best")
    policy = OnDevicePolicy(imitated / "policy", samples=16)
    assert policy.meta["noise"] == "zero" and policy.samples == 1 and policy.meta["train_cvs"] == [1, 2]
    obs, _, mask = env.reset(seed=11)
    onehot = policy.type_onehot(list(env.agent_model))
    for _ in range(4):
        want = learner.decide(obs, mask, 16, torch.Generator().manual_seed(0))[0]
        q1, a1 = policy.run(obs[0], onehot, mask[0])
        q2, a2 = policy.run(obs[0], onehot, mask[0])
        np.testing.assert_array_equal(a1, want)
        np.testing.assert_array_equal(a1, a2)
        np.testing.assert_array_equal(q1, q2)
        obs, _, mask, _, _, _ = env.step(want[None])


def test_a_policy_trained_on_some_counts_runs_at_another_and_refuses_what_it_cannot_serve(imitated):
    # trained on 1 and 2 CVs (AlexNet, ResNet18): any count whose CVs run those types
    for cvs in (1, 2):
        scenario = preset("paper", n_cvs=cvs, n_svs=1, v=10.0, slots=6)
        ep = run_episodes(scenario, LearnedPolicy("mad2rl", str(imitated / "policy"), match="shape"), 2, 0)
        assert ep.tasks.sum() == 2 * 6 * cvs  # every task of every CV decided and completed
    # a third CV runs VGG16, a type the policy never decided for
    with pytest.raises(SplitrtError, match="never decided for vgg16"):
        LearnedPolicy("mad2rl", str(imitated / "policy"), match="shape").reset(
            make_env(TrainConfig(cvs=3, svs=1), 1, seed=0), 0
        )
    with pytest.raises(SplitrtError, match="trained for 2 edge nodes"):
        OnDevicePolicy(imitated / "policy").check_nodes(3)
    with pytest.raises(SplitrtError, match="no trained mad2rl policy"):
        LearnedPolicy("mad2rl", str(imitated / "policy"), match="shape").reset(
            make_env(TrainConfig(cvs=2, svs=2), 1, seed=0), 0
        )


def test_the_td_phase_keeps_the_demonstrations_and_resumes(tmp_path):
    cfg = TrainConfig(method="pqmix", **{**IMITATE, "episodes": 16, "dagger_rounds": 1, "bc_steps": 5})
    train(cfg, tmp_path, progress=False)
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert len(ckpt["demos"]) == 8 * 12 * 3 and ckpt["iteration"] == 2
    before = (tmp_path / "metrics.csv").read_text()
    train(cfg, tmp_path, resume=True, progress=False)
    assert (tmp_path / "metrics.csv").read_text() == before


def test_a_policy_trained_without_v_serves_every_v_and_one_trained_on_p2_only_its_own(imitated, tmp_path):
    from splitrt.policy.methods.learned import find_policy, v_free

    meta = json.loads((imitated / "policy" / "policy.json").read_text())
    assert v_free(meta)
    for v in (10.0, 50.0, 150.0):
        assert find_policy(imitated / "policy", "mad2rl", preset("paper", n_cvs=2, n_svs=1, v=v)) == imitated / "policy"
    on_p2 = {**meta, "train_config": {**meta["train_config"], "objective_v": 0.0, "episodes": 10}}
    assert not v_free(on_p2)
    assert not v_free({**meta, "train_config": {**meta["train_config"], "expert": "ga:budget=50"}})  # plans on P2
    assert not v_free({"train_config": {"episodes": 10}})  # older policies: trained on -P2 at their V
    (tmp_path / "policy.json").write_text(json.dumps(on_p2))
    with pytest.raises(SplitrtError, match="no trained mad2rl policy"):
        find_policy(tmp_path, "mad2rl", preset("paper", n_cvs=2, n_svs=1, v=50.0))
