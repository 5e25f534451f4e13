"""The Lyapunov controller's books on measured data equal the shared math on the same numbers."""

from __future__ import annotations

import numpy as np
import pytest

from splitrt.edge_runtime.experiment.controller import ControllerSetup, LyapunovController
from splitrt.edge_runtime.formats.work import ModelWork
from splitrt.edge_runtime.sysmodel import lyapunov
from splitrt.edge_runtime.sysmodel.allocation import allocate_rsu

G = 1e9
WORK = {
    "a": ModelWork("a", np.array([0.0, 1.0, 3.0]) * G, np.array([3.0, 2.0, 0.0]) * G, np.array([3.0, 2.0, 0.0]) * G),
    "b": ModelWork("b", np.array([0.0, 2.0, 4.0]) * G, np.array([4.0, 2.0, 0.0]) * G, np.array([4.0, 2.0, 0.0]) * G),
}
SETUP = ControllerSetup(
    v=10.0,
    slot_s=0.5,
    slots=3,
    cvs={"cv0": {"model": "a", "flops_per_s": 2 * G}, "cv1": {"model": "b", "flops_per_s": 4 * G}},
    rsu={"name": "rsu", "capacity_flops_per_s": 20 * G, "types": ["a", "b"]},
    svs={"sv1": 5 * G},
)


def states(ctl, slot, q_loc, q_rsu, q_sv):
    for cv, q in zip(("cv0", "cv1"), q_loc, strict=True):
        ctl.on_message("vehicle_state", cv, {"slot": slot, "q_loc_flops": q})
    queues = {t: {"flops": q, "est_s": q / (20 * G)} for t, q in zip(("a", "b"), q_rsu, strict=True)}
    ctl.on_message("node_state", "rsu", {"slot": slot, "queues": queues})
    ctl.on_message("node_state", "sv1", {"slot": slot, "queues": {"fifo": {"flops": q_sv, "est_s": q_sv / (5 * G)}}})


def record(vehicle, model, slot, cut, node, total_s, outcome="remote"):
    return {
        "task_id": f"{vehicle}-{slot}",
        "vehicle_id": vehicle,
        "model": model,
        "slot": slot,
        "cut": cut,
        "node": node,
        "total_s": total_s,
        "outcome": outcome,
    }


def test_books_follow_the_shared_lyapunov_and_allocation_math():
    ctl = LyapunovController(SETUP, WORK)
    states(ctl, 0, [1 * G, 0.0], [3 * G, 1 * G], 2 * G)
    states(ctl, 1, [2 * G, 1 * G], [1 * G, 0.0], 0.0)
    ctl.add_records(
        [
            record("cv0", "a", 0, 1, 0, 0.4),  # 1 GFLOP local, 2 GFLOP to the RSU type a
            record("cv1", "b", 0, 1, 1, 0.6),  # 2 GFLOP local, 2 GFLOP to sv1
        ]
    )
    rec = ctl.record(0)
    q_now = [np.array([1, 0]) * G, np.array([3, 1]) * G, np.array([2]) * G]
    q_next = [np.array([2, 1]) * G, np.array([1, 0]) * G, np.array([0]) * G]
    arrivals = [np.array([1, 2]) * G, np.array([2, 0]) * G, np.array([2]) * G]
    f_k = allocate_rsu(q_now[1], arrivals[1], np.array([1, 0]), 20 * G, 0.5, 10.0)
    service = [np.array([2, 4]) * G * 0.5, f_k * 0.5, np.array([5]) * G * 0.5]
    assert rec["lyapunov_start"] == pytest.approx(lyapunov.lyapunov(q_now))
    assert rec["lyapunov"] == pytest.approx(lyapunov.lyapunov(q_next))
    assert rec["drift"] == pytest.approx(rec["lyapunov"] - rec["lyapunov_start"])
    assert rec["pressure"] == pytest.approx(lyapunov.queue_pressure(q_now, arrivals, service))
    assert rec["penalty"] == pytest.approx(10.0 * (0.4 + 0.6))
    assert rec["p2"] == pytest.approx(rec["pressure"] + rec["penalty"])
    assert rec["dpp"] == pytest.approx(rec["drift"] + rec["penalty"])
    np.testing.assert_allclose(list(rec["rsu_alloc_flops_per_s"].values()), f_k)
    assert rec["backlog_flops"] == pytest.approx(7 * G) and rec["backlog_next_flops"] == pytest.approx(4 * G)
    # seconds of work: CVs Q / f_loc, the nodes' own estimates
    assert rec["backlog_s"] == pytest.approx(1 / 2 + 4 / 20 + 2 / 5)
    assert (rec["tasks"], rec["tasks_done"], rec["mean_completion_s"]) == (2, 2, pytest.approx(0.5))
    assert rec["stale"] == {} and rec["final"]


def test_missing_states_fall_back_to_the_last_known_with_their_age():
    ctl = LyapunovController(SETUP, WORK)
    states(ctl, 0, [1 * G, 0.0], [0.0, 0.0], 0.0)
    states(ctl, 1, [2 * G, 0.0], [0.0, 0.0], 0.0)
    # slot 2: only cv0 reported (a broker outage lost the rest)
    ctl.on_message("vehicle_state", "cv0", {"slot": 2, "q_loc_flops": 3 * G})
    rec = ctl.record(1)
    assert rec["stale"] == {"cv1": 1, "rsu": 1, "sv1": 1}  # Q(2) of these came from slot 1
    assert rec["backlog_next_flops"] == pytest.approx(3 * G)
    never = LyapunovController(SETUP, WORK).record(0)
    assert never["stale"]["rsu"] == 2 and never["backlog_flops"] == 0.0  # nothing known at all


def test_online_records_are_published_and_counted_tasks_grow():
    sent = []
    ctl = LyapunovController(SETUP, WORK, publish=lambda kind, body: sent.append((kind, body)))
    states(ctl, 0, [0.0, 0.0], [0.0, 0.0], 0.0)
    states(ctl, 1, [0.0, 0.0], [0.0, 0.0], 0.0)
    ctl.on_message("task", "cv0", record("cv0", "a", 0, 2, None, 0.3, outcome="local"))
    online = ctl.emit(0)
    assert sent == [("controller", online)] and not online["final"]
    assert online["tasks"] == 1 and online["arrivals_flops"]["local"] == [3 * G, 0.0]  # fully local: whole model
    ctl.add_records([record("cv1", "b", 0, 0, 0, 0.2)])  # raw input to the RSU: no local work
    final = ctl.records()
    assert len(final) == 3 and final[0]["tasks"] == 2 and final[0]["arrivals_flops"]["rsu"] == [0.0, 4 * G]
