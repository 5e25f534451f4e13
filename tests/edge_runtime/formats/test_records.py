"""Record sinks and the per-(cut, node) summary."""

from __future__ import annotations

import numpy as np

from splitrt.edge_runtime.formats.records import JsonlSink, ListSink, format_summary, read_jsonl, summarize


def rec(cut, node, total, outcome="remote"):
    return {"cut": cut, "node": node, "total_s": total, "outcome": outcome}


def test_summary_groups_by_cut_and_node():
    records = [rec(2, 0, t) for t in (0.1, 0.2, 0.3, 0.4)] + [rec(2, 1, 1.0, "fallback"), rec(5, None, 0.5, "local")]
    rows = summarize(records)
    assert [(r["cut"], r["node"], r["n"]) for r in rows] == [(2, 0, 4), (2, 1, 1), (5, None, 1)]
    first = rows[0]
    assert first["mean_s"] == np.mean([0.1, 0.2, 0.3, 0.4])
    assert first["p50_s"] == np.percentile([0.1, 0.2, 0.3, 0.4], 50)
    assert first["p95_s"] == np.percentile([0.1, 0.2, 0.3, 0.4], 95)
    assert (rows[1]["fallback"], rows[1]["remote"], rows[2]["local"]) == (1, 0, 1)
    table = format_summary(rows)
    assert table.splitlines()[3].split()[:3] == ["5", "-", "1"]


def test_jsonl_sink_appends_one_line_per_record(tmp_path):
    path = tmp_path / "sub" / "r.jsonl"
    sink = JsonlSink(path)
    sink({"a": 1})
    assert read_jsonl(path) == [{"a": 1}]  # flushed per record
    sink({"b": [1.5, None]})
    sink.close()
    assert read_jsonl(path) == [{"a": 1}, {"b": [1.5, None]}]
    mem = ListSink()
    mem({"x": 1})
    assert mem == [{"x": 1}]
