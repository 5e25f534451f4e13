"""`splitrt hil` end to end on real processes: the report's numbers follow the records, telemetry
survives a broker outage, and nothing (processes, namespaces, qdiscs, broker) outlives a run,
whether it ends normally, by Ctrl-C, by an exception or by SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hil_tests.conftest import HIL_MODELS, finish
from splitrt.edge_runtime.formats.manifest import Manifest
from splitrt.edge_runtime.formats.records import read_jsonl
from splitrt.policy.sim.asrun import load_calibration
from splitrt.tools.hil import linkem
from splitrt.tools.hil.broker import sweep_stale_brokers
from splitrt.tools.hil.report import measured_components

ROOT = Path(__file__).resolve().parents[1]
#: A small demo: 2 CVs (ResNet18, MobileNetV2), 1 SV, the preset's slot on this machine.
SCENARIO = ["--preset", "demo", "--set", "models=resnet18,mobilenet_v2", "--set", "n_cvs=2", "--set", "n_svs=1"]
NETNS, NETNS_WHY = linkem.availability()


def _default_sigint() -> None:
    # A suite started in the background by a non-interactive shell (`make test &`) inherits an
    # ignored SIGINT, and so would the harness: Ctrl-C must reach it as it does from a terminal.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def hil(out: Path, exports: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    args = [*SCENARIO, "--out", str(out), "--exports", str(exports), "--keep-profiles", "--no-progress", *extra]
    return subprocess.Popen(
        [sys.executable, "-m", "splitrt.tools.cli.main", "hil", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=_default_sigint,
    )


def assert_nothing_left(out: Path) -> None:
    """No child, broker or namespace of the run is left (qdiscs live in the namespaces)."""
    pids = json.loads((out / "pids.json").read_text())
    assert pids["pids"], "the run never recorded its children"
    deadline = time.monotonic() + 20
    alive = {}
    while time.monotonic() < deadline:
        alive = {name: pid for name, pid in pids["pids"].items() if _alive(pid)}
        if not alive:
            break
        time.sleep(0.1)
    assert not alive, f"still running: {alive}"
    prefix = pids["namespace_prefix"]
    if prefix:
        assert not [ns for ns in linkem.list_namespaces() if ns.startswith(prefix)]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def wait_running(out: Path, method: str, timeout_s: float = 240) -> None:
    """Until a vehicle of ``method`` has finished a task (the run is inside its slots)."""
    deadline = time.monotonic() + timeout_s
    path = out / method / "cv0.jsonl"
    while not (path.is_file() and path.read_text().strip()):
        assert time.monotonic() < deadline, "the live run never got to its first task"
        time.sleep(0.1)


def report_only(out: Path) -> None:
    """`splitrt hil --report-only OUT` (rebuilds summary.json and the report from OUT's files)."""
    rebuilt = subprocess.run(
        [sys.executable, "-m", "splitrt.tools.cli.main", "hil", "--report-only", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]


@pytest.mark.timeout(600)
def test_a_toy_baseline_added_as_a_plug_in_runs_live(hil_exports, tmp_path):
    """tests/toy_method.py (one file, one `register` line) runs on live vehicles: every task is cut
    at its model's middle and sent to the RSU, and the report compares it with its simulator form."""
    from tests.toy_method import middle_cut

    out = tmp_path / "run"
    env = {"SPLITRT_PLUGINS": "tests.toy_method", "PYTHONPATH": str(ROOT)}
    code, _, stderr = finish(hil(out, hil_exports, "--methods", "toy", "--slots", "3", env=env))
    assert code == 0, stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert [s["method"] for s in summary] == ["toy"]
    remote = [r for r in read_jsonl(out / "toy" / "records.jsonl") if r["outcome"] == "remote"]
    assert remote
    cuts = {m: middle_cut(Manifest.load(hil_exports / m).n_cuts) for m in HIL_MODELS}
    for r in remote:
        assert (r["cut"], r["node"]) == (cuts[r["model"]], 0), r
    assert read_jsonl(out / "toy" / "sim_tasks.jsonl")  # the simulator ran its form on the same episode


@pytest.mark.timeout(600)
def test_hil_end_to_end_report_matches_the_records(hil_exports, tmp_path):
    out = tmp_path / "run"
    code, stdout, stderr = finish(hil(out, hil_exports, "--methods", "greedy,offload", "--slots", "4"))
    assert code == 0, stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert [s["method"] for s in summary] == ["greedy", "offload"]
    expected_links = "tc" if NETNS else "loopback"
    config = json.loads((out / "config.json").read_text())
    v = config["scenario"]["v"]
    report = (out / "report.md").read_text()
    for s in summary:
        m = s["method"]
        records = read_jsonl(out / m / "records.jsonl")
        sim = read_jsonl(out / m / "sim_tasks.jsonl")
        assert s["link_emulation"] == expected_links
        assert s["tasks_generated"] == len(records) == 4 * 2 == s["tasks_completed"] and s["tasks_failed"] == 0
        totals = [r["total_s"] for r in records]
        assert s["measured_mean_completion_s"] == pytest.approx(np.mean(totals))
        assert s["simulated_mean_completion_s"] == pytest.approx(np.mean([t["completion_s"] for t in sim]))
        assert s["gap_pct"] == pytest.approx(
            100 * (s["measured_mean_completion_s"] / s["simulated_mean_completion_s"] - 1)
        )
        assert f"{s['measured']['mean_s'] * 1e3:.1f}" in report and f"{s['gap_pct']:+.1f}%" in report
        for r in records:
            assert sum(measured_components(r).values()) == pytest.approx(r["total_s"])
            assert r["outcome"] == "remote" and r["node"] is not None  # both methods offload
        # the as-run prediction exists for every task, the live decisions replayed through it
        as_run = read_jsonl(out / m / "as_run_replay_tasks.jsonl")
        assert s["as_run"]["n"] == s["as_run_replayed"]["n"] == len(as_run) == len(records) * s["as_run_draws"]
        for k in range(s["as_run_draws"]):  # every task once per draw of the link jitter
            assert sorted(
                (t["vehicle_id"], t["slot"], t["cut"], t["node"]) for t in as_run if t["draw"] == k
            ) == sorted((r["vehicle_id"], r["slot"], r["cut"], r["node"]) for r in records)
        assert s["as_run_gap_pct"] is not None and "in-sample" in s["as_run_calibration"]
        # the controller's books: one record per slot, the penalty from these very records
        books = read_jsonl(out / m / "controller.jsonl")
        assert [b["slot"] for b in books] == list(range(4))
        for b in books:
            mine = [r["total_s"] for r in records if r["slot"] == b["slot"]]
            assert b["penalty"] == pytest.approx(v * sum(mine)) and b["tasks_done"] == len(mine) == 2
            assert np.isfinite(b["lyapunov"]) and b["drift"] == pytest.approx(b["lyapunov"] - b["lyapunov_start"])
        # telemetry carried every task record and every node's state of every slot
        recorded = {json.loads(line)["msg"]["task_id"] for line in (out / m / "telemetry" / "task.jsonl").open()}
        assert recorded == {r["task_id"] for r in records}
        node_slots = {
            (rec["id"], rec["msg"]["slot"])
            for rec in map(json.loads, (out / m / "telemetry" / "node_state.jsonl").open())
        }
        assert {("rsu", t) for t in range(4)} <= node_slots and {("sv1", t) for t in range(4)} <= node_slots
        stats = json.loads((out / m / "cv0.stats.json").read_text())
        assert stats["counters"]["generated"] == 4 and stats["telemetry"]["dropped"] == 0
        if NETNS:  # every slot's channel rate was applied to every link, as the wire rate of that payload
            applied = read_jsonl(out / m / "tc_rates.jsonl")
            assert [a["slot"] for a in applied] == list(range(4))
            trace = json.loads((out / m / "traces" / "cv1.json").read_text())
            for a in applied:
                want = np.array(trace["rate_bps"][a["slot"]]) * linkem.WIRE_BYTES_PER_PAYLOAD_BYTE
                got = [a["wire_bps"][f"cv1-{n}"] for n in ("rsu", "sv1")]
                np.testing.assert_allclose(got, want, rtol=1e-6, atol=1)
    assert load_calibration(out / "calibration.json").decide_s > 0  # fitted from the run's records
    for png in ("completion_cdf.png", "components.png", "queues.png", "lyapunov.png"):
        assert (out / png).stat().st_size > 1000
    assert "<table>" in (out / "report.html").read_text()
    assert "greedy" in stdout and "offload" in stdout and "measured mean" in stdout
    assert_nothing_left(out)
    # --report-only rebuilds the same summary from the files; without controller.jsonl the books
    # come from the recorded telemetry (what a deployment's `splitrt record` leaves)
    (out / "offload" / "controller.jsonl").unlink()
    report_only(out)
    again = json.loads((out / "summary.json").read_text())
    assert [s["method"] for s in again] == ["greedy", "offload"]
    for s, r in zip(summary, again, strict=True):
        for key in ("tasks_generated", "tasks_completed", "tasks_failed", "link_emulation", "wall_s", "missed_slots"):
            assert r[key] == s[key], key
        for key in ("measured_mean_completion_s", "simulated_mean_completion_s", "gap_pct", "decisions_agree"):
            assert r[key] == pytest.approx(s[key]), key
        for key in ("mean_gflop", "final_gflop"):
            assert r["backlog"]["measured"][key] == pytest.approx(s["backlog"]["measured"][key]), key
        assert r["lyapunov"]["measured"]["mean_penalty"] == pytest.approx(s["lyapunov"]["measured"]["mean_penalty"])


@pytest.mark.timeout(600)
def test_broker_killed_mid_run_tasks_complete_and_drops_are_counted(hil_exports, tmp_path):
    """The broker killed at slot 2 (and, with namespaces, cv0's links blacked out for slots 3-4):
    every task still ends exactly once, and summary.json / the report show each fault window with
    the tasks that arrived before, during and after it."""
    out = tmp_path / "run"
    blackout = ["--fault", "blackout@3:2"] if NETNS else []
    code, _, stderr = finish(
        hil(out, hil_exports, "--methods", "greedy", "--slots", "6", "--fault", "broker-kill@2", *blackout)
    )
    assert code == 0, stderr[-3000:]
    assert "fault: killing the broker at slot 2" in stderr
    s = json.loads((out / "summary.json").read_text())[0]
    assert s["tasks_completed"] == s["tasks_generated"] == 12 and s["tasks_failed"] == 0
    assert s["telemetry_dropped"] > 0  # per-slot states published into the void, counted
    books = read_jsonl(out / "greedy" / "controller.jsonl")
    assert any(b["stale"] for b in books[2:])  # the controller fell back on the last known states
    assert all(b["tasks_done"] == 2 for b in books)  # the vehicles' own records are complete
    records = read_jsonl(out / "greedy" / "records.jsonl")
    assert sorted(r["task_id"] for r in records) == sorted({r["task_id"] for r in records})  # each ended once
    # the fault windows: the broker down from slot 2 to the end (not restarted), cv0 cut off in 3..4
    expected = {"broker_killed": (2, 6)} | ({"link_blackout": (3, 5)} if NETNS else {})
    faults = {f["kind"]: f for f in s["faults"]}
    assert {k: (f["start_slot"], f["end_slot"]) for k, f in faults.items()} == expected
    lines = read_jsonl(out / "greedy" / "faults.jsonl")
    assert sorted(x["kind"] for x in lines if x["event"] == "fault") == sorted(expected)
    for kind, (a, b) in expected.items():
        f = faults[kind]
        assert f["start_unix_s"] < f["end_unix_s"]
        parts = f["tasks"]
        assert sum(p["n"] for p in parts.values()) == len(records)
        # the window covers exactly the tasks of its slots (arrivals at the slot starts)
        want = {"before": range(0, a), "during": range(a, b), "after": range(b, 6)}
        for part, slots in want.items():
            mine = [r for r in records if r["slot"] in slots]
            assert parts[part]["n"] == len(mine), (kind, part)
            assert parts[part]["outcomes"] == {o: sum(r["outcome"] == o for r in mine) for o in parts[part]["outcomes"]}
        assert parts["during"]["outcomes"]["failed"] == 0
    report = (out / "report.md").read_text()
    assert "## Faults" in report and all(f"| greedy | {k} |" in report for k in expected)
    assert "2..5" in report and (not NETNS or "3..4" in report)
    assert_nothing_left(out)
    # --report-only finds the windows in greedy/faults.jsonl
    (out / "summary.json").unlink()
    report_only(out)
    again = json.loads((out / "summary.json").read_text())[0]
    assert again["faults"] == s["faults"]
    assert "## Faults" in (out / "report.md").read_text()


@pytest.mark.timeout(600)
def test_ctrl_c_stops_everything(hil_exports, tmp_path):
    out = tmp_path / "run"
    proc = hil(out, hil_exports, "--methods", "local", "--slots", "60")
    wait_running(out, "local")
    os.killpg(proc.pid, signal.SIGINT)
    code, _, stderr = finish(proc, 120)
    assert code == 130, stderr[-2000:]
    assert "interrupted" in stderr
    assert_nothing_left(out)


@pytest.mark.timeout(600)
def test_a_crash_inside_the_run_stops_everything(hil_exports, tmp_path):
    out = tmp_path / "run"
    code, _, stderr = finish(hil(out, hil_exports, "--methods", "local", "--slots", "10", "--fault", "crash@2"))
    assert code == 1 and "injected crash at slot 2" in stderr
    assert_nothing_left(out)


@pytest.mark.timeout(600)
def test_sigkill_of_the_orchestrator_takes_its_children_and_the_next_run_sweeps(hil_exports, tmp_path):
    out = tmp_path / "run"
    proc = hil(out, hil_exports, "--methods", "local", "--slots", "60")
    wait_running(out, "local")
    os.kill(proc.pid, signal.SIGKILL)  # no clean-up code runs in the orchestrator
    proc.communicate(timeout=30)
    pids = json.loads((out / "pids.json").read_text())
    children = {n: p for n, p in pids["pids"].items() if n != "broker"}
    deadline = time.monotonic() + 20
    while any(_alive(p) for p in children.values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [n for n, p in children.items() if _alive(p)]  # they died with it (PR_SET_PDEATHSIG)
    # what the next `splitrt hil` does first: sweep a broker left behind (mosquitto keeps root with
    # `user root`, so its death signal normally takes it too) and the namespaces
    if "broker" in pids["pids"]:
        swept = sweep_stale_brokers()
        assert not _alive(pids["pids"]["broker"]), swept
    if pids["namespace_prefix"]:
        removed = linkem.cleanup_stale()
        assert [ns for ns in removed if ns.startswith(pids["namespace_prefix"])]
    assert_nothing_left(out)
