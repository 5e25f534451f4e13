"""Per-segment latency profiles measured on the device that will run the segments.

`measure` warms up and then times every segment on the real tensor that reaches it, the whole
model (when the export kept it) and the chain of all segments in one process. A profile is tied
to its manifest by the manifest's digest; `Profile.load(path, manifest)` refuses a profile
measured for another export.

JSON layout (``profile.json``), all times in seconds:

    format_version, model, manifest_sha256, created,
    device   {hostname, machine, system, cpu_model, cores_physical, cores_logical, cpu_freq_mhz,
              memory_bytes, onnxruntime, provider, threads, spinning, speed_factor, speed_mode}
    runs, warmup,
    segments [{index, label, flops, median_s, p95_s}],
    cuts     [{index, bytes, head_s, tail_s}]   head = segments before the cut, tail = after it
    whole    {median_s, p95_s} or null,  chain {median_s, p95_s},
    effective_flops_per_s                       total FLOPs / (whole or chain median): the
                                                device's f_loc / f_rsu for the simulator
"""

from __future__ import annotations

import os
import platform
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import psutil

from splitrt.edge_runtime.compute.segments import SegmentRunner, open_session
from splitrt.edge_runtime.compute.speed import SpeedEmulation
from splitrt.edge_runtime.errors import ManifestError, SplitrtError
from splitrt.edge_runtime.formats.jsonfile import read_versioned
from splitrt.edge_runtime.formats.manifest import Manifest

PROFILE_VERSION = 1


def cut_times(segment_s) -> tuple[np.ndarray, np.ndarray]:
    """(head_s, tail_s) at every cut 0 .. n from per-segment seconds (n segments): head_s[c] the
    segments before cut c, tail_s[c] those after it (tail_s[n] = 0). The one place the project
    sums segment times into cut times (profiles, a node's task estimates, the live plan)."""
    cum = np.concatenate([[0.0], np.cumsum(np.asarray(segment_s, dtype=np.float64))])
    return cum, cum[-1] - cum


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_facts() -> dict[str, Any]:
    """What is readable about this device (frequency may be fixed or absent on VMs and boards)."""
    freq = None
    try:
        f = psutil.cpu_freq()
        freq = round(f.current, 1) if f else None
    except (NotImplementedError, OSError, AttributeError):
        pass
    return {
        "hostname": socket.gethostname(),
        "machine": platform.machine(),
        "system": f"{platform.system()} {platform.release()}",
        "cpu_model": cpu_model(),
        "cores_physical": psutil.cpu_count(logical=False),
        "cores_logical": psutil.cpu_count(logical=True),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_freq_mhz": freq,
        "memory_bytes": psutil.virtual_memory().total,
        "onnxruntime": ort.__version__,
        "python": platform.python_version(),
    }


def time_call(fn: Callable[[], object], runs: int, warmup: int) -> np.ndarray:
    """Wall-clock seconds of ``runs`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    out = np.empty(runs)
    for i in range(runs):
        start = time.perf_counter()
        fn()
        out[i] = time.perf_counter() - start
    return out


def _stats(samples: np.ndarray) -> dict[str, float]:
    return {"median_s": float(np.median(samples)), "p95_s": float(np.percentile(samples, 95))}


def measure(
    manifest: Manifest,
    *,
    threads: int = 1,
    provider: str = "cpu",
    runs: int = 20,
    warmup: int = 3,
    spinning: bool = False,
    speed_factor: float = 1.0,
    speed_mode: str = "stretch",
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Measure a profile of ``manifest``'s segments on this device; returns the JSON dict.

    ``speed_factor`` / ``speed_mode`` emulate a slower device while measuring (splitrt.edge_runtime.compute.speed:
    the cgroup is entered for the measurement and left afterwards), so the profile's times and
    ``effective_flops_per_s`` are those of the emulated device.
    """
    if runs < 1 or warmup < 0:
        raise SplitrtError(f"--runs must be >= 1 and warm-up >= 0 (got runs={runs}, warmup={warmup})")
    emulation = SpeedEmulation(speed_factor, speed_mode, cpus=threads)
    try:
        runner_factor = emulation.apply()
        return _measure(manifest, threads, provider, runs, warmup, spinning, runner_factor, emulation, seed, progress)
    finally:
        emulation.close()


def _measure(
    manifest: Manifest,
    threads: int,
    provider: str,
    runs: int,
    warmup: int,
    spinning: bool,
    speed_factor: float,
    emulation: SpeedEmulation,
    seed: int,
    progress: Callable[[str], None] | None,
) -> dict[str, Any]:
    runner = SegmentRunner(
        manifest, providers=(provider,), threads=threads, spinning=spinning, speed_factor=speed_factor
    )
    rng = np.random.default_rng(seed)
    spec = manifest.input
    x0 = (
        rng.standard_normal(spec.shape).astype(spec.dtype)
        if np.dtype(spec.dtype).kind == "f"
        else np.zeros(spec.shape, spec.dtype)
    )
    # The tensor that reaches each segment, from one pass of the chain.
    inputs = [x0]
    for i in range(manifest.n_segments - 1):
        inputs.append(runner.run_segment(inputs[-1], i))

    seg_rows = []
    for i, seg in enumerate(manifest.segments):
        if progress:
            progress(f"segment {i + 1}/{manifest.n_segments}")
        samples = time_call(lambda i=i: runner.run_segment(inputs[i], i), runs, warmup)
        seg_rows.append({"index": i, "label": seg.label, "flops": seg.flops, **_stats(samples)})

    chain = _stats(time_call(lambda: runner.run(x0), runs, warmup))
    whole = None
    whole_path = manifest.whole_path()
    if whole_path is not None:
        if progress:
            progress("whole model")
        session = open_session(whole_path, providers=(provider,), threads=threads, spinning=spinning)
        feed = {manifest.input.name: x0}

        def run_whole() -> None:
            start = time.perf_counter()
            session.run(None, feed)
            if speed_factor != 1.0:
                time.sleep((speed_factor - 1.0) * (time.perf_counter() - start))

        whole = _stats(time_call(run_whole, runs, warmup))
        del session

    head, tail = cut_times([r["median_s"] for r in seg_rows])
    cuts = [
        {"index": c.index, "bytes": c.bytes, "head_s": float(head[c.index]), "tail_s": float(tail[c.index])}
        for c in manifest.cuts
    ]
    reference = whole["median_s"] if whole else chain["median_s"]
    device = device_facts() | {
        "provider": runner.providers[0],
        "threads": threads,
        "spinning": spinning,
        **emulation.describe(),
    }
    return {
        "format_version": PROFILE_VERSION,
        "model": manifest.model,
        "manifest_sha256": manifest.digest,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": device,
        "runs": runs,
        "warmup": warmup,
        "segments": seg_rows,
        "cuts": cuts,
        "whole": whole,
        "chain": chain,
        "effective_flops_per_s": manifest.total_flops / reference if reference > 0 else None,
    }


@dataclass(frozen=True)
class Profile:
    """A loaded profile (see the module docstring for the JSON it comes from)."""

    data: dict[str, Any]
    path: Path

    @property
    def model(self) -> str:
        return str(self.data["model"])

    @property
    def manifest_sha256(self) -> str:
        return str(self.data["manifest_sha256"])

    @property
    def segment_median_s(self) -> np.ndarray:
        return np.array([s["median_s"] for s in self.data["segments"]], dtype=float)

    @property
    def head_s(self) -> np.ndarray:
        """Local compute time at every cut (segments before it), shape (n_cuts,)."""
        return np.array([c["head_s"] for c in self.data["cuts"]], dtype=float)

    @property
    def tail_s(self) -> np.ndarray:
        """Edge compute time at every cut (segments after it), shape (n_cuts,)."""
        return np.array([c["tail_s"] for c in self.data["cuts"]], dtype=float)

    @property
    def effective_flops_per_s(self) -> float:
        return float(self.data["effective_flops_per_s"])

    @classmethod
    def load(cls, path: str | Path, manifest: Manifest | None = None) -> Profile:
        """Load a profile; with ``manifest``, refuse one measured for another export."""
        path = Path(path)
        data = read_versioned(
            path,
            "profile",
            PROFILE_VERSION,
            required=("model", "manifest_sha256", "segments", "cuts", "effective_flops_per_s"),
            error=ManifestError,
            if_missing=" (run `splitrt profile` first?)",
        )
        prof = cls(data, path)
        if manifest is not None:
            prof.check_manifest(manifest)
        return prof

    def check_manifest(self, manifest: Manifest) -> None:
        if self.manifest_sha256 != manifest.digest:
            raise ManifestError(
                f"profile {self.path} was measured for {self.model} manifest {self.manifest_sha256[:12]}, "
                f"not for {manifest.model} manifest {manifest.digest[:12]} in {manifest.directory}"
            )
        if len(self.data["cuts"]) != manifest.n_cuts:
            raise ManifestError(f"profile {self.path} has {len(self.data['cuts'])} cuts, manifest {manifest.n_cuts}")


def format_table(profile: dict[str, Any]) -> str:
    """The per-cut table `splitrt profile` prints."""
    dev = profile["device"]
    lines = [
        f"{profile['model']} on {dev['cpu_model']} ({dev['provider']}, {dev['threads']} thread(s), "
        f"speed factor {dev['speed_factor']:g} ({dev.get('speed_mode', 'stretch')})), median of {profile['runs']} runs",
        f"{'cut':>3}  {'after segment':<22} {'bytes':>10}  {'head ms':>9}  {'tail ms':>9}  {'seg ms':>8}  {'seg GFLOP':>9}",
    ]
    segs = profile["segments"]
    for c in profile["cuts"]:
        i = c["index"]
        label = "(raw input)" if i == 0 else segs[i - 1]["label"]
        seg_ms = f"{segs[i - 1]['median_s'] * 1e3:8.2f}" if i > 0 else " " * 8
        seg_gf = f"{segs[i - 1]['flops'] / 1e9:9.3f}" if i > 0 else " " * 9
        lines.append(
            f"{i:>3}  {label[:22]:<22} {c['bytes']:>10}  {c['head_s'] * 1e3:9.2f}  {c['tail_s'] * 1e3:9.2f}  {seg_ms}  {seg_gf}"
        )
    whole = profile["whole"]
    chain = profile["chain"]
    tail = f"chain of all segments {chain['median_s'] * 1e3:.2f} ms"
    if whole:
        tail = (
            f"whole model {whole['median_s'] * 1e3:.2f} ms, "
            + tail
            + f" ({chain['median_s'] / whole['median_s']:.3f}x)"
        )
    lines.append(tail + f"; effective {profile['effective_flops_per_s'] / 1e9:.2f} GFLOP/s")
    return "\n".join(lines)
