"""The vehicle's write-ahead task journal: recovery after a kill, repair of the records file, accounting."""

from __future__ import annotations

import json

import pytest

from splitrt.edge_runtime.errors import SplitrtError
from splitrt.edge_runtime.formats.records import JsonlSink, format_summary, read_jsonl, summarize
from splitrt.edge_runtime.vehicle.client import Vehicle, VehicleConfig
from splitrt.edge_runtime.vehicle.journal import RESTART_REASON, TaskJournal, account

DEAD = "tcp://127.0.0.1:9"


def run(manifest, journal, out, **over):
    config = VehicleConfig(edges=(DEAD,), decider="local", slots=3, slot_s=0.01, connect_s=0.05, **over)
    sink = JsonlSink(out)
    try:
        return Vehicle(config, manifest, sinks=[sink], journal=journal).run()
    finally:
        sink.close()


def generate(journal, index, decided=True):
    task_id = f"v0-{index}"
    journal.generated(task_id=task_id, index=index, slot=index, arrival_unix_s=1000.0 + index, model="res")
    if decided:
        journal.decided(task_id=task_id, cut=2, node=0, edge=DEAD, encoding="fp32")
    return task_id


def test_a_killed_run_is_recovered_exactly_once(tmp_path, tiny):
    path, out = tmp_path / "v0.journal", tmp_path / "v0.jsonl"
    records = run(tiny["res"], TaskJournal.open(path, "v0", records_path=out), out)  # a normal run: 3 tasks
    # What a SIGKILL leaves: two tasks generated (one never decided), a record that reached the
    # journal but not --out, and a torn half line at the end of --out.
    journal = TaskJournal.open(path, "v0", records_path=out)
    assert (journal.next_index, journal.recovered, journal.repaired) == (3, [], 0)
    generate(journal, 3)
    generate(journal, 4, decided=False)
    done = dict(records[0], task_id="v0-5", index=5)
    generate(journal, 5)
    journal.record(done)
    journal.close()
    with out.open("a") as f:
        f.write('{"task_id": "v0-5", "outc')
    with path.open("a") as f:
        f.write('{"j": "generated", "task_id": "v0-6"')  # died inside this write: v0-6 never existed

    again = TaskJournal.open(path, "v0", records_path=out)
    assert again.next_index == 6
    assert again.repaired == 1  # v0-5, from the journal into --out
    assert [(r["task_id"], r["outcome"], r["reason"]) for r in again.recovered] == [
        ("v0-3", "failed", RESTART_REASON),
        ("v0-4", "failed", RESTART_REASON),
    ]
    assert (again.recovered[0]["cut"], again.recovered[1]["cut"]) == (2, None)  # v0-4 died before deciding
    assert set(again.recovered[0]) == set(records[0])  # same keys as a vehicle's own record
    # The new run hands the recovered records to its sinks and continues the numbering.
    sink = JsonlSink(out)
    for r in again.recovered:
        sink(r)
    sink.close()
    new = run(tiny["res"], again, out)
    again.close()
    assert [r["index"] for r in new] == [6, 7, 8]
    all_records = read_jsonl(out)  # the torn line is gone, every line parses
    acc = account(path, all_records)
    assert acc == {
        "generated": 9,
        "completed": 7,
        "failed": 2,
        "by_outcome": {"local": 7, "failed": 2},
        "failed_by_reason": {RESTART_REASON: 2},
        "duplicates": 0,
        "missing": 0,
        "unknown": 0,
    }
    # A third start finds nothing to recover: nothing is ever counted twice.
    third = TaskJournal.open(path, "v0", records_path=out)
    assert (third.recovered, third.repaired, third.next_index) == ([], 0, 9)
    third.close()
    assert "   -     - " in format_summary(summarize(all_records))  # the undecided task's row


def test_journal_refuses_another_vehicle_and_corruption(tmp_path):
    path = tmp_path / "j"
    TaskJournal.open(path, "v0").close()
    with pytest.raises(SplitrtError, match="belongs to vehicle v0, not 'v1'"):
        TaskJournal.open(path, "v1")
    lines = path.read_text().splitlines()
    path.write_text("garbage\n" + "\n".join(lines) + "\n")
    with pytest.raises(SplitrtError, match="line 1 is not JSON"):
        TaskJournal.open(path, "v0")


def test_every_vehicle_task_is_journaled_before_its_record(tmp_path, tiny):
    path, out = tmp_path / "j", tmp_path / "r.jsonl"
    run(tiny["res"], TaskJournal.open(path, "v0", records_path=out), out, arrivals="poisson:3")
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    seen: dict[str, list[str]] = {}
    for x in lines:
        if x["j"] != "start":
            seen.setdefault(x.get("task_id") or x["record"]["task_id"], []).append(x["j"])
    assert seen and all(v == ["generated", "decided", "record"] for v in seen.values())
    assert account(path, read_jsonl(out))["missing"] == 0


def test_a_discarded_run_is_not_continued(tmp_path, tiny):
    from splitrt.edge_runtime.vehicle.journal import default_journal_path, discard_run

    out = tmp_path / "v0.jsonl"
    journal_path = default_journal_path(out)
    assert journal_path == tmp_path / "v0.jsonl.journal"
    run(tiny["res"], TaskJournal.open(journal_path, "v0", records_path=out), out)  # 3 tasks
    again = TaskJournal.open(journal_path, "v0", records_path=out)
    assert again.next_index == 3  # the same --out continues the old run (a restart)...
    again.close()
    discard_run(out)
    assert not out.exists() and not journal_path.exists()
    fresh = TaskJournal.open(journal_path, "v0", records_path=out)
    records = run(tiny["res"], fresh, out)
    assert [r["index"] for r in records] == [0, 1, 2] == [r["index"] for r in read_jsonl(out)]  # ...not after
