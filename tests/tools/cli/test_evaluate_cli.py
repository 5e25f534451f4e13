"""`splitrt evaluate` and the simulator benchmarks, run as a user would, in a subprocess."""

from __future__ import annotations

import json

from tests.tools.cli.test_cli import assert_one_line_error, splitrt


def test_evaluate_writes_summary_csv_and_plots(tmp_path):
    out = tmp_path / "ev"
    r = splitrt(
        "evaluate",
        "--methods",
        "local,greedy,ga,neurosurgeon,random,offload",
        "--cvs",
        "2,3",
        "--svs",
        "2",
        "--v",
        "10,50",
        "--seeds",
        "2",
        "--set",
        "slots=4",
        "--method-opt",
        "ga.generations=3",
        "--out",
        str(out),
    )
    assert r.returncode == 0, r.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary) == 6 * 2 * 2
    assert {(s["cvs"], s["v"]) for s in summary} == {(2, 10.0), (2, 50.0), (3, 10.0), (3, 50.0)}
    assert all(s["seeds"] == 2 and s["mean_completion_s"] > 0 for s in summary)
    config = json.loads((out / "config.json").read_text())
    assert config["scenario"]["slots"] == 4 and config["method_options"] == {"ga": {"generations": "3"}}
    assert (out / "slots.csv").read_text().count("\n") == 1 + 6 * 4 * 2 * 4
    for name in ("completion_vs_cvs", "completion_vs_svs", "completion_vs_v", "backlog_over_slots"):
        assert (out / f"{name}.png").is_file()
    assert "completion s" in r.stdout and "neurosurgeon" in r.stdout  # the printed table


def test_evaluate_bad_flags_give_one_line_errors(tmp_path):
    out = str(tmp_path / "x")
    assert_one_line_error(splitrt("evaluate", "--methods", "local,magic", "--out", out), "unknown magic")
    assert_one_line_error(splitrt("evaluate", "--set", "speed=3", "--out", out), "'speed' is not a scenario setting")
    assert_one_line_error(splitrt("evaluate", "--set", "slot_s=-1", "--out", out), "slot_s = -1.0 must be > 0")
    assert_one_line_error(splitrt("evaluate", "--preset", "nope", "--out", out), "unknown scenario preset 'nope'")
    assert_one_line_error(
        splitrt("evaluate", "--methods", "local", "--method-opt", "ga.population=3", "--out", out), "not in --methods"
    )
    assert_one_line_error(splitrt("evaluate", "--methods", "oracle", "--out", out), "now called 'p2-optimal'")
    assert_one_line_error(splitrt("evaluate", "--variant", "g=ga:pop=3", "--out", out), "ga has no option 'pop'")
    assert_one_line_error(splitrt("evaluate", "--variant", "ga=ga:budget=9", "--out", out), "already a method")
    assert_one_line_error(splitrt("evaluate", "--variant", "g=magic", "--out", out), "unknown method 'magic'")
    assert_one_line_error(splitrt("evaluate", "--slots", "0", "--out", out), "--slots must be >= 1")
    assert_one_line_error(splitrt("evaluate", "--rescore", out), "no summary.json and slots.csv there")
    r = splitrt("evaluate", "--preset", "calibrated", "--show-scenario")
    assert r.returncode == 0 and "vehicle_profile_dir" in r.stdout


def test_references_variants_and_long_horizon_columns(tmp_path):
    """lower-bound and best-known beside variants of the GA; the table gives the ratios to both."""
    out = tmp_path / "ref"
    r = splitrt(
        "evaluate", "--methods", "lower-bound,best-known,ga-20,local", "--variant", "ga-20=ga:budget=20",
        "--cvs", "2", "--svs", "1", "--seeds", "2", "--slots", "12", "--charge-decision", "--out", str(out),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    summary = {s["method"]: s for s in json.loads((out / "summary.json").read_text())}
    assert set(summary) == {"lower-bound", "best-known", "ga-20", "local"}
    assert summary["lower-bound"]["search"] == "exact" and summary["best-known"]["search"] == "exhaustive"
    assert all(s["slots"] == 12 and s["charge_decision"] for s in summary.values())
    for name in ("best-known", "ga-20", "local"):
        assert summary["lower-bound"]["mean_completion_s"] <= summary[name]["mean_completion_s"]
        assert summary[name]["p95_completion_s"] >= 0 and 0 <= summary[name]["queues_grow"] <= 2
    assert json.loads((out / "config.json").read_text())["variants"] == {
        "ga-20": {"method": "ga", "options": {"budget": "20"}}
    }
    assert "x best-known" in r.stdout and "x bound" in r.stdout
    table = (out / "summary.md").read_text().splitlines()
    assert table[0].startswith("| method |") and len(table) == 2 + len(summary)
    assert (out / "completion_vs_decision.png").is_file()


def test_simulator_benchmarks_quick(tmp_path):
    out = tmp_path / "bench.json"
    r = splitrt(
        "bench", "--only", "simulator,as_run,ga,p2_optimal", "--quick", "--out", str(out), "--work", str(tmp_path)
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    records = json.loads(out.read_text())
    figures = {(x["benchmark"], x["figure"]) for x in records}
    assert figures == {
        ("simulator", "vehicle_slots_per_s"),
        ("simulator", "vehicle_slots_per_cpu_s"),
        ("as_run", "vehicle_slots_per_s"),
        ("as_run", "vehicle_slots_per_cpu_s"),
        ("ga", "s_per_slot"),
        ("p2_optimal", "s_per_slot"),
    }
    assert all(x["value"] > 0 for x in records)
    assert all({"cvs", "svs"} <= set(x["params"]) for x in records)
    assert {x["params"]["decisions"] for x in records if x["benchmark"] == "as_run"} == {"local", "random", "rsu"}


def test_evaluate_and_train_default_to_the_presets_vehicles_and_v(tmp_path):
    """Without --cvs/--svs/--v the preset's own values are used (demo: 3 CVs, 2 SVs), not the paper's."""
    out = tmp_path / "ev"
    r = splitrt(
        "evaluate", "--preset", "demo", "--methods", "local", "--seeds", "1", "--set", "slots=2", "--no-plots",
        "--out", str(out),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    [s] = json.loads((out / "summary.json").read_text())
    assert (s["cvs"], s["svs"], s["v"]) == (3, 2, 10.0)
    from splitrt.tools.cli.main import build_parser
    from splitrt.tools.cli.train import resolve_preset_fields

    parse = build_parser().parse_args
    args = vars(parse(["train", "--preset", "demo", "--out", str(tmp_path / "t")]))
    assert {k: resolve_preset_fields(args)[k] for k in ("cvs", "svs", "v")} == {"cvs": 3, "svs": 2, "v": 10.0}
    args = vars(parse(["train", "--preset", "demo", "--cvs", "4", "--v", "50", "--out", str(tmp_path / "t")]))
    assert {k: resolve_preset_fields(args)[k] for k in ("cvs", "svs", "v")} == {"cvs": 4, "svs": 2, "v": 50.0}
