"""SegmentRunner: ranges, input checks, providers, the speed-factor stretch."""

from __future__ import annotations

import numpy as np
import pytest

from splitrt.edge_runtime.compute import segments as seg_mod
from splitrt.edge_runtime.compute.segments import SegmentRunner, open_session, resolve_providers
from splitrt.edge_runtime.errors import SplitrtError
from splitrt.models.segmenter import sample_input, segment_model
from tests.onnx_graphs import residual_model


@pytest.fixture(scope="module")
def residual(tmp_path_factory):
    d = tmp_path_factory.mktemp("res")
    manifest, _ = segment_model(residual_model(), d, name="res", source={}, granularity="op")
    return manifest


def test_every_split_equals_the_whole_model(residual):
    runner = SegmentRunner(residual)
    x = sample_input(residual.input, seed=3)
    whole = open_session(residual.whole_path()).run(None, {"x": x})[0]
    for cut in range(residual.n_cuts):
        out = runner.run(runner.run(x, 0, cut), cut)
        np.testing.assert_allclose(out, whole, rtol=1e-5, atol=1e-5)


def test_bad_ranges_and_inputs(residual):
    runner = SegmentRunner(residual)
    x = sample_input(residual.input)
    with pytest.raises(SplitrtError, match=r"segment range \[3, 1\)"):
        runner.run(x, 3, 1)
    with pytest.raises(SplitrtError, match="cut 0 expects float32"):
        runner.run(x.astype(np.float64), 0)
    with pytest.raises(SplitrtError, match=r"cut 1 expects float32\[1, 4, 6, 6\]"):
        runner.run(x, 1)


def test_unknown_provider_names_what_the_build_has():
    with pytest.raises(SplitrtError, match="'tensorrt' is not in this onnxruntime build.*CPUExecutionProvider"):
        resolve_providers(["tensorrt"])
    assert resolve_providers(["cpu"]) == ["CPUExecutionProvider"]


def test_speed_factor_stretches_each_segment(residual, monkeypatch):
    """With speed factor X the runner idles (X-1) times each segment's own compute time."""
    slept = []
    clock = iter(np.arange(0.0, 1000.0, 0.5))  # every perf_counter call advances 0.5 s
    monkeypatch.setattr(seg_mod.time, "perf_counter", lambda: float(next(clock)))
    monkeypatch.setattr(seg_mod.time, "sleep", slept.append)
    runner = SegmentRunner(residual, speed_factor=3.0)
    runner.run(sample_input(residual.input), 0, 2)
    assert slept == [pytest.approx(2.0 * 0.5)] * 2
    with pytest.raises(SplitrtError, match="speed factor must be >= 1"):
        SegmentRunner(residual, speed_factor=0.5)


def test_pace_makes_every_run_take_its_paced_time(residual):
    """pace_s is a floor on every run's wall time (idling for what compute left), summed over the
    run's segments; runs that could not keep it are counted as misses."""
    import time

    n = residual.n_segments
    pace = np.full(n, 0.01)
    runner = SegmentRunner(residual, pace_s=pace)
    x = sample_input(residual.input)
    start = time.perf_counter()
    y = runner.run(x, 0, n)
    assert time.perf_counter() - start >= 0.01 * n
    np.testing.assert_array_equal(y, SegmentRunner(residual).run(x))  # same numbers, only later
    start = time.perf_counter()
    runner.run(runner.run(x, 0, 1), 1, 3)
    assert time.perf_counter() - start >= 0.03
    assert runner.pace_counters["runs"] == 3
    tight = SegmentRunner(residual, pace_s=np.zeros(n))
    tight.run(x)
    assert tight.pace_counters == {"runs": 1, "misses": 1, "overrun_s": tight.pace_counters["overrun_s"]}
    with pytest.raises(SplitrtError, match="pace times: 2 values"):
        SegmentRunner(residual, pace_s=[0.1, 0.1])


def test_warm_up_runs_every_segment_unpaced_and_changes_nothing(residual, monkeypatch):
    """A node's start-up pass: every session runs once, the pace counters stay at 0 and the
    results afterwards are the same numbers."""
    runner = SegmentRunner(residual, pace_s=np.full(residual.n_segments, 10.0))
    ran = []
    for i, session in runner.sessions.items():
        original = session.run
        monkeypatch.setattr(session, "run", lambda *a, _o=original, _i=i, **k: ran.append(_i) or _o(*a, **k))
    runner.warm_up(runs=2)
    assert sorted(ran) == sorted(list(runner.sessions) * 2)
    assert runner.pace_counters == {"runs": 0, "misses": 0, "overrun_s": 0.0}
    x = sample_input(residual.input, seed=1)
    warm = SegmentRunner(residual)
    warm.warm_up()
    np.testing.assert_array_equal(warm.run(x), SegmentRunner(residual).run(x))
