"""Sixteen vehicles at twice an RSU's capacity (the `overload` benchmark, short): the node stays
within its queue limit and answers "busy", the vehicles fall back locally, no task is lost."""

from __future__ import annotations

import pytest

from splitrt.tools.bench.reliability import OVERLOAD_DECIDERS, OVERLOAD_QUEUE, OVERLOAD_VEHICLES, overload
from splitrt.tools.bench.run import BenchContext


@pytest.mark.timeout(600)
def test_overload_rejects_with_busy_and_loses_nothing(tmp_path, small_models):
    (tmp_path / "exports").mkdir()
    (tmp_path / "exports" / "mobilenet_v2").symlink_to(small_models["mobilenet_v2"])
    records = overload(BenchContext(work=tmp_path, quick=True, duration_s=8.0))
    by_decider: dict[str, dict] = {}
    for r in records:
        by_decider.setdefault(r["params"]["decider"], {})[r["figure"]] = r["value"]
    print(by_decider)
    assert set(by_decider) == set(OVERLOAD_DECIDERS)
    for variant in by_decider.values():  # nothing is lost whoever decides
        assert variant["lost"] == 0 and variant["failed"] == 0
    figures = by_decider["fixed"]  # blind offloading to the RSU alone: the node must protect itself
    assert figures["lost"] == 0 and figures["failed"] == 0
    assert figures["generated"] >= OVERLOAD_VEHICLES  # every vehicle generated work
    assert figures["offered_tasks_per_s"] == pytest.approx(2 * figures["capacity_tasks_per_s"])
    assert figures["rejected"] > 0  # past its queue limit the node says busy ...
    assert 0 < figures["max_queue_tasks"] <= OVERLOAD_QUEUE  # ... and never holds more
    assert figures["fallback_fraction"] > 0  # the vehicles ran the rejected tails themselves
