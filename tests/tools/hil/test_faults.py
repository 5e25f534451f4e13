"""Fault windows: written as they happen, read back, and used to split task records."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time

from splitrt.tools.hil.faults import FaultLog, read_windows, split_by_window, stall


def test_windows_are_logged_read_back_and_split_records(tmp_path):
    events = []
    log = FaultLog(tmp_path / "faults.jsonl", sinks=[events.append])
    with log.window("link_blackout", "cv0-rsu", slots=8) as w:
        time.sleep(0.01)
    open_one = log.start("node_killed", "rsu")  # a run that died mid-fault leaves only the start line
    lines = [json.loads(x) for x in (tmp_path / "faults.jsonl").read_text().splitlines()]
    assert [x["event"] for x in lines] == ["fault_start", "fault", "fault_start"] and events == lines
    windows = read_windows(tmp_path / "faults.jsonl")
    assert [(v.kind, v.target, v.detail) for v in windows] == [
        ("link_blackout", "cv0-rsu", {"slots": 8}),
        ("node_killed", "rsu", {}),
    ]
    assert windows[0].end_unix_s == w.end_unix_s > w.start_unix_s and windows[1].end_unix_s is None
    records = [{"arrival_unix_s": t} for t in (w.start_unix_s - 1, w.start_unix_s, w.end_unix_s, w.end_unix_s + 1)]
    parts = split_by_window(records, w)
    assert [len(parts[k]) for k in ("before", "during", "after")] == [1, 2, 1]
    assert split_by_window(records, open_one)["after"] == []  # an open window never ends


def test_stall_freezes_and_resumes_a_process():
    child = subprocess.Popen(
        [sys.executable, "-c", "import time\nwhile True: print(time.time(), flush=True); time.sleep(0.01)"],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stamps = [float(child.stdout.readline())]
        stall(child.pid, 0.5)
        stamps += [float(child.stdout.readline()) for _ in range(100)]
        gaps = [b - a for a, b in itertools.pairwise(stamps)]
        assert max(gaps) >= 0.4  # one gap spans the freeze; the process then runs on
        assert child.poll() is None
    finally:
        os.killpg(child.pid, 9)
        child.wait()


def test_read_windows_ignores_blank_lines(tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_text(
        "\n"
        + json.dumps(
            {"event": "fault", "kind": "k", "target": "t", "start_unix_s": 1.0, "end_unix_s": 2.0, "detail": {}}
        )
        + "\n\n"
    )
    assert [(w.start_unix_s, w.end_unix_s) for w in read_windows(path)] == [(1.0, 2.0)]
