"""The evaluation sweep: same episodes for every method, summary statistics, skips, outputs."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from scipy import stats

from policy import config
from policy.evaluate import SUMMARY_FIELDS, Setting, base_setting, plot, settings_grid, sweep


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
        ["local", "offload", "oracle"],
        settings,
        n_seeds=3,
        seed=7,
        out_dir=out,
        method_options={"oracle": {"max_joint": "200000"}},
    )
    return out, summary, skipped, curves


def test_summary_records(result):
    out, summary, skipped, _ = result
    assert json.loads((out / "summary.json").read_text()) == summary
    assert all(tuple(r) == SUMMARY_FIELDS for r in summary)
    # the oracle cannot enumerate 6 CVs: skipped, listed, not silently dropped
    assert [(s["method"], s["cvs"]) for s in skipped] == [("oracle", 6)]
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
    # slot 0 starts from empty queues, so on the same episode the oracle's P2 cannot exceed
    # local-only's; and the (Bernoulli) task arrivals of every slot are the same for all methods
    local = {(r["cvs"], r["seed"]): float(r["p2"]) for r in rows if r["method"] == "local" and r["slot"] == "0"}
    oracle = {(r["cvs"], r["seed"]): float(r["p2"]) for r in rows if r["method"] == "oracle" and r["slot"] == "0"}
    assert oracle and all(oracle[k] <= local[k] + 1e-9 for k in oracle)
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
        "backlog_over_slots.png",
    ]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
