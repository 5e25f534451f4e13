"""Foundation benchmarks: export time, and the cost of running a model as chained segments.

Figures (benchmark / figure / params):
- ``export`` / ``export_s`` / model: wall time of `export_torchvision` (export, cut, write, parity).
- ``split_overhead`` / ``sum_over_whole`` / model, threads: sum of per-segment medians over the
  whole-model median (what splitting costs in pure compute).
- ``split_overhead`` / ``chain_over_whole`` / model, threads, spinning: all segments chained in
  one process (one call per segment, as the runtime does it) over the whole model (goal <= 1.03
  with spinning off). With spinning=True the chain's sessions spin and the whole model does not:
  the pitfall the runtime's default avoids.
Whole, chain and every segment are timed interleaved, round by round, so machine noise hits
numerator and denominator alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from splitrt.edge_runtime.compute.segments import SegmentRunner, open_session
from splitrt.edge_runtime.formats.manifest import Manifest
from splitrt.models.segmenter import sample_input
from splitrt.tools.bench.run import BenchContext, record


def export_time(ctx: BenchContext) -> list[dict[str, Any]]:
    from splitrt.models.torchvision_export import export_torchvision

    out = []
    for model in ctx.models:
        start = time.perf_counter()
        manifest, _ = export_torchvision(model, ctx.work / "exports" / model)
        out.append(record("export", "export_s", time.perf_counter() - start, "s", model=model))
        ctx.remember_export(manifest)
    return out


def _interleaved(fns: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Median seconds of each function, called round-robin ``rounds`` times after 2 warm-ups."""
    for _ in range(2):
        for fn in fns.values():
            fn()
    samples = {k: np.empty(rounds) for k in fns}
    for r in range(rounds):
        for k, fn in fns.items():
            s = time.perf_counter()
            fn()
            samples[k][r] = time.perf_counter() - s
    return {k: float(np.median(v)) for k, v in samples.items()}


def _measure_split(manifest: Manifest, threads: int, rounds: int) -> list[dict[str, Any]]:
    x = sample_input(manifest.input)
    feed = {manifest.input.name: x}
    whole = open_session(manifest.whole_path(), threads=threads)
    runner = SegmentRunner(manifest, threads=threads)
    inputs = [x]
    for i in range(manifest.n_segments - 1):
        inputs.append(runner.run_segment(inputs[-1], i))
    fns: dict[str, Callable[[], object]] = {"whole": lambda: whole.run(None, feed), "chain": lambda: runner.run(x)}
    for i in range(manifest.n_segments):
        fns[f"seg{i}"] = lambda i=i: runner.run_segment(inputs[i], i)
    med = _interleaved(fns, rounds)
    w = med["whole"]
    sum_seg = sum(med[f"seg{i}"] for i in range(manifest.n_segments))
    params = {"model": manifest.model, "threads": threads, "spinning": False}
    out = [
        record("split_overhead", "whole_ms", w * 1e3, "ms", **params),
        record("split_overhead", "chain_over_whole", med["chain"] / w, "ratio", **params),
        record("split_overhead", "sum_over_whole", sum_seg / w, "ratio", **params),
    ]
    if threads > 1:
        # The pitfall the runtime avoids: the same chain with ORT's thread spinning on, against
        # the same (spinning-off) whole model. Measured after the spinning-off rounds, so the
        # spinning pools cannot disturb them.
        runner = SegmentRunner(manifest, threads=threads, spinning=True)
        med = _interleaved({"whole": lambda: whole.run(None, feed), "chain": lambda: runner.run(x)}, rounds)
        params["spinning"] = True
        out.append(record("split_overhead", "chain_over_whole", med["chain"] / med["whole"], "ratio", **params))
    return out


def split_overhead(ctx: BenchContext) -> list[dict[str, Any]]:
    rounds = 5 if ctx.quick else 30
    out = []
    for model in ctx.models:
        manifest = ctx.export(model)
        for threads in (1, 2):
            out.extend(_measure_split(manifest, threads, rounds))
    return out
