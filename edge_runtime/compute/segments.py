"""Run any range of a model's segments with ONNX Runtime, torch-free.

One `SegmentRunner` per model per process. Every segment gets its own `InferenceSession`
(ONNX Runtime does not run a sub-range of one session's graph, onnxruntime#3887), which is why
thread spinning is OFF by default: each session owns an intra-op pool, and spinning pools starve
each other when sessions are chained (ANCHORS.md: ResNet18 chained 5.7x slower with spinning on
2 cores, equal to the whole model with it off).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from splitrt.edge_runtime.errors import SplitrtError
from splitrt.edge_runtime.formats.manifest import Manifest

log = logging.getLogger(__name__)

#: Short provider names accepted on the command line, mapped to ONNX Runtime's names.
PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


def resolve_providers(names: Sequence[str]) -> list[str]:
    """Map short names ('cpu', 'cuda', 'tensorrt') or ORT names to ORT provider names, in order.

    Refuses a provider this onnxruntime build lacks (naming what it has); CPU is always appended
    last as the fallback for operators an accelerator does not implement.
    """
    available = ort.get_available_providers()
    resolved: list[str] = []
    for name in names:
        full = PROVIDERS.get(name.lower(), name)
        if full not in available:
            raise SplitrtError(
                f"execution provider {name!r} is not in this onnxruntime build "
                f"(onnxruntime {ort.__version__} has: {', '.join(available)})"
            )
        if full not in resolved:
            resolved.append(full)
    if "CPUExecutionProvider" not in resolved:
        resolved.append("CPUExecutionProvider")
    return resolved


def session_options(threads: int = 1, spinning: bool = False) -> ort.SessionOptions:
    """Session options used for every segment (and for the whole model when profiling it)."""
    if threads < 1:
        raise SplitrtError(f"--threads must be >= 1, got {threads}")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "1" if spinning else "0")
    return opts


class SegmentRunner:
    """Loads a manifest's segments (sha256-checked) and runs ranges of them.

    ``runner.run(x, a, b)`` feeds ``x`` (the tensor at cut ``a``) through segments ``a .. b-1``
    and returns the tensor at cut ``b``. ``run(x, 0, n)`` is the whole model.

    ``speed_factor`` > 1 emulates a slower device on a fast host: after each segment the runner
    idles for (speed_factor - 1) times the segment's measured compute time, so every segment
    takes speed_factor times as long while the CPU stays free for the other processes of an
    experiment.

    ``pace_s`` (one value per segment, seconds) emulates a device of a given speed exactly: a run
    of segments a..b-1 ends sum(pace_s[a:b]) after it started (idling once, at the end, for what
    the compute left, so sleep overshoots do not add up over many small segments), and contention
    on the host changes nothing as long as the compute fits in that time (splitrt.edge_runtime.compute.speed).
    """

    def __init__(
        self,
        manifest: Manifest | str | Path,
        *,
        providers: Sequence[str] = ("cpu",),
        threads: int = 1,
        spinning: bool = False,
        segments: Sequence[int] | None = None,
        speed_factor: float = 1.0,
        pace_s: Sequence[float] | None = None,
    ) -> None:
        if not speed_factor >= 1.0:
            raise SplitrtError(f"speed factor must be >= 1 (1 = native speed), got {speed_factor}")
        self.speed_factor = float(speed_factor)
        self.manifest = manifest if isinstance(manifest, Manifest) else Manifest.load(manifest)
        self.pace_s = None if pace_s is None else np.asarray(pace_s, dtype=np.float64)
        # A paced run whose compute took longer than its pace is a miss: the emulated device was
        # slower than asked (the host was too busy); counted so a report can say so.
        self.pace_counters = {"runs": 0, "misses": 0, "overrun_s": 0.0}
        if self.pace_s is not None and self.pace_s.shape != (self.manifest.n_segments,):
            raise SplitrtError(
                f"pace times: {self.pace_s.shape[0] if self.pace_s.ndim else 0} values for "
                f"{self.manifest.n_segments} segments of {self.manifest.model}"
            )
        self.providers = resolve_providers(providers)
        self.threads = threads
        self.spinning = spinning
        wanted = range(self.manifest.n_segments) if segments is None else segments
        opts = session_options(threads, spinning)
        self.sessions: dict[int, ort.InferenceSession] = {}
        for i in wanted:
            path = self.manifest.verify_segment(i)
            self.sessions[i] = _open_session(path, opts, self.providers)
        log.debug("loaded %d segments of %s with %s", len(self.sessions), self.manifest.model, self.providers)

    @property
    def n_segments(self) -> int:
        return self.manifest.n_segments

    def check_input(self, x: np.ndarray, cut: int) -> None:
        """Refuse a tensor whose shape or dtype is not the one that crosses ``cut``."""
        spec = self.manifest.cut_spec(cut)
        if tuple(x.shape) != spec.shape or x.dtype != np.dtype(spec.dtype):
            raise SplitrtError(
                f"{self.manifest.model} cut {cut} expects {spec.dtype}{list(spec.shape)}, got {x.dtype}{list(x.shape)}"
            )

    def _session(self, index: int) -> ort.InferenceSession:
        try:
            return self.sessions[index]
        except KeyError:
            raise SplitrtError(f"segment {index} of {self.manifest.model} was not loaded") from None

    def run_segment(self, x: np.ndarray, index: int) -> np.ndarray:
        seg = self.manifest.segments[index]
        session = self._session(index)
        if self.pace_s is not None:
            start = time.perf_counter()
            out = session.run([seg.output], {seg.input: x})[0]
            self._paced(start + self.pace_s[index] - time.perf_counter())
            return out
        if self.speed_factor == 1.0:
            return session.run([seg.output], {seg.input: x})[0]
        start = time.perf_counter()
        out = session.run([seg.output], {seg.input: x})[0]
        # Emulate a device `speed_factor` times slower: stretch the measured compute by idling.
        time.sleep((self.speed_factor - 1.0) * (time.perf_counter() - start))
        return out

    def warm_up(self, runs: int = 1) -> None:
        """Untimed chained passes of every segment on a zero input (ONNX Runtime's first runs
        allocate, which made a node's first task of a model up to 2.5x slower): no pacing, no
        counters."""
        spec = self.manifest.cut_spec(0)
        for _ in range(runs):
            x = np.zeros(spec.shape, dtype=spec.dtype)
            for i, seg in enumerate(self.manifest.segments):
                x = self._session(i).run([seg.output], {seg.input: x})[0]

    def run(self, x: np.ndarray, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Tensor at cut ``stop`` from the tensor ``x`` at cut ``start`` (0 <= start <= stop <= n)."""
        stop = self.n_segments if stop is None else stop
        if not 0 <= start <= stop <= self.n_segments:
            raise SplitrtError(
                f"segment range [{start}, {stop}) is outside 0..{self.n_segments} for {self.manifest.model}"
            )
        self.check_input(x, start)
        if self.pace_s is None:
            for i in range(start, stop):
                x = self.run_segment(x, i)
            return x
        begin = time.perf_counter()
        for i in range(start, stop):
            seg = self.manifest.segments[i]
            x = self._session(i).run([seg.output], {seg.input: x})[0]
        self._paced(begin + float(self.pace_s[start:stop].sum()) - time.perf_counter())
        return x

    def _paced(self, left_s: float) -> None:
        self.pace_counters["runs"] += 1
        if left_s > 0:
            time.sleep(left_s)
        else:
            self.pace_counters["misses"] += 1
            self.pace_counters["overrun_s"] -= left_s


def _open_session(path: Path, opts: ort.SessionOptions, providers: list[str]) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    except Exception as exc:  # ORT raises its own Fail/InvalidGraph types; all mean a bad file here
        raise SplitrtError(f"onnxruntime cannot load {path}: {str(exc).splitlines()[0]}") from None


def open_session(
    path: str | Path, *, providers: Sequence[str] = ("cpu",), threads: int = 1, spinning: bool = False
) -> ort.InferenceSession:
    """A session for one ONNX file with the same options the runner uses (profiling, policies)."""
    return _open_session(Path(path), session_options(threads, spinning), resolve_providers(providers))
