"""`splitrt hil --report-only DIR`: the report rebuilt from a run directory's files, nothing live.

The run directory is laid out as `splitrt hil` (and a real deployment) leaves it: config.json
written by the same function, the chained profiles, per-vehicle task records in the record
format, vehicle stats, and recorded telemetry states instead of controller.jsonl (so the
controller's books are recomputed). The numbers of summary.json are checked against those files.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from splitrt.edge_runtime.formats.records import DURATION_KEYS, read_jsonl
from splitrt.policy.sim import scenario as config
from splitrt.policy.sim.asrun import CALIBRATION_VERSION, load_calibration
from splitrt.tools.cli import main as cli
from splitrt.tools.hil.comparison import AS_RUN_DRAWS
from splitrt.tools.hil.plan import make_plan
from splitrt.tools.hil.rebuild import write_config
from splitrt.tools.hil.simulate import simulate

SLOTS = 6
SEED = 3
GFLOP = 1e9


def task_record(t: dict, index: int, scale: float) -> dict:
    """A vehicle's record (splitrt.edge_runtime.formats.records) for a simulated task, every duration x ``scale``."""
    r = dict.fromkeys(DURATION_KEYS, 0.0)
    r.update(
        local_wait_s=t["local_wait_s"] * scale,
        local_compute_s=t["local_compute_s"] * scale,
        transfer_s=t["transfer_s"] * scale,
        remote_wait_s=t["remote_queue_s"] * scale,
        remote_compute_s=t["remote_compute_s"] * scale,
    )
    total = sum(r[k] for k in DURATION_KEYS)
    arrival = 1.0e9 + t["slot"]
    r.update(
        task_id=f"{t['vehicle_id']}-{index}",
        vehicle_id=t["vehicle_id"],
        index=index,
        slot=t["slot"],
        model=t["model"],
        digest="0" * 64,
        decider="greedy",
        cut=t["cut"],
        node=t["node"],
        edge=None if t["node"] is None else f"tcp://10.0.0.{t['node'] + 1}:5555",
        node_name=None if t["node"] is None else ("rsu" if t["node"] == 0 else f"sv{t['node']}"),
        encoding="fp32",
        bytes=0,
        outcome="remote" if t["node"] is not None else "local",
        reason="",
        arrival_unix_s=arrival,
        completion_unix_s=arrival + total,
        total_s=total,
        link_security="plain",
    )
    return r


def state_line(kind: str, ident: str, body: dict) -> str:
    """One line of a `splitrt record` file (splitrt.edge_runtime.experiment.recorder)."""
    msg = {"schema": 1, "kind": kind, "sent_at": 0.0, **body}
    return json.dumps({"recv_unix_s": 0.0, "id": ident, "msg": msg})


@pytest.fixture(scope="module")
def run_dir(shipped_exports, tmp_path_factory):
    """A finished `splitrt hil --methods greedy` run: every live file, no report yet."""
    out = tmp_path_factory.mktemp("run")
    plan = make_plan(config.demo(slots=SLOTS), SEED, shipped_exports, out / "profiles", headroom=1.5)
    write_config(
        out,
        plan,
        preset="demo",
        methods={"greedy": "greedy"},
        skipped={"ga": "simulator only"},
        links="plain loopback, links not shaped (test)",
        broker="embedded test broker",
    )
    mdir = out / "greedy"
    (mdir / "telemetry").mkdir(parents=True)
    sim = simulate(plan, "greedy")
    records = {cv.id: [] for cv in plan.cvs}
    for t in sim.tasks:
        rs = records[t["vehicle_id"]]
        rs.append(task_record(t, len(rs), 1.1))
    failed = records["cv1"][2]
    failed.update(outcome="failed", reason="error:internal: test")
    for cv in plan.cvs:
        (mdir / f"{cv.id}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records[cv.id]))
        stats = {"vehicle": cv.id, "counters": {"generated": SLOTS, "missed_slots": 1 if cv.id == "cv0" else 0}}
        (mdir / f"{cv.id}.stats.json").write_text(json.dumps(stats))
    # the states every process published at slots 0..T (Q(t) of the controller)
    lines = {"vehicle_state": [], "node_state": []}
    for t in range(SLOTS + 1):
        for i, cv in enumerate(plan.cvs):
            body = {"vehicle": cv.id, "slot": t, "q_loc_flops": (i + 1) * 0.1 * GFLOP * t}
            lines["vehicle_state"].append(state_line("vehicle_state", cv.id, body))
        queues = {m: {"flops": 0.2 * GFLOP * (k + 1), "est_s": 0.01} for k, m in enumerate(plan.scenario.types)}
        lines["node_state"].append(state_line("node_state", "rsu", {"node": "rsu", "slot": t, "queues": queues}))
        for sv in plan.svs:
            body = {"node": sv.name, "slot": t, "queues": {"fifo": {"flops": 0.05 * GFLOP * t, "est_s": 0.0}}}
            lines["node_state"].append(state_line("node_state", sv.name, body))
    for kind, ls in lines.items():
        (mdir / "telemetry" / f"{kind}.jsonl").write_text("\n".join(ls) + "\n")
    (out / "summary.json").write_text(json.dumps([{"method": "greedy", "wall_s": 12.5, "cpu_load": {"measured": 0.3}}]))
    return {"out": out, "plan": plan, "sim": sim, "records": [r for rs in records.values() for r in rs]}


def backlog(plan, t: int) -> float:
    """Total Q(t) of the synthetic states."""
    n_cv = len(plan.cvs)
    return (
        sum((i + 1) * 0.1 * GFLOP * t for i in range(n_cv))
        + sum(0.2 * GFLOP * (k + 1) for k in range(len(plan.scenario.types)))
        + len(plan.svs) * 0.05 * GFLOP * t
    )


def test_report_only_rebuilds_the_summary_from_the_files(run_dir, capsys):
    out, plan, sim, records = run_dir["out"], run_dir["plan"], run_dir["sim"], run_dir["records"]
    assert cli.main(["hil", "--report-only", str(out), "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [s["method"] for s in summary] == ["greedy"]
    s = summary[0]
    done = [r["total_s"] for r in records if r["outcome"] != "failed"]
    n = SLOTS * len(plan.cvs)
    assert (s["tasks_generated"], s["tasks_completed"], s["tasks_failed"]) == (n, n - 1, 1)
    assert s["measured_mean_completion_s"] == pytest.approx(np.mean(done))
    assert s["measured"]["p95_s"] == pytest.approx(np.percentile(done, 95))
    # the plan rebuilt from config.json + DIR/profiles is the run's: the same simulated episode
    simulated = np.mean([t["completion_s"] for t in sim.tasks])
    assert s["simulated_mean_completion_s"] == pytest.approx(simulated)
    assert s["gap_pct"] == pytest.approx(100 * (np.mean(done) - simulated) / simulated)
    assert s["decisions_agree"] == 1.0 and s["replay_gap_pct"] == pytest.approx(s["gap_pct"])
    assert s["link_emulation"] == "loopback" and s["missed_slots"] == 1
    # the controller's books recomputed from the recorded states: backlog after slot t = Q(t + 1)
    after = np.array([backlog(plan, t + 1) for t in range(SLOTS)]) / GFLOP
    assert s["backlog"]["measured"]["mean_gflop"] == pytest.approx(after.mean())
    assert s["backlog"]["measured"]["final_gflop"] == pytest.approx(after[-1])
    assert s["stale_states"] == 0
    assert s["lyapunov"]["measured"]["mean_penalty"] is not None
    # what only the live run measured is carried over from the earlier summary
    assert s["wall_s"] == 12.5 and s["cpu_load"]["measured"] == 0.3
    text = (out / "report.md").read_text()
    assert f"{s['measured']['mean_s'] * 1e3:.1f}" in text and f"{s['gap_pct']:+.1f}%" in text
    assert "nothing ran live" in text and "simulator only" in text
    for name in ("completion_cdf.png", "components.png", "queues.png", "lyapunov.png", "report.html"):
        assert (out / name).stat().st_size > 0
    assert "measured mean" in capsys.readouterr().out
    # the as-run model: the calibration fitted from these records, every task of the episode
    overheads = load_calibration(out / "calibration.json")
    assert s["as_run_calibration"].endswith("(in-sample)") and str(out / "calibration.json") in s["as_run_calibration"]
    draws = s["as_run_draws"]
    assert overheads.link_jitter_s > 0 and draws == AS_RUN_DRAWS  # the fit's residual spread: averaged over draws
    assert s["as_run"]["n"] == s["as_run_replayed"]["n"] == n * draws and s["as_run_spread_pct"] >= 0
    assert s["as_run_gap_pct"] == pytest.approx(100 * (np.mean(done) - s["as_run"]["mean_s"]) / s["as_run"]["mean_s"])
    replayed = {
        (t["draw"], t["vehicle_id"], t["slot"]): t for t in read_jsonl(out / "greedy" / "as_run_replay_tasks.jsonl")
    }
    assert len(replayed) == n * draws  # every task once in every draw
    for r in records:
        for k in range(draws):
            t = replayed[(k, r["vehicle_id"], r["slot"])]
            assert (t["cut"], t["node"]) == (r["cut"], r["node"])  # the live decisions, replayed
            assert sum(t["parts_s"].values()) == pytest.approx(t["completion_s"])
    assert s["as_run_decisions_agree"] == 1.0  # greedy decides the same on the as-run queues here
    assert overheads.decide_s == 0.0  # the synthetic records spend nothing deciding
    assert "Which parts of the time each model gets wrong" in text and "as-run replayed" in text
    # another run's calibration: named in the summary, and this run's own fit still written
    other = out.parent / "other-calibration.json"
    other.write_text(json.dumps({"format_version": CALIBRATION_VERSION, "overheads": {"decide_s": 0.01}}))
    assert cli.main(["hil", "--report-only", str(out), "--no-progress", "--calibration", str(other)]) == 0
    again = json.loads((out / "summary.json").read_text())[0]
    assert again["as_run_calibration"] == f"overheads from {other} (fitted from another run's records)"
    assert again["as_run_draws"] == 1  # no jitter in that file: one deterministic run
    assert again["as_run"]["n"] == n
    assert load_calibration(out / "calibration.json") == overheads


def test_report_only_explains_what_is_missing(run_dir, tmp_path, capsys):
    def error(*args: str) -> str:
        assert cli.main(["hil", *args]) == 1
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1, lines
        return lines[0]

    assert "no such directory" in error("--report-only", str(tmp_path / "nope"))
    bad = ("--report-only", str(run_dir["out"]), "--calibration", str(tmp_path / "nope.json"))
    assert "the calibration" in (msg := error(*bad)) and "nope.json does not exist" in msg
    assert "go with --report-only" in error("--vehicle-profiles", str(tmp_path), "--rsu-profiles", str(tmp_path))
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no method directory with task records" in error("--report-only", str(empty), "--preset", "demo")
    assert "no task records for offload" in error("--report-only", str(run_dir["out"]), "--methods", "offload")
    # a deployment's vehicle named otherwise than the scenario's CVs
    stray = tmp_path / "stray"
    shutil.copytree(run_dir["out"], stray)
    (stray / "greedy" / "cv0.jsonl").write_text(
        (stray / "greedy" / "cv0.jsonl").read_text().replace('"vehicle_id": "cv0"', '"vehicle_id": "pi-7"')
    )
    assert "'pi-7', not one of the scenario's CVs cv0, cv1, cv2" in error("--report-only", str(stray))
