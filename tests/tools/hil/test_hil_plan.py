"""splitrt hil's plan, simulation and report without processes: the same world for both sides."""

from __future__ import annotations

import json

import numpy as np
import pytest

from splitrt.edge_runtime.compute.profile import Profile
from splitrt.edge_runtime.errors import SplitrtError
from splitrt.edge_runtime.formats.records import DURATION_KEYS
from splitrt.policy.sim import scenario as config
from splitrt.policy.sim.slot import link_rates_bps
from splitrt.policy.sim.workloads import reference_speed_flops_per_s
from splitrt.tools.hil import report
from splitrt.tools.hil.plan import chained_profiles, estimate_cpu, live_scenario, make_plan
from splitrt.tools.hil.runner import LiveResult, parse_faults
from splitrt.tools.hil.simulate import COMPONENTS, replay, simulate


@pytest.fixture(scope="module")
def plan(shipped_exports, tmp_path_factory):
    return make_plan(config.demo(slots=6), 3, shipped_exports, tmp_path_factory.mktemp("profiles"), headroom=1.5)


def test_chained_profiles_sum_to_the_measured_chain(shipped_exports, tmp_path):
    exports = shipped_exports
    scales = chained_profiles(exports, config.DEMO_MODELS, tmp_path)
    for model in config.DEMO_MODELS:
        orig = json.loads((exports / model / "profile.json").read_text())
        prof = Profile.load(tmp_path / model / "profile.json")
        assert prof.segment_median_s.sum() == pytest.approx(orig["chain"]["median_s"])
        assert prof.head_s[-1] == pytest.approx(orig["chain"]["median_s"]) and prof.tail_s[0] == prof.head_s[-1]
        ratios = prof.segment_median_s / np.array([s["median_s"] for s in orig["segments"]])
        np.testing.assert_allclose(ratios, scales[model])  # proportions kept


def test_live_scenario_keeps_the_presets_ratios_and_load(shipped_exports):
    exports = shipped_exports
    base = config.demo()
    sc = live_scenario(base, exports, headroom=1.5)
    f_ref = reference_speed_flops_per_s(exports, base.types, exports)
    assert sc.rsu_flops_per_s == pytest.approx(f_ref / 1.5)
    assert sc.cv_flops_per_s[0] / sc.rsu_flops_per_s == pytest.approx(base.cv_flops_per_s[0] / base.rsu_flops_per_s)
    assert sc.sv_flops_per_s[1] / sc.rsu_flops_per_s == pytest.approx(base.sv_flops_per_s[1] / base.rsu_flops_per_s)
    assert sc.slot_s * sc.rsu_flops_per_s == pytest.approx(base.slot_s * base.rsu_flops_per_s)  # same load per slot
    with pytest.raises(SplitrtError, match="--headroom must be >= 1"):
        live_scenario(base, exports, headroom=0.5)


def test_plan_replays_the_simulators_episode(plan):
    sc = plan.scenario
    ep = plan.episode
    f_ref = plan.rsu_flops_per_s * plan.rsu_speed_factor
    assert plan.rsu_speed_factor == pytest.approx(1.5)
    for i, cv in enumerate(plan.cvs):
        assert cv.model == sc.cv_models()[i]
        assert cv.speed_factor == pytest.approx(f_ref / ep.cv_flops_per_s[i])
        t = 2
        rates, _ = link_rates_bps(sc, ep.positions_m[t], ep.fading[t])
        np.testing.assert_allclose(cv.trace.rate_bps[t], rates[i])  # eqs 1-2, the same fading draw
        assert cv.trace.pos_m[t] == ep.positions_m[t, i, 0]
        np.testing.assert_array_equal(cv.trace.node_ok, ep.node_ok[: sc.slots, i])
    for j, sv in enumerate(plan.svs):
        assert sv.speed_factor == pytest.approx(f_ref / ep.sv_flops_per_s[j])
    assert set(plan.work.models) == set(sc.types) and plan.work.unit == "effective_flops"
    assert plan.node_names == ["rsu", "sv1", "sv2"]


def test_cpu_estimate_refuses_an_oversubscribed_scenario(plan):
    est = estimate_cpu(plan, cpus=2)
    assert 0 < est.load < 0.7  # the demo fits this machine: no refusal
    assert isinstance(est.check(), list)
    tiny = estimate_cpu(plan, cpus=1)
    assert tiny.load == pytest.approx(2 * est.load)
    with pytest.raises(SplitrtError, match="over 1% the queues would measure CPU contention"):
        est.check(max_load=0.01)


def test_replaying_the_simulated_decisions_reproduces_the_simulation(plan):
    sim = simulate(plan, "greedy")
    records = [
        {"vehicle_id": t["vehicle_id"], "slot": t["slot"], "cut": t["cut"], "node": t["node"]} for t in sim.tasks
    ]
    rep = replay(plan, "greedy", records)
    assert rep.invalid_actions == 0 and (rep.actions == sim.actions).all()
    for a, b in zip(sim.tasks, rep.tasks, strict=True):
        assert a["completion_s"] == pytest.approx(b["completion_s"])
        assert sum(a[k] for k in COMPONENTS) == pytest.approx(a["completion_s"])  # the split adds up


def fake_live(plan, sim, scale=1.0):
    """A LiveResult whose records are the simulated tasks, every duration x ``scale``."""
    records = []
    for t in sim.tasks:
        r = {k: 0.0 for k in DURATION_KEYS}
        r.update(
            task_id=f"{t['vehicle_id']}-{t['slot']}",
            vehicle_id=t["vehicle_id"],
            model=t["model"],
            slot=t["slot"],
            cut=t["cut"],
            node=t["node"],
            outcome="remote" if t["node"] is not None else "local",
            local_wait_s=t["local_wait_s"] * scale,
            local_compute_s=t["local_compute_s"] * scale,
            transfer_s=t["transfer_s"] * scale,
            remote_wait_s=t["remote_queue_s"] * scale,
            remote_compute_s=t["remote_compute_s"] * scale,
        )
        r["total_s"] = sum(r[k] for k in DURATION_KEYS)
        records.append(r)
    controller = [
        {
            "slot": s["slot"],
            "backlog_flops": 0.0,
            "backlog_next_flops": s["backlog_flops"],
            "lyapunov": s["lyapunov"],
            "lyapunov_start": 0.0,
            "drift": s["drift"],
            "penalty": s["penalty"],
            "p2": s["p2"],
            "stale": {},
        }
        for s in sim.slots
    ]
    stats = {cv.id: {"counters": {"generated": plan.scenario.slots, "missed_slots": 0}} for cv in plan.cvs}
    return LiveResult(
        "greedy", "exp", plan.exports, "loopback", "", records, controller, [], stats, {}, {}, 0.0, 1.0, 0.5
    )


def test_summary_numbers_follow_the_records(plan, tmp_path):
    sim = simulate(plan, "greedy")
    rep = replay(plan, "greedy", [])
    live = fake_live(plan, sim, scale=1.1)
    s = report.method_summary(plan, live, sim, rep)
    n = plan.scenario.slots * plan.scenario.n_cvs
    assert (s["tasks_generated"], s["tasks_completed"], s["tasks_failed"]) == (n, n, 0)
    measured = np.mean([r["total_s"] for r in live.records])
    assert s["measured_mean_completion_s"] == pytest.approx(measured)
    assert s["simulated_mean_completion_s"] == pytest.approx(np.mean([t["completion_s"] for t in sim.tasks]))
    assert s["gap_pct"] == pytest.approx(10.0)  # every duration 10% longer
    for key in COMPONENTS:
        assert s["components_measured_s"][key] == pytest.approx(1.1 * s["components_simulated_s"][key])
    assert s["backlog"]["measured"]["mean_gflop"] == pytest.approx(s["backlog"]["simulated"]["mean_gflop"])
    assert s["link_emulation"] == "loopback"
    for r in live.records:  # the five parts of a record add up to its total
        assert sum(report.measured_components(r).values()) == pytest.approx(r["total_s"])
    plots = report.plot(plan, [s], {"greedy": live}, {"greedy": sim}, {"greedy": rep}, tmp_path)
    md, html = report.write_report(plan, [s], plots, tmp_path, link_note="x", broker="y", warnings=[], skipped={})
    text = md.read_text()
    assert f"{s['measured']['mean_s'] * 1e3:.1f}" in text and "+10.0%" in text
    assert all(p.is_file() and p.stat().st_size > 0 for p in plots) and "<table>" in html.read_text()


def test_faults_are_parsed():
    assert parse_faults(["broker-kill@3", "crash@5"]) == {"broker-kill": (3, 0), "crash": (5, 0)}
    assert parse_faults(["blackout@3:2"]) == {"blackout": (3, 2)}
    for bad in ("blackout@3", "blackout@0:2", "crash@5:1", "broker-kill@x"):
        with pytest.raises(SplitrtError, match="--fault"):
            parse_faults([bad])
    with pytest.raises(SplitrtError, match="--fault 'boom@1'"):
        parse_faults(["boom@1"])
