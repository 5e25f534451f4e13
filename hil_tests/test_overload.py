"""Sixteen vehicles at twice an RSU's capacity (the `overload` benchmark, short): the node stays
within its queue limit and answers "busy", the vehicles fall back locally, no task is lost."""

from __future__ import annotations

import pytest

from tools.bench import BenchContext
from tools.benchmarks.reliability import OVERLOAD_QUEUE, OVERLOAD_VEHICLES, overload


@pytest.mark.timeout(600)
def test_overload_rejects_with_busy_and_loses_nothing(tmp_path, small_models):
    (tmp_path / "exports").mkdir()
    (tmp_path / "exports" / "mobilenet_v2").symlink_to(small_models["mobilenet_v2"])
    figures = {r["figure"]: r["value"] for r in overload(BenchContext(work=tmp_path, quick=True, duration_s=8.0))}
    print(figures)
    assert figures["lost"] == 0 and figures["failed"] == 0
    assert figures["generated"] >= OVERLOAD_VEHICLES  # every vehicle generated work
    assert figures["offered_tasks_per_s"] == pytest.approx(2 * figures["capacity_tasks_per_s"])
    assert figures["rejected"] > 0  # past its queue limit the node says busy ...
    assert 0 < figures["max_queue_tasks"] <= OVERLOAD_QUEUE  # ... and never holds more
    assert figures["fallback_fraction"] > 0  # the vehicles ran the rejected tails themselves
