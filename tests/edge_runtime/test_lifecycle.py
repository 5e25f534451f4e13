"""The start-up status file: what a process writes, what a harness reads, and what it refuses."""

from __future__ import annotations

import json
import os

import pytest

from splitrt.edge_runtime.errors import SplitrtError
from splitrt.edge_runtime.lifecycle import STATUS_FORMAT, StatusFile, read_status


def test_ready_and_error_events_round_trip(tmp_path):
    path = tmp_path / "node.status"
    assert read_status(path) == []  # not written yet
    StatusFile(path).ready(endpoint="tcp://127.0.0.1:5555", role="rsu")
    StatusFile(path).error("no manifest at x")
    events = read_status(path)
    assert [e["event"] for e in events] == ["ready", "error"]
    assert events[0] == {
        "format": STATUS_FORMAT,
        "pid": os.getpid(),
        "event": "ready",
        "endpoint": "tcp://127.0.0.1:5555",
        "role": "rsu",
    }
    assert events[1]["message"] == "no manifest at x"


def test_no_path_writes_nothing(tmp_path):
    StatusFile(None).ready()
    StatusFile(None).error("x")
    assert list(tmp_path.iterdir()) == []


def test_a_line_being_written_is_not_read_yet(tmp_path):
    path = tmp_path / "v.status"
    path.write_text(json.dumps({"format": STATUS_FORMAT, "event": "ready"})[:10])
    assert read_status(path) == []


@pytest.mark.parametrize(
    "line, match",
    [
        ("listening tcp://x\n", "not a JSON status line"),
        (json.dumps({"format": 99, "event": "ready"}) + "\n", "not a format-1 status event"),
        (json.dumps({"format": 1, "event": "started"}) + "\n", "not a format-1 status event"),
        ("[1]\n", "not a format-1 status event"),
    ],
)
def test_anything_else_is_an_error_naming_the_line(tmp_path, line, match):
    path = tmp_path / "x.status"
    path.write_text(line)
    with pytest.raises(SplitrtError, match=f"x.status:1: {match}"):
        read_status(path)
