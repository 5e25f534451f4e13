"""The vehicle in-process against in-process edge nodes: outcomes, fallbacks, records, observations."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from splitrt.edge_runtime.compute.segments import SegmentRunner
from splitrt.edge_runtime.decide.deciders import DecisionContext
from splitrt.edge_runtime.errors import SplitrtError
from splitrt.edge_runtime.formats.records import DURATION_KEYS, ListSink
from splitrt.edge_runtime.link.wire import encode_tensor, pack, tensor_header
from splitrt.edge_runtime.sysmodel import observation as obs_layout
from splitrt.edge_runtime.vehicle.client import Vehicle, VehicleConfig, arrival_times, parse_arrivals
from splitrt.models.segmenter import sample_input
from tests.edge_runtime.nodes import GatedRunner, served, wait_until

DEAD = "tcp://127.0.0.1:9"  # discard port: nothing listens there


def run_vehicle(manifest, edges, **over):
    over.setdefault("slot_s", 0.02)
    over.setdefault("slots", 4)
    over.setdefault("verify", True)
    over.setdefault("connect_s", 2.0)
    decider = over.pop("decider_obj", None)
    sink = ListSink()
    vehicle = Vehicle(VehicleConfig(edges=tuple(edges), **over), manifest, sinks=[sink], decider=decider)
    records = vehicle.run()
    assert sink == records  # the sink saw every record, once, in completion order
    return vehicle, records


def check_records(records, n_tasks, vehicle_id="v0"):
    """Exactly one record per generated task, and durations that add up to the total."""
    assert sorted(r["index"] for r in records) == list(range(n_tasks))
    assert len({r["task_id"] for r in records}) == n_tasks
    for r in records:
        assert r["vehicle_id"] == vehicle_id
        parts = sum(r[k] for k in DURATION_KEYS)
        assert parts == pytest.approx(r["total_s"], abs=1e-6), r
        assert all(r[k] >= -1e-9 for k in DURATION_KEYS if k != "transfer_s"), r
        assert r["completion_unix_s"] - r["arrival_unix_s"] == pytest.approx(r["total_s"], abs=1e-6)


def test_arrivals():
    assert arrival_times("per-slot", 3, 0.5, np.random.default_rng(0)) == [(0.0, 0), (0.5, 1), (1.0, 2)]
    times = arrival_times("poisson:2", 2000, 1.0, np.random.default_rng(0))
    assert len(times) == pytest.approx(4000, rel=0.05)  # mean 2 per slot
    assert all(int(t // 1.0) == s and 0 <= t < 2000 for t, s in times)
    assert parse_arrivals("poisson:0.5") == ("poisson", 0.5)
    for bad in ("poisson:0", "poisson:x", "uniform", "poisson"):
        with pytest.raises(SplitrtError, match="--arrivals must be per-slot or poisson:RATE"):
            parse_arrivals(bad)


def test_local_decider_needs_no_node(tiny):
    _, records = run_vehicle(tiny["res"], [DEAD], decider="local", connect_s=0.05)
    check_records(records, 4)
    assert {(r["outcome"], r["cut"], r["node"], r["bytes"], r["verified"]) for r in records} == {
        ("local", tiny["res"].n_segments, None, 0, True)
    }


def test_unreachable_node_falls_back_to_local(tiny):
    m = tiny["res"]
    _, records = run_vehicle(m, [DEAD], decider="fixed:2", connect_s=0.05)
    check_records(records, 4)
    assert {(r["outcome"], r["reason"], r["verified"]) for r in records} == {("fallback", "unreachable", True)}
    assert all(r["bytes"] == m.cuts[2].bytes for r in records)


def test_remote_results_at_every_cut_equal_the_whole_model(tiny, node_factory):
    m = tiny["res"]
    node, _ = node_factory({"res": served(m)}, role="sv")
    for cut in range(m.n_segments):
        _, records = run_vehicle(m, [node.endpoint], decider=f"fixed:{cut}", slots=2)
        check_records(records, 2)
        assert {(r["outcome"], r["cut"], r["node"], r["verified"]) for r in records} == {("remote", cut, 0, True)}
        assert all(r["node_name"] == node.server.name and r["remote_compute_s"] > 0 for r in records)
        assert all(r["remote_backlog_tasks"] is not None for r in records)


def test_lossy_encoding_is_reported_not_verified(tiny, node_factory):
    m = tiny["chain"]
    node, _ = node_factory({"chain": served(m)})
    _, records = run_vehicle(m, [node.endpoint], decider="fixed:1", encoding="int8")
    check_records(records, 4)
    for r in records:
        assert r["outcome"] == "remote" and r["encoding"] == "int8" and r["verified"] is None
        assert r["bytes"] == m.cuts[1].bytes // 4 and 0 < r["max_abs_err"] < 1.0


def test_timeout_busy_and_error_replies_fall_back(tiny, node_factory):
    m = tiny["chain"]
    gated = GatedRunner(m)
    node, _ = node_factory({"chain": served(m, gated)}, role="sv", queue_limit=1)
    try:
        # Task 0 is accepted and held (timeout); tasks 1-3 find the queue full (busy).
        _, records = run_vehicle(m, [node.endpoint], decider="offload", slots=4, timeout_s=0.5)
    finally:
        gated.gate.set()
    check_records(records, 4)
    reasons = [r["reason"] for r in sorted(records, key=lambda r: r["index"])]
    assert reasons == ["timeout", "busy", "busy", "busy"]
    assert all(r["outcome"] == "fallback" and r["verified"] for r in records)
    timed_out = next(r for r in records if r["reason"] == "timeout")
    assert timed_out["transfer_s"] >= 0.5  # the wait before giving up is charged to the link
    # Another export of the same model id: the node refuses it by digest, the vehicle falls back.
    _, records = run_vehicle(tiny["chain_other_export"], [node.endpoint], decider="fixed:1", slots=2)
    check_records(records, 2)
    assert all(r["outcome"] == "fallback" and r["reason"].startswith("error:digest_mismatch") for r in records)


class Recorder:
    """A decider that keeps every context it saw and offloads to the SV."""

    name = "recorder"

    def __init__(self) -> None:
        self.seen: list[DecisionContext] = []

    def decide(self, ctx: DecisionContext) -> tuple[int, int]:
        self.seen.append(ctx)
        return ctx.n_cuts - 1, 0


def test_decision_context_carries_the_nodes_backlogs(tiny, node_factory):
    """Node 1 (an SV) holds two queued tasks of another vehicle: the vehicle's eq (53)
    observation shows that backlog at the SV's index, and 0 for the idle RSU (node 0)."""
    m = tiny["chain"]
    rsu, _ = node_factory({"chain": served(m)}, role="rsu")
    gated = GatedRunner(m)
    sv, other = node_factory({"chain": served(m, gated)}, role="sv")
    x1 = SegmentRunner(m).run(sample_input(m.input), 0, 1)
    enc = encode_tensor(x1, "fp32")
    for i in range(2):
        header = tensor_header("task", enc, id=f"o{i}", vehicle="other", model="chain", digest=m.digest, cut=1)
        other.send(pack(header, enc.payload))
    wait_until(lambda: sv.server.snapshot()["queues"]["fifo"]["tasks"] == 2)
    recorder = Recorder()
    try:
        _, records = run_vehicle(m, [rsu.endpoint, sv.endpoint], decider_obj=recorder, slots=5, slot_s=0.05)
    finally:
        gated.gate.set()
    check_records(records, 5)
    j = 2
    last = recorder.seen[-1]
    assert last.observation.shape == (obs_layout.obs_size(j),)
    assert last.node_ok.tolist() == [True, True]
    assert last.observation[obs_layout.Q_RSU] == 0.0
    assert last.observation[obs_layout.sv_queue_slice(j)].tolist() == [2.0 * m.cuts[1].flops_after]
    assert last.model == "chain" and last.slot == 4
    assert records[-1]["observation"] == last.observation.tolist()


def test_stop_finishes_every_open_task(tiny, node_factory):
    m = tiny["chain"]
    gated = GatedRunner(m)
    node, _ = node_factory({"chain": served(m, gated)}, role="sv")
    vehicle = Vehicle(
        VehicleConfig(edges=(node.endpoint,), decider="offload", slots=100, slot_s=0.01, timeout_s=60, verify=True),
        m,
    )
    timer = threading.Timer(0.3, vehicle.stop)
    timer.start()
    try:
        records = vehicle.run()
    finally:
        timer.cancel()
        gated.gate.set()
    generated = vehicle.counters["generated"]
    assert 0 < generated < 100
    check_records(records, generated)
    assert {r["reason"] for r in records} == {"shutdown"} and all(r["verified"] for r in records)


def test_config_errors_name_the_flag(tiny):
    with pytest.raises(SplitrtError, match="at least one --edge"):
        VehicleConfig(edges=())
    with pytest.raises(SplitrtError, match="--encoding must be one of"):
        VehicleConfig(edges=(DEAD,), encoding="bf16")
    with pytest.raises(SplitrtError, match="--timeout-s"):
        VehicleConfig(edges=(DEAD,), timeout_s=0)
    with pytest.raises(SplitrtError, match="--decider 'fixed:99'"):
        Vehicle(VehicleConfig(edges=(DEAD,), decider="fixed:99"), tiny["chain"])


class Broken:
    name = "broken"

    def __init__(self) -> None:
        self.calls = 0

    def decide(self, ctx: DecisionContext) -> tuple[int, int]:
        self.calls += 1
        if self.calls % 2:
            raise RuntimeError("policy blew up")
        return 99, 0


def test_a_failing_decider_never_loses_a_task(tiny):
    m = tiny["chain"]
    _, records = run_vehicle(m, [DEAD], decider_obj=Broken(), connect_s=0.05)
    check_records(records, 4)
    reasons = [r["reason"] for r in sorted(records, key=lambda r: r["index"])]
    assert reasons[0] == reasons[2] == "decider: RuntimeError: policy blew up"
    assert reasons[1].startswith("decider: ValueError: (cut 99, node 0) is outside cuts 0..")
    assert {(r["outcome"], r["cut"], r["verified"]) for r in records} == {("local", m.n_segments, True)}


# ---- live-experiment hooks (splitrt hil) ------------------------------------------------------


def test_epoch_trace_work_and_slot_hooks(tiny, node_factory):
    """With a shared epoch every task arrives at epoch + slot x tau; the trace's positions,
    rates and SVs in range reach the decider; queues count in the work table's unit; every slot
    boundary 0..T reaches the hooks with the local backlog."""
    import time

    from splitrt.edge_runtime.formats.trace import LinkTrace
    from splitrt.edge_runtime.formats.work import ModelWork

    m = tiny["chain"]
    rsu, _ = node_factory({"chain": served(m)}, role="rsu")
    sv, _ = node_factory({"chain": served(m)}, role="sv")
    slots, tau = 4, 0.05
    trace = LinkTrace(
        vehicle="v0",
        slot_s=tau,
        pos_m=np.array([-10.0, 0.0, 10.0, 20.0]),
        sv_pos_m=np.array([[5.0], [6.0], [7.0], [8.0]]),
        rate_bps=np.array([[1e8, 2e8]] * slots),
        node_ok=np.array([[True, False], [True, True], [True, False], [True, True]]),
    )
    work = ModelWork("chain", np.arange(m.n_cuts) * 7.0, np.zeros(m.n_cuts), np.zeros(m.n_cuts))
    recorder = Recorder()
    ticks = []
    epoch = time.time() + 0.3
    vehicle = Vehicle(
        VehicleConfig(edges=(rsu.endpoint, sv.endpoint), slots=slots, slot_s=tau, connect_s=2.0),
        m,
        decider=recorder,
        start_at=epoch,
        trace=trace,
        work=work,
        on_slot=[ticks.append],
    )
    records = vehicle.run()
    check_records(records, slots)
    for r in records:
        assert r["arrival_unix_s"] == pytest.approx(epoch + r["slot"] * tau, abs=0.01)
        assert len(r["backlog_age_s"]) == 2
    for ctx in recorder.seen:
        assert ctx.observation[obs_layout.own_position_index(2)] == trace.pos_m[ctx.slot]
        assert ctx.observation[obs_layout.sv_position_slice(2)].tolist() == trace.sv_pos_m[ctx.slot].tolist()
        assert ctx.node_ok.tolist() == trace.node_ok[ctx.slot].tolist()  # an SV out of range is not offered
        assert ctx.rate_bps.tolist() == trace.rate_bps[ctx.slot].tolist()
        np.testing.assert_array_equal(ctx.flops_before, work.local_flops)
    assert [t["slot"] for t in ticks] == list(range(slots + 1))  # the end boundary too
    assert all(t["pos_m"] == trace.pos_m[min(t["slot"], slots - 1)] for t in ticks)
    assert ticks[-1]["generated"] == slots and vehicle.counters["missed_slots"] == sum(t["missed"] for t in ticks)


class Sleepy:
    """Blocks the vehicle's loop in its first decision, across the next slot boundaries."""

    name = "sleepy"

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.calls = 0

    def decide(self, ctx: DecisionContext) -> tuple[int, int]:
        import time

        self.calls += 1
        if self.calls == 1:
            time.sleep(self.seconds)
        return ctx.n_cuts - 1, 0


def test_a_late_loop_records_missed_slot_boundaries(tiny):
    ticks = []
    vehicle = Vehicle(
        VehicleConfig(edges=(DEAD,), slots=5, slot_s=0.05, connect_s=0.05, late_tolerance_s=0.01),
        tiny["chain"],
        decider=Sleepy(0.16),  # blocks slots 1..3's boundaries
        on_slot=[ticks.append],
    )
    records = vehicle.run()
    check_records(records, 5)
    missed = [t["slot"] for t in ticks if t["missed"]]
    assert {1, 2, 3} <= set(missed) and vehicle.counters["missed_slots"] == len(missed)
    assert all(t["late_s"] > 0.01 for t in ticks if t["missed"])


def test_node_states_from_telemetry_enter_the_observation(tiny):
    m = tiny["chain"]
    recorder = Recorder()
    vehicle = Vehicle(VehicleConfig(edges=(DEAD, DEAD), slots=2, slot_s=0.02, connect_s=0.01), m, decider=recorder)
    vehicle.observe_node_state(1, {"role": "sv", "queues": {"fifo": {"flops": 5e9}}})
    records = vehicle.run()
    check_records(records, 2)
    assert recorder.seen[0].observation[obs_layout.sv_queue_slice(2)].tolist() == [5e9]
    assert records[0]["backlog_age_s"][0] is None and records[0]["backlog_age_s"][1] >= 0
