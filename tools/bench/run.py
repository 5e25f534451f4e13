"""`splitrt bench`: the project's benchmarks, one JSON list of records, one printed table.

A record is ``{"benchmark", "figure", "value", "unit", "params"}``. Every benchmark is a
function ``(ctx: BenchContext) -> list[dict]`` registered in `BENCHMARKS` by name; issues add
theirs under ``tools/bench/``. Timings are measured interleaved within one run where a
ratio is reported (this machine is shared and noisy), and never decide a test.
"""

from __future__ import annotations

import importlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from splitrt.edge_runtime.errors import SplitrtError
from splitrt.edge_runtime.formats.manifest import Manifest

log = logging.getLogger(__name__)

#: name -> "module:function". Order = run order (export first: later ones reuse its exports).
BENCHMARKS: dict[str, str] = {
    "export": "splitrt.tools.bench.segments:export_time",
    "split_overhead": "splitrt.tools.bench.segments:split_overhead",
    "simulator": "splitrt.tools.bench.simulator:simulator",
    "as_run": "splitrt.tools.bench.simulator:as_run",
    "ga": "splitrt.tools.bench.simulator:ga",
    "p2_optimal": "splitrt.tools.bench.simulator:p2_optimal",
    "decision": "splitrt.tools.bench.decision:decision",
    "link": "splitrt.tools.bench.runtime:link",
    "runtime_overhead": "splitrt.tools.bench.runtime:runtime_overhead",
    "server_throughput": "splitrt.tools.bench.runtime:server_throughput",
    "encoding": "splitrt.tools.bench.runtime:encoding",
    "speed_emulation": "splitrt.tools.bench.runtime:speed_emulation",
    "fuzz": "splitrt.tools.bench.reliability:fuzz",
    "overload": "splitrt.tools.bench.reliability:overload",
    "control_loop": "splitrt.tools.bench.live:control_loop",
    "sim_to_real": "splitrt.tools.bench.live:sim_to_real",
}

#: The paper's DNN types plus MobileNetV2, the models the segment benchmarks cover.
BENCH_MODELS = ("alexnet", "resnet18", "vgg16", "mobilenet_v2")


def record(benchmark: str, figure: str, value: float, unit: str, **params: Any) -> dict[str, Any]:
    return {"benchmark": benchmark, "figure": figure, "value": float(value), "unit": unit, "params": params}


@dataclass
class BenchContext:
    """What every benchmark gets: a scratch directory and the size of the run."""

    work: Path
    quick: bool = False
    models: tuple[str, ...] = BENCH_MODELS
    duration_s: float | None = None  # long-running benchmarks (overload): None = their own default
    _exports: dict[str, Manifest] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # absolute: every path a benchmark derives from it goes to child processes
        self.work = Path(self.work).resolve()

    def export(self, model: str) -> Manifest:
        """The export of ``model`` under work/exports/, made once and reused across benchmarks."""
        if model not in self._exports:
            directory = self.work / "exports" / model
            try:
                self._exports[model] = Manifest.load(directory)
            except SplitrtError:
                from splitrt.models.torchvision_export import export_torchvision

                self._exports[model] = export_torchvision(model, directory)[0]
        return self._exports[model]

    def remember_export(self, manifest: Manifest) -> None:
        self._exports[manifest.model] = manifest


def resolve(names: list[str] | None) -> dict[str, Callable[[BenchContext], list[dict[str, Any]]]]:
    chosen = names if names else list(BENCHMARKS)
    unknown = [n for n in chosen if n not in BENCHMARKS]
    if unknown:
        raise SplitrtError(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    out = {}
    for name in BENCHMARKS:  # registry order, whatever order was asked
        if name in chosen:
            module, func = BENCHMARKS[name].split(":")
            out[name] = getattr(importlib.import_module(module), func)
    return out


def run(names: list[str] | None, ctx: BenchContext, out: Path | None = None) -> list[dict[str, Any]]:
    """Run the chosen benchmarks; write the records after each one (nothing lost on a crash)."""
    records: list[dict[str, Any]] = []
    for name, fn in resolve(names).items():
        log.info("benchmark %s", name)
        records.extend(fn(ctx))
        if out is not None:
            write(records, out)
    return records


def write(records: list[dict[str, Any]], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(records, indent=1) + "\n")


def format_table(records: list[dict[str, Any]]) -> str:
    rows = [("benchmark", "figure", "params", "value", "unit")]
    for r in records:
        params = " ".join(f"{k}={v}" for k, v in r["params"].items())
        v = r["value"]
        value = f"{v:.4g}" if abs(v) < 1e5 else f"{v:.3e}"
        rows.append((r["benchmark"], r["figure"], params, value, r["unit"]))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)
