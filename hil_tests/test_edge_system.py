"""RSU + service vehicle + three vehicles with different DNNs, as real processes on loopback TCP."""

from __future__ import annotations

import signal

import numpy as np
import pytest

from hil_tests.conftest import read_records, request_state
from splitrt.edge_runtime.formats.records import DURATION_KEYS
from splitrt.edge_runtime.sysmodel.allocation import allocate_rsu


def check_records(records: list[dict], n_tasks: int) -> None:
    """Every generated task completed exactly once, matched the whole model, and its duration
    components add up to its total."""
    assert sorted(r["index"] for r in records) == list(range(n_tasks))
    assert len({r["task_id"] for r in records}) == n_tasks
    for r in records:
        assert r["outcome"] in ("remote", "local", "fallback"), r
        assert r["verified"] is True, r
        assert sum(r[k] for k in DURATION_KEYS) == pytest.approx(r["total_s"], abs=1e-6), r


def check_allocation(state: dict) -> None:
    """The allocation a node reports is allocate_rsu of the queues it reports (one implementation)."""
    alloc = state["allocation"]
    names = list(alloc["q_flops"])
    f = allocate_rsu(
        np.array([alloc["q_flops"][k] for k in names]),
        np.array([alloc["w_flops"][k] for k in names]),
        np.array([alloc["n_tasks"][k] for k in names]),
        alloc["capacity_flops_per_s"],
        alloc["tau_s"],
        alloc["v"],
    )
    assert f.tolist() == [alloc["f_flops_per_s"][k] for k in names]
    assert sum(alloc["share"].values()) == pytest.approx(1.0)


@pytest.mark.timeout(600)
def test_rsu_sv_and_three_vehicles(procs, small_models):
    dirs = list(small_models.values())
    rsu, rsu_ep = procs.server("rsu", dirs, "--role", "rsu", "--slot-s", "0.25")
    sv, sv_ep = procs.server("sv", dirs, "--role", "sv")
    slots = 8
    common = ["--slots", str(slots), "--slot-s", "0.25", "--timeout-s", "60"]
    plan = {
        "va": ("resnet18", "fixed:6@0"),  # middle of ResNet18, to the RSU
        "vb": ("alexnet", "fixed:5@1"),  # AlexNet after its 3rd conv block, to the SV
        "vc": ("mobilenet_v2", "greedy"),  # the paper's greedy rule over both nodes
    }
    vehicles = {
        name: procs.vehicle(name, small_models[model], [rsu_ep, sv_ep], "--decider", decider, *common)
        for name, (model, decider) in plan.items()
    }
    records = {}
    for name, (proc, out) in vehicles.items():
        assert proc.wait(300) == 0, proc.stderr()[-3000:]
        records[name] = read_records(out)
        check_records(records[name], slots)
        assert f"verify: {slots} of {slots} outputs match the whole model" in proc.stdout()
    # Fixed decisions to live nodes are served remotely, on the node they named.
    assert {(r["outcome"], r["cut"], r["node"], r["node_name"]) for r in records["va"]} == {("remote", 6, 0, "rsu")}
    assert {(r["outcome"], r["cut"], r["node"], r["node_name"]) for r in records["vb"]} == {("remote", 5, 1, "sv")}
    assert {r["outcome"] for r in records["vc"]} == {"remote"}
    # Conservation: each node completed exactly the tasks the vehicles got back from it.
    all_records = [r for rs in records.values() for r in rs]
    for node, endpoint in ((0, rsu_ep), (1, sv_ep)):
        state = request_state(endpoint)
        served_here = [r for r in all_records if r["outcome"] == "remote" and r["node"] == node]
        assert state["counters"]["completed"] == len(served_here)
        by_model = {m: sum(r["model"] == m for r in served_here) for m in small_models}
        assert state["counters"]["completed_by_model"] == by_model
        assert state["counters"]["errors"] == 0 and state["counters"]["failed"] == 0
        assert all(q["tasks"] == 0 for q in state["queues"].values())
        if node == 0:  # the RSU's shares: its reported allocation is allocate_rsu of its queues
            check_allocation(state)
            served, entitled = state["counters"]["served_s"], state["counters"]["entitled_s"]
            assert sum(served.values()) == pytest.approx(sum(entitled.values()), rel=1e-6)
    # Clean shutdown on SIGTERM.
    for proc in (rsu, sv):
        proc.signal(signal.SIGTERM)
        assert proc.wait(60) == 0, proc.stderr()[-2000:]
        assert "stopped:" in proc.stderr()


@pytest.mark.timeout(600)
def test_rsu_shares_follow_the_allocation_under_load(procs, small_models):
    """Three vehicles fully offload at more than the RSU can serve; the RSU's worker time per DNN
    type matches the KKT shares (GPS reference over the same backlog), within 10%."""
    dirs = list(small_models.values())
    rsu, rsu_ep = procs.server("rsu", dirs, "--role", "rsu", "--slot-s", "0.5", "--queue-limit", "1000")
    load = ["--decider", "offload", "--arrivals", "poisson:6", "--slots", "8", "--slot-s", "0.5", "--timeout-s", "120"]
    vehicles = {
        model: procs.vehicle(f"v_{model}", path, [rsu_ep], *load, "--seed", str(i))
        for i, (model, path) in enumerate(small_models.items())
    }
    for proc, out in vehicles.values():
        assert proc.wait(300) == 0, proc.stderr()[-3000:]
        records = read_records(out)
        check_records(records, len(records))
        assert {r["outcome"] for r in records} == {"remote"}
    state = request_state(rsu_ep)
    served = state["counters"]["served_s"]
    entitled = state["counters"]["entitled_s"]
    total = sum(served.values())
    print("served_s", served, "entitled_s", entitled)
    assert total == pytest.approx(sum(entitled.values()), rel=1e-6)
    for model in small_models:
        assert abs(served[model] - entitled[model]) <= 0.10 * entitled[model], (model, served, entitled)
    # The shares were not trivially equal: the allocation differentiated the types.
    fractions = np.array([entitled[m] / total for m in small_models])
    assert np.ptp(fractions) > 0.05, fractions
    check_allocation(state)
    assert state["counters"]["allocations"] > state["slot"]  # every slot, and at every arrival
    rsu.signal(signal.SIGTERM)
    assert rsu.wait(60) == 0
