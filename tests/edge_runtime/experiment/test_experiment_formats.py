"""Work tables, link traces and the slot clock: round trips, checks, and the beacon's lag."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from splitrt.edge_runtime.errors import SplitrtError
from splitrt.edge_runtime.experiment.clock import BEACON, BeaconWaiter, SlotClock, parse_start_at
from splitrt.edge_runtime.formats.trace import LinkTrace
from splitrt.edge_runtime.formats.work import WorkTable


def test_work_table_round_trip_and_checks(tiny, tmp_path):
    m = tiny["chain"]
    n = m.n_cuts
    row = {
        "manifest_sha256": m.digest,
        "local_flops": list(range(n)),
        "rsu_flops": [2.0 * (n - c) for c in range(n)],
        "sv_flops": [3.0] * n,
    }
    path = WorkTable("effective_flops", "test", {m.model: row}).write(tmp_path / "work.json")
    work = WorkTable.load(path).for_model(m)
    np.testing.assert_array_equal(work.local_flops, np.arange(n))
    np.testing.assert_array_equal(work.edge_flops("rsu"), [2.0 * (n - c) for c in range(n)])
    np.testing.assert_array_equal(work.edge_flops("sv"), [3.0] * n)
    with pytest.raises(SplitrtError, match="was made for manifest"):
        WorkTable.load(path).for_model(tiny["chain_other_export"])
    with pytest.raises(SplitrtError, match="has no row for 'res'"):
        WorkTable.load(path).for_model(tiny["res"])
    short = WorkTable("flops", "test", {m.model: {**row, "sv_flops": [1.0]}})
    with pytest.raises(SplitrtError, match=f"sv_flops must hold {n} finite values"):
        short.for_model(m)
    with pytest.raises(SplitrtError, match="unit must be one of"):
        WorkTable("seconds", "", {})
    (tmp_path / "bad.json").write_text(json.dumps({"format_version": 9}))
    with pytest.raises(SplitrtError, match="format_version must be 1"):
        WorkTable.load(tmp_path / "bad.json")


def test_trace_round_trip_and_clamping(tmp_path):
    rng = np.random.default_rng(0)
    t, j = 5, 3
    trace = LinkTrace(
        vehicle="cv0",
        slot_s=0.5,
        pos_m=rng.uniform(-500, 500, t),
        sv_pos_m=rng.uniform(-500, 500, (t, j - 1)),
        rate_bps=rng.uniform(1e6, 2e8, (t, j)),
        node_ok=rng.random((t, j)) < 0.5,
    )
    back = LinkTrace.load(trace.write(tmp_path / "trace.json"))
    for key in ("pos_m", "sv_pos_m", "rate_bps", "node_ok"):
        np.testing.assert_array_equal(getattr(back, key), getattr(trace, key))
    assert (back.slots, back.n_nodes, back.vehicle) == (t, j, "cv0")
    assert back.at(2).pos_m == trace.pos_m[2]
    np.testing.assert_array_equal(back.at(99).rate_bps, trace.rate_bps[-1])  # beyond the end: the last row
    np.testing.assert_array_equal(back.at(-1).node_ok, trace.node_ok[0])
    with pytest.raises(SplitrtError, match="do not fit T slots x J nodes"):
        LinkTrace("cv0", 0.5, trace.pos_m, trace.sv_pos_m, trace.rate_bps[:, :2], trace.node_ok)
    with pytest.raises(SplitrtError, match="positive number of bit/s"):
        LinkTrace("cv0", 0.5, trace.pos_m, trace.sv_pos_m, -trace.rate_bps, trace.node_ok)


def test_slot_clock_and_start_at():
    clock = SlotClock(1000.0, 0.5)
    assert clock.slot_start_unix_s(4) == 1002.0
    assert clock.slot_at(1002.49) == 4 and clock.slot_at(999.9) == -1
    beacon = clock.beacon(3)
    assert beacon == {"slot": 3, "epoch_unix_s": 1000.0, "slot_s": 0.5, "slot_start_unix_s": 1001.5}
    assert parse_start_at(None) is None and parse_start_at("beacon") == BEACON
    assert parse_start_at("1234.5") == 1234.5
    assert abs(parse_start_at("now+2") - (time.time() + 2)) < 1.0
    with pytest.raises(SplitrtError, match="--start-at must be"):
        parse_start_at("soon")
    with pytest.raises(SplitrtError, match="slot length must be positive"):
        SlotClock(0.0, 0.0)


def test_beacon_waiter_takes_the_first_epoch_and_ignores_old_retained_beacons():
    waiter = BeaconWaiter()
    with pytest.raises(SplitrtError, match="no slot beacon within"):
        waiter.wait(0.01)
    now = time.time()
    waiter.on_beacon({"garbage": 1})  # not a beacon: ignored
    waiter.on_beacon(SlotClock(now - 100.0, 1.0).beacon(0))  # a retained beacon from long ago
    assert waiter.wait(0.01).epoch_unix_s == now - 100.0
    assert waiter.lags_s == []  # 100 s old: says nothing about the clock
    fresh = SlotClock(now - 100.0, 1.0).beacon(100)  # the current slot, announced just now
    waiter.on_beacon(fresh)
    assert len(waiter.lags_s) == 1 and 0 <= waiter.lags_s[0] < 1.0
    assert waiter.clock.epoch_unix_s == now - 100.0  # the first epoch stays
