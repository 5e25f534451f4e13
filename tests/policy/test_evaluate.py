"""The evaluation sweep: same episodes for every method, summary statistics, skips, outputs."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from scipy import stats

from splitrt.policy.evaluate import SUMMARY_FIELDS, Setting, base_setting, plot, settings_grid, sweep
from splitrt.policy.sim import scenario as config


def test_settings_grids():
    assert len(settings_grid([3, 5, 7], [3, 5, 7], [10, 50, 150], "product")) == 27
    sweeps = settings_grid([3, 5, 7], [3, 5, 7], [10.0, 50.0, 150.0], "sweeps")
    assert len(sweeps) == 7 and Setting(5, 5, 10.0) in sweeps and Setting(3, 5, 10.0) in sweeps
    assert base_setting([2, 4], [1], [50.0, 150.0]) == Setting(4, 1, 150.0)  # middle values when 5/5/10 absent


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    base = config.paper(slots=5, arrivals="bernoulli", arrival_rate_per_slot=0.8)
    settings = [Setting(2, 1, 10.0), Setting(3, 1, 10.0), Setting(6, 1, 10.0)]
    summary, skipped, curves = sweep(
        base,
        ["local", "offload", "p2-optimal"],
        settings,
        n_seeds=3,
        seed=7,
        out_dir=out,
        method_options={"p2-optimal": {"max_joint": "200000"}},
    )
    return out, summary, skipped, curves


def test_summary_records(result):
    out, summary, skipped, _ = result
    assert json.loads((out / "summary.json").read_text()) == summary
    assert all(tuple(r) == SUMMARY_FIELDS for r in summary)
    # p2-optimal cannot enumerate 6 CVs: skipped, listed, not silently dropped
    assert [(s["method"], s["cvs"]) for s in skipped] == [("p2-optimal", 6)]
    assert "max_joint" in skipped[0]["reason"]
    assert json.loads((out / "skipped.json").read_text()) == skipped
    assert len(summary) == 3 * 3 - 1


def test_csv_rows_and_statistics_agree(result):
    out, summary, _, _ = result
    rows = list(csv.DictReader((out / "slots.csv").open()))
    assert len(rows) == 8 * 3 * 5  # (method, setting) pairs x seeds x slots
    for rec in summary:
        mine = [r for r in rows if r["method"] == rec["method"] and int(r["cvs"]) == rec["cvs"]]
        per_seed = []
        for seed in range(3):
            slots = [r for r in mine if int(r["seed"]) == seed]
            tasks = np.array([int(r["tasks"]) for r in slots])
            comp = np.array([float(r["completion_s"] or "nan") for r in slots])
            comp = np.where(tasks > 0, comp, 0.0)
            per_seed.append((comp * tasks).sum() / tasks.sum())
        assert rec["mean_completion_s"] == pytest.approx(np.mean(per_seed), rel=1e-9)
        half = stats.t.ppf(0.975, 2) * np.std(per_seed, ddof=1) / math.sqrt(3)
        assert rec["ci95_s"] == pytest.approx(half, rel=1e-9, abs=1e-15)
        backlog = [float(r["backlog_flops"]) for r in mine]
        assert rec["mean_backlog_flops"] == pytest.approx(np.mean(backlog))
        assert rec["max_backlog_flops"] == pytest.approx(np.max(backlog))
        for r in mine:  # the backlog is the sum of its parts
            parts = float(r["q_loc_flops"]) + float(r["q_rsu_flops"]) + float(r["q_sv_flops"])
            assert float(r["backlog_flops"]) == pytest.approx(parts)


def test_every_method_faces_the_same_episodes(result):
    out, _, _, _ = result
    rows = list(csv.DictReader((out / "slots.csv").open()))
    # slot 0 starts from empty queues, so on the same episode p2-optimal's P2 cannot exceed
    # local-only's; and the (Bernoulli) task arrivals of every slot are the same for all methods
    local = {(r["cvs"], r["seed"]): float(r["p2"]) for r in rows if r["method"] == "local" and r["slot"] == "0"}
    best = {(r["cvs"], r["seed"]): float(r["p2"]) for r in rows if r["method"] == "p2-optimal" and r["slot"] == "0"}
    assert best and all(best[k] <= local[k] + 1e-9 for k in best)
    tasks = {}
    for r in rows:
        tasks.setdefault((r["cvs"], r["seed"], r["slot"]), set()).add(r["tasks"])
    assert all(len(v) == 1 for v in tasks.values())


def test_plots_are_pngs(result):
    out, summary, _, curves = result
    paths = plot(summary, curves, Setting(3, 1, 10.0), out, 1.0)
    assert [p.name for p in paths] == [
        "completion_vs_cvs.png",
        "completion_vs_svs.png",
        "completion_vs_v.png",
        "backlog_vs_v.png",
        "completion_vs_decision.png",
        "backlog_over_slots.png",
    ]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_charged_decision_time_is_added_to_exactly_the_tasks_it_decided():
    sc = config.paper(n_cvs=3, n_svs=2, slots=6, arrivals="bernoulli", arrival_rate_per_slot=0.6)
    from splitrt.policy.evaluate import run_episodes
    from splitrt.policy.methods.registry import make_method

    plain = run_episodes(sc, make_method("neurosurgeon"), n_seeds=3, seed=2)
    charged = run_episodes(sc, make_method("neurosurgeon"), n_seeds=3, seed=2, charge_decision=True)
    assert np.all(charged.decide_s > 0)
    np.testing.assert_array_equal(charged.tasks, plain.tasks)
    # the same decisions (deterministic method): only the decision time differs, slot by slot
    np.testing.assert_array_equal(charged.completion_sum_s, plain.completion_sum_s + charged.decide_s * charged.tasks)
    np.testing.assert_array_equal(charged.job_completion_s, plain.job_completion_s + charged.decide_s[..., None])
    for k in charged.backlog:  # queues evolve as without the charge
        np.testing.assert_array_equal(charged.backlog[k], plain.backlog[k])


def test_ga_budget_is_the_number_of_evaluations():
    from splitrt.policy.methods.baselines import Genetic
    from splitrt.policy.sim.env import VecEnv

    env = VecEnv(config.paper(n_cvs=3, n_svs=2, slots=2), n_envs=2, seed=0)
    obs, state, mask = env.reset()
    for budget, population in ((500, 50), (30, 30), (7, 7)):
        ga = Genetic(budget=budget)
        ga.reset(env, 0)
        assert ga.population == population and ga.evaluations <= budget
        assert ga.evaluations > budget - ga.population  # what fits is used
        view = env.view()
        counted: list[int] = []

        class Counting:
            def __init__(self, inner, log):
                self.inner, self.log = inner, log

            def __getattr__(self, name):
                return getattr(self.inner, name)

            def evaluate(self, actions):
                self.log.append(actions.shape[0])  # (candidates, E, N)
                return self.inner.evaluate(actions)

        ga.act(obs, state, mask, Counting(view, counted))
        assert sum(counted) == ga.evaluations


def test_backlog_slope_growth_mark_and_p95():
    from splitrt.policy.evaluate import backlog_slope, queues_grow, weighted_quantile

    t = np.arange(100.0)
    ramp = np.stack([3e9 * t + 1e9 * k for k in range(4)])  # +3 GFLOP per slot
    np.testing.assert_allclose(backlog_slope(ramp), 3e9)
    work = 40e9  # FLOPs arriving per slot
    assert queues_grow(ramp, work) == 4
    rng = np.random.default_rng(0)
    steady = 50e9 + rng.normal(0, 5e9, (4, 100))  # bounded: noise around a level
    assert queues_grow(steady, work) == 0
    wander = 20e9 + 10e9 * np.sin(np.arange(25, 325) / 8.0)[None]  # wandering +-10 GFLOP, bounded
    assert queues_grow(wander, work) == 0 and backlog_slope(wander)[0] > 0  # though its slope is positive
    dip = np.repeat([[13.7e9, 8.8e9, 11.9e9, 15.3e9]], 75, axis=1)  # a low second quarter: +74%, 6.5 GFLOP
    assert queues_grow(dip, work) == 0 and queues_grow(dip, 1e9) == 1  # small against a slot's work
    assert queues_grow(np.concatenate([ramp[:1], steady[:3]]), work) == 1  # one seed of four grows
    assert weighted_quantile(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1, 1, 1, 1]), 0.5) == 2.0
    assert weighted_quantile(np.array([5.0, 1.0]), np.array([19, 1]), 0.95) == 5.0
    assert weighted_quantile(np.array([5.0, 1.0]), np.array([0, 3]), 0.95) == 1.0  # weight 0: absent


def test_rescore_recomputes_the_backlog_statistics_from_the_csv(result):
    from splitrt.policy.evaluate import rescore

    out, summary, _, _ = result
    base = config.paper(slots=5, arrivals="bernoulli", arrival_rate_per_slot=0.8)  # the fixture's
    (out / "config.json").write_text(json.dumps({"scenario": base.to_dict()}))  # as the CLI writes it
    before = json.loads((out / "summary.json").read_text())
    for r in before:
        r["queues_grow"], r["mean_backlog_flops"] = -1, -1.0  # as an older definition might have left them
    (out / "summary.json").write_text(json.dumps(before))
    again = rescore(out)
    assert again == summary  # every field back to what the run computed
    assert (out / "summary.md").read_text().startswith("| method |")
