"""The DNN types a node serves, loaded with their speed on this node.

Each model's per-segment seconds come from ``DIR/profile.json`` when it matches the export
(digest), the thread count and the speed emulation; from the reference profile and the speed
factor when the node paces its segments (splitrt.edge_runtime.compute.speed "pace"); else from a
start-up calibration (``calibration_runs`` timed passes of the chain after one warm-up). The same
numbers give every queued task's estimated compute seconds (the tail time at its cut) and the
model's effective FLOP/s (total FLOPs / whole-chain median).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from splitrt.edge_runtime.compute.profile import Profile, cut_times
from splitrt.edge_runtime.compute.segments import SegmentRunner
from splitrt.edge_runtime.compute.speed import pace_times
from splitrt.edge_runtime.errors import SplitrtError
from splitrt.edge_runtime.formats.manifest import Manifest
from splitrt.edge_runtime.link.wire import Header, WireError, check_task_tensor

log = logging.getLogger(__name__)


@dataclass
class ServedModel:
    """One DNN type this node serves: its segments and its speed on this node."""

    manifest: Manifest
    runner: SegmentRunner
    tail_s: np.ndarray  # (n_cuts,) estimated compute seconds of segments [c, n) on this node
    flops_per_s: float
    speed_source: str  # "profile", "calibration" or "pace"
    digest: str = ""

    def __post_init__(self) -> None:
        self.digest = self.digest or self.manifest.digest


def calibrate(runner: SegmentRunner, runs: int, seed: int = 0) -> np.ndarray:
    """Median seconds of every segment over ``runs`` chained passes after one warm-up pass."""
    spec = runner.manifest.input
    rng = np.random.default_rng(seed)
    x0 = (
        rng.standard_normal(spec.shape).astype(spec.dtype)
        if np.dtype(spec.dtype).kind == "f"
        else np.zeros(spec.shape, spec.dtype)
    )
    times = np.zeros((runs, runner.n_segments))
    for r in range(-1, runs):
        x = x0
        for i in range(runner.n_segments):
            start = time.perf_counter()
            x = runner.run_segment(x, i)
            if r >= 0:
                times[r, i] = time.perf_counter() - start
    return np.median(times, axis=0)


def load_models(
    dirs: Sequence[str | Path],
    *,
    threads: int = 1,
    providers: Sequence[str] = ("cpu",),
    speed_factor: float = 1.0,
    emulation: dict[str, Any] | None = None,
    calibration_runs: int = 3,
    pace: dict[str, np.ndarray] | None = None,
) -> dict[str, ServedModel]:
    """Load every export in ``dirs`` with its speed on this node (profile.json or calibration).

    ``speed_factor`` is the SegmentRunner stretch; ``emulation`` the node's
    ``SpeedEmulation.describe()``, which a profile must match to be used. ``pace`` (model ->
    per-segment seconds, splitrt.edge_runtime.compute.speed "pace") paces the segments, and those are the times.
    """
    emulation = emulation or {"speed_factor": 1.0, "speed_mode": "none"}
    models: dict[str, ServedModel] = {}
    for d in dirs:
        manifest = Manifest.load(d)
        if manifest.model in models:
            raise SplitrtError(f"model {manifest.model!r} is given twice (--segments {d})")
        paced = None if pace is None else pace.get(manifest.model)
        runner = SegmentRunner(manifest, providers=providers, threads=threads, speed_factor=speed_factor, pace_s=paced)
        seg_s, source = (
            (paced, "pace") if paced is not None else (_profile_times(manifest, threads, emulation), "profile")
        )
        if seg_s is None:
            seg_s, source = calibrate(runner, calibration_runs), "calibration"  # warms up first
        else:
            runner.warm_up()  # the first task must not pay ONNX Runtime's first-run allocations
        tail = cut_times(seg_s)[1]
        total = float(tail[0])
        flops_per_s = manifest.total_flops / total if total > 0 else float(manifest.total_flops)
        models[manifest.model] = ServedModel(manifest, runner, tail, flops_per_s, source)
        log.info("%s: %.2f GFLOP/s on this node (%s)", manifest.model, flops_per_s / 1e9, source)
    if not models:
        raise SplitrtError("give at least one --segments directory")
    return models


def _profile_times(manifest: Manifest, threads: int, emulation: dict[str, Any]) -> np.ndarray | None:
    path = manifest.directory / "profile.json"
    if not path.is_file():
        return None
    try:
        prof = Profile.load(path, manifest)
    except SplitrtError as exc:
        log.warning("ignoring %s: %s", path, exc)
        return None
    dev = prof.data.get("device", {})
    same = (
        dev.get("threads") == threads
        and float(dev.get("speed_factor", 1.0)) == float(emulation["speed_factor"])
        and (emulation["speed_factor"] == 1.0 or dev.get("speed_mode") == emulation["speed_mode"])
    )
    if not same:
        log.info("%s was measured with other threads/speed emulation: calibrating instead", path)
        return None
    return prof.segment_median_s


def reference_pace(dirs: Sequence[str | Path], speed_profile_dir: str, speed_factor: float) -> dict[str, np.ndarray]:
    """model -> per-segment seconds a paced node holds each segment: the reference profile
    (``speed_profile_dir/<model>/profile.json``, else the export's own) x ``speed_factor``."""
    pace = {}
    for d in dirs:
        manifest = Manifest.load(d)
        where = Path(speed_profile_dir) / manifest.model if speed_profile_dir else Path(d)
        reference = Profile.load(where / "profile.json", manifest).segment_median_s
        pace[manifest.model] = pace_times(reference, speed_factor)
    return pace


def validate_task(models: dict[str, ServedModel], header: Header, payload: memoryview) -> ServedModel:
    """The served model a task names, once its digest, cut and tensor match it; else WireError
    with the code the node answers (unknown_model, digest_mismatch, bad_cut, or the tensor's)."""
    model = models.get(header.model)
    if model is None:
        raise WireError("unknown_model", f"model {header.model!r} is not served here (serving: {', '.join(models)})")
    if header.digest != model.digest:
        raise WireError(
            "digest_mismatch",
            f"model {header.model!r} here has manifest digest {model.digest[:12]}, the task says "
            f"{header.digest[:12]} (a different export)",
        )
    n = model.manifest.n_segments
    if not 0 <= header.cut < n:
        raise WireError(
            "bad_cut", f"cut {header.cut} is outside 0..{n - 1} for {header.model} (cut {n} runs fully local)"
        )
    check_task_tensor(header, model.manifest.cut_spec(header.cut), payload.nbytes)
    return model
