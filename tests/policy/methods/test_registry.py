"""The one method registry: each entry has a simulator form and a live form or the reason it has
none; a plug-in (tests/toy_method.py: one file, one `register` line) runs in `splitrt evaluate`
(hil_tests/test_hil.py runs it live)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from splitrt.edge_runtime.decide.deciders import make_decider
from splitrt.edge_runtime.errors import SplitrtError
from splitrt.policy.methods.registry import METHODS, MethodSpec, live_methods, make_method, register

ROOT = Path(__file__).resolve().parents[3]


def test_every_method_has_a_simulator_form_and_a_live_form_or_a_reason():
    for name, spec in METHODS.items():
        assert make_method(name).name, name  # the simulator form builds
        if spec.live is None:
            assert spec.sim_only, name
        elif not spec.learned:
            assert make_decider(spec.live, n_cuts=5, n_nodes=3).name  # a spec the vehicle accepts
    assert set(live_methods()) >= {"local", "offload", "random", "greedy", "mad2rl", "pqmix"}


def test_a_spec_needs_a_live_form_or_a_reason_and_a_name_is_taken_once():
    with pytest.raises(ValueError):
        MethodSpec("x:y")
    with pytest.raises(ValueError):
        MethodSpec("x:y", live="local", sim_only="both")
    with pytest.raises(SplitrtError, match="already registered"):
        register("greedy", MethodSpec("x:y", live="local"))


def test_a_decider_of_your_own_by_module_and_factory():
    decider = make_decider("tests.toy_method:ToyDecider", n_cuts=9, n_nodes=2)
    assert decider.name == "toy"
    with pytest.raises(SplitrtError, match="cannot load 'Nope'"):
        make_decider("tests.toy_method:Nope", n_cuts=9, n_nodes=2)


def run_evaluate(tmp_path, *args, plugins="tests.toy_method"):
    env = {**os.environ, "SPLITRT_PLUGINS": plugins, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "splitrt.tools.cli.main", "evaluate", "--out", str(tmp_path / "ev"), *args]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def test_a_plug_in_method_runs_in_evaluate(tmp_path):
    r = run_evaluate(tmp_path, "--methods", "toy,local", "--slots", "10", "--seeds", "2")
    assert r.returncode == 0, r.stderr
    with open(tmp_path / "ev" / "slots.csv") as f:
        rows = list(csv.DictReader(f))
    toy = [row for row in rows if row["method"] == "toy"]
    local = [row for row in rows if row["method"] == "local"]
    assert len(toy) == len(local) == 20
    # the middle cut to the RSU: head and tail run, the RSU computes, no SV ever does
    assert all(float(row["rsu_s"]) > 0 and float(row["sv_s"]) == 0 and float(row["local_s"]) > 0 for row in toy)
    assert all(float(row["rsu_s"]) == 0 for row in local)


def test_a_plug_in_that_cannot_be_imported_is_named(tmp_path):
    r = run_evaluate(tmp_path, "--methods", "local", "--slots", "2", "--seeds", "1", plugins="tests.no_such_plugin")
    assert r.returncode == 1
    assert "$SPLITRT_PLUGINS: cannot import plug-in 'tests.no_such_plugin'" in r.stderr


def test_a_live_rule_takes_its_seed_as_an_option_and_refuses_others():
    assert make_method("random", {"seed": "7"})._seed == 7  # "X | None" options are coerced to X
    with pytest.raises(SplitrtError, match="random has no option 'budget' \\(options: seed\\)"):
        make_method("random", {"budget": "3"})
