"""Calibration (tools/hil/calibrate.py): fitting the as-run overheads back from records the as-run
model itself produced with known overheads recovers them; the file it writes is what the model reads."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from splitrt.edge_runtime.errors import SplitrtError
from splitrt.policy.methods.registry import make_method
from splitrt.policy.sim import scenario as config
from splitrt.policy.sim.asrun import AsRunEnv, Overheads, load_calibration
from splitrt.tools.hil.calibrate import fit_overheads, shaped_uplink_s, write_calibration
from splitrt.tools.hil.plan import make_plan
from splitrt.tools.hil.runner import LiveResult

EPOCH = 1.8e9
TRUE = Overheads(
    decide_s=0.004,
    local_handoff_s=0.0015,
    encode_s=0.0002,
    encode_s_per_byte=2e-9,
    link_s=0.003,
    link_s_per_byte=4e-9,
    rsu_handoff_s=0.0008,
    sv_handoff_s=0.0006,
    rsu_other_s=0.0003,
    sv_other_s=0.0002,
    decode_s=0.0001,
    decide_by={"random": 0.004},
)


def records_of(env: AsRunEnv, plan) -> list[dict]:
    """Task records (the fields calibration reads) of every task of ``env``'s finished episode."""
    out = []
    for tk in env.finish()[0]:
        parts = tk.components(env.overheads)
        idle = math.isclose(tk.local_start, tk.decided + env.overheads.local_handoff_s, abs_tol=1e-12)
        out.append(
            {
                "vehicle_id": plan.cvs[tk.cv].id,
                "slot": tk.slot,
                "decider": "random",
                "cut": tk.cut,
                "node": tk.node,
                "bytes": tk.bytes,
                "outcome": "local" if tk.node is None else "remote",
                "arrival_unix_s": EPOCH + tk.arrival,
                "total_s": tk.completion_s,
                "q_loc_flops": 0.0 if idle else 1.0,
                "remote_backlog_tasks": None if tk.node is None else (0 if tk.backlog_at_arrival == 0 else 1),
                **parts,
            }
        )
    return out


def live(records: list[dict], epoch: float) -> LiveResult:
    return LiveResult("random", "x", Path("."), "tc", "", records, [], [], {}, {}, {}, epoch, 0.0, 0.0)


@pytest.fixture(scope="module")
def synthetic(shipped_exports, tmp_path_factory):
    plan = make_plan(config.demo(slots=30), 2, shipped_exports, tmp_path_factory.mktemp("p") / "profiles")
    env = AsRunEnv(plan.scenario, 1, seed=plan.seed, overheads=TRUE)
    method = make_method("random")
    method.reset(env, 0)
    obs, state, mask = env.reset()
    for _ in range(plan.scenario.slots):
        obs, state, mask, *_ = env.step(method.act(obs, state, mask, env.view()))
    return plan, records_of(env, plan)


@pytest.mark.parametrize("epoch_known", [True, False])
def test_fit_recovers_the_overheads_the_records_were_made_with(synthetic, epoch_known):
    plan, records = synthetic
    assert {r["outcome"] for r in records} == {"local", "remote"}
    fitted, detail = fit_overheads(plan, [live(records, EPOCH if epoch_known else math.nan)])
    assert detail["tasks"] == len(records)
    for name in ("decide_s", "local_handoff_s", "rsu_handoff_s", "sv_handoff_s", "rsu_other_s", "sv_other_s"):
        assert getattr(fitted, name) == pytest.approx(getattr(TRUE, name), rel=1e-6), name
    assert fitted.decode_s == pytest.approx(TRUE.decode_s, rel=1e-6)
    assert fitted.decide_by == pytest.approx(TRUE.decide_by)
    # the two linear fits: exact, the uplink recomputed from the plan's tc rates
    for name in ("encode_s", "encode_s_per_byte", "link_s", "link_s_per_byte"):
        assert getattr(fitted, name) == pytest.approx(getattr(TRUE, name), rel=1e-5, abs=1e-12), name


def test_written_file_is_what_the_model_reads(synthetic, tmp_path):
    plan, records = synthetic
    ov, path = write_calibration(tmp_path / "cal" / "calibration.json", plan, [live(records, EPOCH)], "test")
    assert load_calibration(path) == ov
    with pytest.raises(SplitrtError, match="no completed task records"):
        fit_overheads(plan, [live([dict(records[0], outcome="failed")], EPOCH)])


def test_shaped_uplink_drains_across_slot_boundaries(synthetic):
    plan, _ = synthetic
    tau = plan.scenario.slot_s
    r0, r1 = plan.rates_bps[0, 0, 0], plan.rates_bps[1, 0, 0]
    half = 0.5 * tau * r0 / 8  # bytes that cross in the last half of slot 0
    extra = 1000.0
    took = shaped_uplink_s(plan, 0, 0, 0.5 * tau, half + extra)
    assert took == pytest.approx(0.5 * tau + 8 * extra / r1, rel=1e-9)
    assert np.isfinite(shaped_uplink_s(plan, 0, 0, 1e6, 1e6))  # beyond the last slot: its rate goes on
