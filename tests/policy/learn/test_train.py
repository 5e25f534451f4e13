"""Training, export and the on-device policy: a short run learns, ONNX == torch, resume, CLI."""

from __future__ import annotations

import csv
import json
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from splitrt.edge_runtime.decide.onnx_policy import DEFAULT_SAMPLES, OnDevicePolicy
from splitrt.edge_runtime.errors import SplitrtError
from splitrt.policy.learn.train import Learner, TrainConfig, load_run, make_env, train

ROOT = Path(__file__).resolve().parents[3]
#: The paper's training (TD only on -P2, sampled noise), small.
PAPER = dict(expert="none", objective_v=0.0, decision_noise="sampled")
TINY = dict(cvs=2, svs=1, episodes=32, n_envs=8, batch_size=32, checkpoint_every=2, threads=1, **PAPER)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    train(TrainConfig(method="mad2rl", steps=3, **TINY), out, progress=False)
    return out


def test_run_directory_contents(tiny_run):
    for name in ("config.json", "metrics.csv", "checkpoint.pt", "learning_curve.png", "policy/policy.onnx"):
        assert (tiny_run / name).is_file(), name
    meta = json.loads((tiny_run / "policy" / "policy.json").read_text())
    assert meta["method"] == "mad2rl" and meta["steps"] == 3 and meta["n_nodes"] == 2
    assert meta["obs_dim"] == 5 and [t["model"] for t in meta["types"]] == ["alexnet", "resnet18", "vgg16"]
    assert all(len(t["manifest_sha256"]) == 64 for t in meta["types"])
    assert meta["command"].startswith("splitrt train --method mad2rl")
    # the exact command: every setting, so that running it reproduces the run's configuration
    from splitrt.edge_runtime.configfields import from_args
    from splitrt.policy.learn.config import TrainConfig
    from splitrt.tools.cli.main import build_parser

    args = build_parser().parse_args(shlex.split(meta["command"])[1:])
    config = json.loads((tiny_run / "config.json").read_text())
    rebuilt = from_args(TrainConfig, args)
    assert {k: v for k, v in vars(rebuilt).items() if k != "device"} == {
        k: v for k, v in config.items() if k in vars(rebuilt) and k != "device"
    }
    rows = (tiny_run / "metrics.csv").read_text().splitlines()
    assert len(rows) == 1 + 32 // 8


def test_onnx_policy_matches_torch_with_the_same_noise(tiny_run):
    cfg, env, learner = load_run(tiny_run)
    policy = OnDevicePolicy(tiny_run / "policy")
    obs, _, mask = env.reset(seed=5)
    rng = np.random.default_rng(0)
    for _ in range(5):
        e, n, d = obs.shape
        noise = rng.standard_normal((e * n, cfg.steps, env.max_actions)).astype(np.float32)
        onehot = policy.type_onehot(list(env.agent_model))
        q_onnx, a_onnx = policy.run(obs.reshape(e * n, d), onehot, mask.reshape(e * n, -1), noise)
        with torch.no_grad():
            q_torch, score_torch = learner.actor(
                torch.as_tensor(obs.reshape(e * n, d)),
                torch.as_tensor(onehot),
                torch.as_tensor(mask.reshape(e * n, -1)),
                torch.as_tensor(noise),
            )
        np.testing.assert_allclose(q_onnx, q_torch.numpy(), rtol=1e-4, atol=1e-6)
        np.testing.assert_array_equal(a_onnx, score_torch.argmax(-1).numpy())
        obs, _, mask, *_ = env.step(a_onnx.reshape(e, n).astype(np.int64))


def test_a_decision_averages_the_values_over_its_noise_draws(tiny_run):
    """q of S draws = the mean of S one-draw passes (same noise), action = its argmax; drawn noise
    has `samples` draws; bad noise shapes and sample counts are refused by name."""
    cfg, env, _ = load_run(tiny_run)
    policy = OnDevicePolicy(tiny_run / "policy", samples=4)
    obs, _, mask = env.reset(seed=7)
    e, n, d = obs.shape
    obs, mask = obs.reshape(e * n, d), mask.reshape(e * n, -1)
    onehot = np.tile(policy.type_onehot(list(env.agent_model)), (e, 1))
    noise = np.random.default_rng(3).standard_normal((4, e * n, cfg.steps, env.max_actions)).astype(np.float32)
    q, action = policy.run(obs, onehot, mask, noise)
    singles = np.stack([policy.run(obs, onehot, mask, z)[0] for z in noise])
    np.testing.assert_allclose(q, singles.mean(axis=0), rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(action, singles.mean(axis=0).argmax(-1))
    assert mask[np.arange(e * n), action].all()
    # drawn noise: the same generator state gives the same S-draw decision as that noise given
    drawn = OnDevicePolicy(tiny_run / "policy", seed=11, samples=4)
    expect = np.random.default_rng(11).standard_normal(noise.shape).astype(np.float32)
    np.testing.assert_array_equal(drawn.run(obs, onehot, mask)[1], policy.run(obs, onehot, mask, expect)[1])
    # one draw is the graph's own (B, M, A) path: q and action exactly as with that noise given
    one = OnDevicePolicy(tiny_run / "policy", seed=11, samples=1)
    q1, a1 = one.run(obs, onehot, mask)
    qg, ag = policy.run(obs, onehot, mask, expect[:1][0])
    np.testing.assert_array_equal(q1, qg)
    np.testing.assert_array_equal(a1, ag)
    with pytest.raises(SplitrtError, match="noise must have shape"):
        policy.run(obs, onehot, mask, noise[:, :, :1])
    for bad in (0, -2, 1.5, True):
        with pytest.raises(SplitrtError, match="must be an integer >= 1"):
            OnDevicePolicy(tiny_run / "policy", samples=bad)


def test_policy_json_sets_the_samples_and_pqmix_takes_one(tiny_run, tmp_path):
    import shutil

    copy = tmp_path / "policy"
    shutil.copytree(tiny_run / "policy", copy)
    meta = json.loads((copy / "policy.json").read_text())
    assert OnDevicePolicy(copy).samples == DEFAULT_SAMPLES
    (copy / "policy.json").write_text(json.dumps({**meta, "samples": 3}))
    assert OnDevicePolicy(copy).samples == 3 and OnDevicePolicy(copy, samples=2).samples == 2
    (copy / "policy.json").write_text(json.dumps({**meta, "samples": "many"}))
    with pytest.raises(SplitrtError, match=r"'samples' in .*policy.json.*'many'"):
        OnDevicePolicy(copy)
    run = tmp_path / "pq"
    train(TrainConfig(method="pqmix", **{**TINY, "episodes": 8}), run, progress=False)
    assert OnDevicePolicy(run / "policy", samples=8).samples == 1


def test_masking_never_selects_an_invalid_action(tiny_run):
    policy = OnDevicePolicy(tiny_run / "policy")
    rng = np.random.default_rng(1)
    for _ in range(50):
        node_ok = rng.random((4, 2)) < 0.5
        node_ok[:, 0] = True  # the RSU is always reachable
        obs = rng.standard_normal((4, 5)).astype(np.float32) * 1e9
        models = list(rng.choice(["alexnet", "resnet18"], 4))
        _, action = policy.q_values(obs, models, node_ok)
        masks = policy.masks(models, node_ok)
        assert masks[np.arange(4), action].all()


def test_resume_continues_where_it_stopped(tmp_path):
    cfg = TrainConfig(method="pqmix", **{**TINY, "episodes": 16})
    train(cfg, tmp_path, progress=False)
    before = (tmp_path / "metrics.csv").read_text().splitlines()
    cfg2 = TrainConfig(method="pqmix", **{**TINY, "episodes": 32})
    with pytest.raises(Exception, match="another configuration"):
        train(cfg2, tmp_path, resume=True, progress=False)
    train(cfg, tmp_path, resume=True, progress=False)  # already finished: nothing to add
    assert (tmp_path / "metrics.csv").read_text().splitlines() == before


def test_training_improves_on_the_untrained_policy(tmp_path):
    """Seeded: a short MAD2RL run beats its own untrained actor on the same evaluation episodes."""
    cfg = TrainConfig(
        method="mad2rl",
        steps=3,
        cvs=2,
        svs=1,
        episodes=96,
        n_envs=8,
        batch_size=64,
        checkpoint_every=100,
        threads=1,
        seed=3,
        **PAPER,
    )
    untrained = Learner(cfg, make_env(cfg, 1, seed=0))
    train(cfg, tmp_path, progress=False)
    _, _, trained = load_run(tmp_path)
    untrained.set_normalisers(*_warm(cfg), n_nodes=2)

    def evaluate(learner) -> float:
        env = make_env(cfg, 16, seed=999)
        obs, _, mask = env.reset()
        total = 0.0
        while True:
            obs, _, mask, reward, done, _ = env.step(learner.act(obs, mask, 0.0, np.random.default_rng(0)))
            total += float(reward.mean())
            if done.all():
                return total

    assert evaluate(trained) > evaluate(untrained)


def _warm(cfg):
    env = make_env(cfg, 4, seed=1)
    obs, state, _ = env.reset()
    return obs, state


def test_runtime_decision_api_is_torch_free(tiny_run):
    code = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        from splitrt.edge_runtime.decide.deciders import DecisionContext
        from splitrt.edge_runtime.decide.onnx_policy import OnDevicePolicy
        from splitrt.edge_runtime.sysmodel.observation import build_observation
        p = OnDevicePolicy({str(tiny_run / "policy")!r})
        obs = build_observation(1e9, 2e9, np.array([3e9]), -40.0, np.array([20.0]))
        n_cuts = p.n_cuts["resnet18"]
        ctx = DecisionContext(obs, np.ones(n_cuts), np.zeros(n_cuts), np.zeros(n_cuts), np.array([True, True]),
                              model="resnet18")
        cut, node = p.decide(ctx)
        assert 0 <= cut < n_cuts and node in (0, 1)
        assert not [m for m in sys.modules if m == "torch" or m.startswith("torch.")]
        print("OK", cut, node)
        """
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.startswith("OK"), r.stderr


def test_policy_refuses_another_scenario_shape(tiny_run):
    from splitrt.edge_runtime.decide.deciders import DecisionContext

    p = OnDevicePolicy(tiny_run / "policy")
    ctx = DecisionContext(
        np.zeros(7, np.float32), np.ones(13), np.zeros(13), np.zeros(13), np.array([True, True, True]), model="resnet18"
    )
    with pytest.raises(SplitrtError, match="trained for 2 edge nodes"):
        p.decide(ctx)
    with pytest.raises(SplitrtError, match="not 'mobilenet_v2'"):
        p.check_model("mobilenet_v2")


def test_train_and_export_policy_cli(tmp_path):
    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "splitrt.tools.cli.main", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )

    r = run(
        "train",
        "--method",
        "pqmix",
        "--cvs",
        "2",
        "--svs",
        "1",
        "--episodes",
        "8",
        "--n-envs",
        "8",
        "--batch-size",
        "16",
        "--threads",
        "1",
        "--expert",
        "none",
        "--no-progress",
        "--out",
        str(tmp_path / "run"),
    )
    assert r.returncode == 0, r.stderr
    r = run("export-policy", "--run", str(tmp_path / "run"), "--out", str(tmp_path / "p" / "policy.onnx"))
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "p" / "policy.json").read_text())["method"] == "pqmix"
    r = run("train", "--method", "mad3rl", "--out", str(tmp_path / "x"))
    assert r.returncode == 1 and "--method 'mad3rl'" in r.stderr
    r = run("export-policy", "--run", str(tmp_path / "nothing"))
    assert r.returncode == 1 and "no checkpoint" in r.stderr


def test_learned_method_finds_the_policy_for_the_scenario(tiny_run):
    from splitrt.policy.methods.learned import find_policy
    from splitrt.policy.methods.registry import MethodNotApplicable
    from splitrt.policy.sim.scenario import preset

    assert find_policy(tiny_run, "mad2rl", preset("paper", n_cvs=2, n_svs=1)) == tiny_run / "policy"
    with pytest.raises(MethodNotApplicable, match="splitrt train --method mad2rl --preset paper --cvs 3"):
        find_policy(tiny_run, "mad2rl", preset("paper", n_cvs=3, n_svs=1))
    # shape: any number of CVs (the actor is per agent), but the same SVs and V
    assert find_policy(tiny_run, "mad2rl", preset("paper", n_cvs=3, n_svs=1), "shape") == tiny_run / "policy"
    for other in (preset("paper", n_cvs=2, n_svs=2), preset("paper", n_cvs=2, n_svs=1, v=50.0)):
        with pytest.raises(MethodNotApplicable):
            find_policy(tiny_run, "mad2rl", other, "shape")
    with pytest.raises(MethodNotApplicable):
        find_policy(tiny_run, "pqmix", preset("paper", n_cvs=2, n_svs=1))


def test_shape_matching_prefers_a_policy_trained_for_the_same_number_of_cvs(tiny_run, tmp_path):
    import shutil

    from splitrt.policy.methods.learned import find_policy
    from splitrt.policy.sim.scenario import preset

    for name, cvs in (("a-two", 2), ("b-three", 3)):
        shutil.copytree(tiny_run / "policy", tmp_path / name)
        meta = json.loads((tmp_path / name / "policy.json").read_text())
        meta["scenario"]["n_cvs"] = cvs
        (tmp_path / name / "policy.json").write_text(json.dumps(meta))
    three, four = preset("paper", n_cvs=3, n_svs=1), preset("paper", n_cvs=4, n_svs=1)
    assert find_policy(tmp_path, "mad2rl", three, "shape") == tmp_path / "b-three"  # not the first sorted
    assert find_policy(tmp_path, "mad2rl", three) == tmp_path / "b-three"
    assert find_policy(tmp_path, "mad2rl", four, "shape") == tmp_path / "a-two"  # none exact: first sorted


def test_mad2rl_method_decides_with_the_requested_noise_draws(tiny_run):
    """`--method-opt mad2rl.samples=K` reaches the policy: the method's actions are the argmax of
    the mean q over K draws from its seeded generator, exactly as `OnDevicePolicy.run` decides."""
    from splitrt.policy.methods.registry import make_method
    from splitrt.policy.sim.env import VecEnv
    from splitrt.policy.sim.scenario import preset

    env = VecEnv(preset("paper", n_cvs=2, n_svs=1), n_envs=3, seed=4)
    method = make_method("mad2rl", {"policy": str(tiny_run), "samples": "3"})
    method.reset(env, seed=9)
    assert method.policy.samples == 3
    obs, _, mask = env.reset()
    got = method.act(obs, None, mask, env.view())
    ref = OnDevicePolicy(tiny_run / "policy", seed=9, samples=3)
    onehot = np.tile(ref.type_onehot(list(env.agent_model)), (3, 1))
    _, want = ref.run(obs.reshape(6, -1), onehot, mask.reshape(6, -1))
    np.testing.assert_array_equal(got.reshape(-1), want)
    default = make_method("mad2rl", {"policy": str(tiny_run)})
    default.reset(env, seed=9)
    assert default.policy.samples == DEFAULT_SAMPLES
    bad = make_method("mad2rl", {"policy": str(tiny_run), "samples": "-1"})
    with pytest.raises(SplitrtError, match="policy samples .* got -1"):
        bad.reset(env, seed=9)


def test_validation_selects_the_exported_snapshot_without_changing_the_training(tmp_path):
    """validate_every=1: every row has validation figures, the exported policy is the snapshot with
    the shortest validation completion time (ONNX == that actor), and the training columns equal a run that
    never validates (validation has its own episodes and noise)."""
    plain = train(
        TrainConfig(method="mad2rl", steps=3, **{**TINY, "validate_every": 0}), tmp_path / "a", progress=False
    )
    checked = train(
        TrainConfig(method="mad2rl", steps=3, **{**TINY, "validate_every": 1}), tmp_path / "b", progress=False
    )
    rows_a = list(csv.DictReader((plain / "metrics.csv").open()))
    rows_b = list(csv.DictReader((checked / "metrics.csv").open()))
    for col in ("return", "completion_s", "loss"):
        assert [r[col] for r in rows_a] == [r[col] for r in rows_b], col
    assert all(r["val_return"] == "" for r in rows_a) and all(r["val_return"] for r in rows_b)
    best_row = min(rows_b, key=lambda r: float(r["val_completion_s"]))
    selected = json.loads((checked / "policy" / "policy.json").read_text())["selected"]
    assert (
        selected["iteration"] == int(best_row["iteration"]) and selected["by"] == "shortest validation completion time"
    )
    assert json.loads((plain / "policy" / "policy.json").read_text())["selected"]["by"] == "last iteration"
    # the exported graph is the selected actor: torch decide == runtime decision on the same noise
    cfg, env, learner = load_run(checked, snapshot="best")
    policy = OnDevicePolicy(checked / "policy")
    obs, _, mask = env.reset(seed=3)
    for samples in (1, 4):
        gen = torch.Generator().manual_seed(7)
        want = learner.decide(obs, mask, samples, gen)
        noise = torch.randn(
            samples * obs.shape[1], cfg.steps, env.max_actions, generator=torch.Generator().manual_seed(7)
        )
        noise = noise.numpy().reshape(samples, obs.shape[1], cfg.steps, env.max_actions)
        onehot = policy.type_onehot(list(env.agent_model))
        got = policy.run(obs[0], onehot, mask[0], noise if samples > 1 else noise[0])[1]
        np.testing.assert_array_equal(got, want[0])


def test_imitation_in_the_as_run_model(tmp_path):
    """--sim-model as-run: the imitation episodes and the validation run in the as-run model with
    the calibration's overheads; the policy records it; a TD phase there is refused."""
    from splitrt.policy.sim.asrun import CALIBRATION_VERSION

    cal = tmp_path / "calibration.json"
    cal.write_text(
        json.dumps({"format_version": CALIBRATION_VERSION, "overheads": {"decide_s": 0.002, "link_s": 0.001}})
    )
    small = dict(cvs=2, svs=1, n_envs=2, threads=1, dagger_rounds=1, dagger_slots=5, dagger_envs=2, bc_steps=3)
    cfg = TrainConfig(method="pqmix", preset="demo", demo_cvs="2", sim_model="as-run", calibration=str(cal), **small)
    train(cfg, tmp_path / "run", progress=False)
    meta = json.loads((tmp_path / "run" / "policy" / "policy.json").read_text())
    assert meta["scenario"]["sim_model"] == "as-run" and meta["scenario"]["calibration_file"] == str(cal)
    assert meta["selected"]["val_completion_s"] > 0.002  # completions of the as-run model, decision included
    with pytest.raises(SplitrtError, match="imitation only"):
        train(TrainConfig(sim_model="as-run", episodes=5), tmp_path / "td", progress=False)
    assert not (tmp_path / "td").exists()  # refused before anything is written
    with pytest.raises(SplitrtError, match="--sim-model"):
        TrainConfig(sim_model="queueing")
