"""The hil report's fault windows: which tasks arrived before, during and after each window, with
what outcomes, from synthetic records and a faults.jsonl written by `FaultLog`."""

from __future__ import annotations

import json

import pytest

from splitrt.tools.hil.faults import FaultLog, read_windows
from splitrt.tools.hil.report import fault_rows, fault_summary

EPOCH = 1.0e9
SLOT_S = 0.5


def rec(slot: int, outcome: str, reason: str = "") -> dict:
    return {"task_id": f"cv0-{slot}", "slot": slot, "arrival_unix_s": EPOCH + slot * SLOT_S, "outcome": outcome,
            "reason": reason}  # fmt: skip


def write_window(path, kind, start_s, end_s, **detail):
    """A window's two lines in faults.jsonl as `FaultLog` writes them (start, then the end)."""
    w = {"kind": kind, "target": "cv0-rsu", "start_unix_s": start_s, "detail": detail}
    lines = [{"event": "fault_start", **w, "end_unix_s": None}, {"event": "fault", **w, "end_unix_s": end_s}]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))


def test_fault_table_splits_the_tasks_at_the_window(tmp_path):
    path = tmp_path / "faults.jsonl"
    # a blackout over slots 2 and 3: from just before slot 2's boundary to just before slot 4's
    write_window(path, "link_blackout", EPOCH + 2 * SLOT_S - 0.02, EPOCH + 4 * SLOT_S - 0.02, slot=2, end_slot=4)
    windows = read_windows(path)
    records = [rec(0, "remote"), rec(1, "remote"), rec(2, "fallback", "timeout: 10 s"),
               rec(3, "fallback", "timeout: 10 s"), rec(4, "remote"), rec(5, "local")]  # fmt: skip
    (f,) = fault_summary(windows, records, EPOCH, SLOT_S)
    assert (f["kind"], f["start_slot"], f["end_slot"]) == ("link_blackout", 2, 4)
    assert f["duration_s"] == pytest.approx(2 * SLOT_S)
    parts = f["tasks"]
    assert [parts[p]["n"] for p in ("before", "during", "after")] == [2, 2, 2]
    assert sum(parts[p]["n"] for p in parts) == len(records)  # every task in exactly one part
    assert parts["during"]["outcomes"] == {"remote": 0, "local": 0, "fallback": 2, "failed": 0}
    assert parts["during"]["reasons"] == {"fallback: timeout": 2}
    assert parts["after"]["outcomes"]["local"] == 1 and parts["after"]["reasons"] == {"local: ": 1}
    rows = fault_rows([{"method": "greedy", "faults": [f]}])
    assert rows[1][:5] == ["greedy", "link_blackout", "cv0-rsu", "2..3", "1.00"]
    assert rows[1][6] == "2 (fallback 2) [fallback: timeout x2]"
    assert rows[1][5] == "2 (remote 2)"


def test_slots_from_the_epoch_and_open_windows(tmp_path):
    path = tmp_path / "faults.jsonl"
    FaultLog(path).start("broker_killed", "broker")  # never ended: the run died inside it
    (w,) = read_windows(path)
    w.start_unix_s = EPOCH + 3 * SLOT_S
    records = [rec(s, "remote") for s in range(6)]
    (f,) = fault_summary([w], records, EPOCH, SLOT_S)
    assert f["start_slot"] == 3 and f["end_slot"] is None and f["duration_s"] is None
    assert [f["tasks"][p]["n"] for p in ("before", "during", "after")] == [3, 3, 0]
    assert fault_rows([{"method": "m", "faults": [f]}])[1][3:5] == ["3..", "open"]
    # no epoch (a deployment's files) and no slots in the window: the slots are unknown
    (g,) = fault_summary([w], records, float("nan"), SLOT_S)
    assert g["start_slot"] is None and fault_rows([{"method": "m", "faults": [g]}])[1][3] == "-"


def test_run_files_carry_their_fault_windows(tmp_path):
    """`load_result` (what --report-only reads) picks up <method>/faults.jsonl, and names a bad one."""
    from splitrt.edge_runtime.errors import SplitrtError
    from splitrt.edge_runtime.formats.records import DURATION_KEYS
    from splitrt.tools.hil.runner import load_result

    mdir = tmp_path / "greedy"
    mdir.mkdir()
    records = [{**dict.fromkeys(DURATION_KEYS, 0.0), **rec(s, "remote"), "vehicle_id": "cv0", "total_s": 0.1}
               for s in range(4)]  # fmt: skip
    (mdir / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert load_result(mdir, "greedy", "tc").faults == []
    write_window(mdir / "faults.jsonl", "broker_killed", EPOCH + 1.9 * SLOT_S, EPOCH + 9 * SLOT_S, slot=2, end_slot=4)
    (w,) = load_result(mdir, "greedy", "tc").faults
    assert (w.kind, w.detail["slot"], w.end_unix_s) == ("broker_killed", 2, EPOCH + 9 * SLOT_S)
    (mdir / "faults.jsonl").write_text('{"event": "fault"}\n')
    with pytest.raises(SplitrtError, match="cannot read fault windows .*faults.jsonl"):
        load_result(mdir, "greedy", "tc")
