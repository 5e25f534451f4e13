"""What a live experiment replays: the scenario on this machine, its episode, every process's settings.

`make_plan` turns a scenario preset into the live experiment and the simulation it is compared
with, so both see the same world:

- **Profiles, measured now** (`ensure_exports`, `chained_profiles`). This shared machine's speed
  drifts over a day (AlexNet's whole model took 23 ms one day and 47 ms another), so every run
  profiles the exports first (1 thread, native). Each segment is timed alone, on the same input
  again and again (hot caches); a real task runs the segments back to back, and on this machine
  a chain took longer than the sum of its isolated segment medians (AlexNet 48 vs 40 ms). The
  plan therefore scales each model's segment times by chain median / sum of segment medians (so
  a whole task takes the measured chain time, split between segments in the isolated
  proportions) and hands the simulator these chained copies (``OUT/profiles``).
- **Scenario on this machine** (`live_scenario`). This machine's speed f_ref comes from those
  profiles (total FLOPs over total segment time, splitrt.policy.sim.workloads). The RSU is emulated at
  f_host = f_ref / headroom (``headroom`` 1.5 with pace emulation: the machine may slow down by
  that much, e.g. while other jobs share it, before the RSU's timing changes; 1 when the RSU runs
  natively). Every speed of the preset is scaled by s = f_host / (the preset's RSU speed) and the
  slot by 1 / s: the CVs and SVs keep the preset's speed ratios, the work one slot brings per unit
  of capacity is the preset's, and the simulator's per-cut work becomes the measured times x
  f_ref (effective FLOPs). For ``paper`` this is the ``calibrated`` mapping; the profile-calibrated
  presets (``demo``, ``overload``, ``calibrated``) are re-based on today's measurements.
- **Episode**: `VecEnv(scenario, 1, seed).reset()`: positions (mobility: built-in or SUMO),
  Rayleigh fading of every link and slot, device speeds and arrivals, exactly what the simulator
  draws for the same seed. Per slot and CV the channel rate to every node (eqs 1-2, fading
  included) becomes the vehicle's trace (splitrt.edge_runtime.formats.trace) and the emulated link's tc rate.
- **Processes**: CV i runs at speed factor f_ref / f_cv_i, SV j at f_ref / f_sv_j, the RSU at the
  headroom (splitrt.edge_runtime.compute.speed), with capacity f_host; all count work in the simulator's unit
  (splitrt.edge_runtime.formats.work).
- **CPU check** (`estimate_cpu`): every task costs its model's native compute wherever it runs
  (speed emulation throttles or idles, it does not add CPU time), plus runtime overhead per task,
  per process per slot and for the link updates. A mean load over `MAX_CPU_LOAD` of this machine's
  CPUs is refused (queues would measure the machine, not the scenario); over `WARN_CPU_LOAD`, or
  a peak (every process busy at once) above the CPU count, is warned about.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from splitrt.edge_runtime.compute.profile import Profile, cut_times
from splitrt.edge_runtime.errors import SplitrtError
from splitrt.edge_runtime.formats.manifest import Manifest
from splitrt.edge_runtime.formats.trace import LinkTrace
from splitrt.edge_runtime.formats.work import WorkTable
from splitrt.policy.sim.env import EpisodeDraw, VecEnv
from splitrt.policy.sim.scenario import Scenario
from splitrt.policy.sim.slot import link_rates_bps
from splitrt.policy.sim.workloads import reference_speed_flops_per_s, work_table

log = logging.getLogger(__name__)

#: Refuse a scenario whose estimated mean CPU load exceeds this fraction of the machine.
MAX_CPU_LOAD = 0.7
WARN_CPU_LOAD = 0.5
#: CPU seconds per task beyond its DNN compute (encode, ZeroMQ, decode, records, telemetry on
#: both ends; the runtime_overhead benchmark measured ~4 ms of wall time per task here).
TASK_OVERHEAD_CPU_S = 0.006
#: CPU seconds per process per slot (state requests and snapshots, telemetry, the slot hooks).
SLOT_OVERHEAD_CPU_S = 0.002
#: CPU seconds per namespace per slot for the tc batch that sets its links' rates.
TC_CPU_S = 0.004
PROFILE_RUNS = 10


def vehicle_seed(seed: int, cv: int) -> int:
    """The seed of CV ``cv``'s vehicle process (its input pool, arrivals and decider) in a run of ``seed``."""
    return seed * 1000 + cv


@dataclass(frozen=True)
class CvPlan:
    id: str
    model: str
    flops_per_s: float
    speed_factor: float
    trace: LinkTrace


@dataclass(frozen=True)
class SvPlan:
    name: str
    flops_per_s: float
    speed_factor: float


@dataclass(frozen=True)
class CpuEstimate:
    cpus: int
    per_slot_cpu_s: float
    load: float  # mean fraction of the machine
    peak_cpus: float  # every process computing at once
    detail: str

    def check(self, max_load: float = MAX_CPU_LOAD) -> list[str]:
        """Warnings; raises SplitrtError when the mean load is over ``max_load``."""
        if self.load > max_load:
            raise SplitrtError(
                f"the scenario needs ~{self.load:.0%} of this machine's {self.cpus} CPUs per slot ({self.detail}); "
                f"over {max_load:.0%} the queues would measure CPU contention, not the scenario "
                "(lengthen slot_s, use fewer/lighter vehicles, or --max-cpu-load to insist)"
            )
        warnings = []
        if self.load > WARN_CPU_LOAD:
            warnings.append(f"mean CPU load ~{self.load:.0%} of {self.cpus} CPUs: expect contention in the timings")
        if self.peak_cpus > self.cpus:
            warnings.append(
                f"if every process computes at once they need {self.peak_cpus:.2f} CPUs (> {self.cpus}): "
                "bursts will contend"
            )
        return warnings


@dataclass(frozen=True, eq=False)
class HilPlan:
    """Everything both the live run and the simulation use (module docstring)."""

    scenario: Scenario
    preset_scenario: Scenario
    seed: int
    exports: Path
    profile_dir: Path  # the chained profiles: the simulator's workloads and the pace reference
    episode: EpisodeDraw
    cvs: list[CvPlan]
    svs: list[SvPlan]
    rsu_flops_per_s: float
    rsu_speed_factor: float
    rates_bps: np.ndarray  # (T, N, J) channel rate of every CV to every node per slot
    work: WorkTable
    cpu: CpuEstimate  # CpuEstimate(1, 0, 0, 0, "") until estimated
    notes: list[str] = field(default_factory=list)
    rebased: bool = True  # the preset re-based on this machine (False: a deployment's own scenario)
    #: "model": rates_bps is the channel model's (tc applies it live); "measured": the rates the
    #: vehicles measured (multi-host runs, tools/hosts/links.py), which the simulator then uses too
    links: str = "model"

    @property
    def node_names(self) -> list[str]:
        return ["rsu", *[s.name for s in self.svs]]


def ensure_exports(
    models: tuple[str, ...], exports: Path, say: Callable[[str], None], *, reprofile: bool = True
) -> None:
    """Every model exported under ``exports`` with a native 1-thread profile (made if missing)."""
    from splitrt.edge_runtime.compute.profile import measure

    for model in models:
        directory = exports / model
        if not (directory / "manifest.json").is_file():
            try:
                from splitrt.models.torchvision_export import export_torchvision
            except ImportError:
                raise SplitrtError(
                    f"no export of {model} in {exports} and torch is not installed here: run "
                    f"`splitrt export --model {model} --out {exports}` on a machine with the export extra"
                ) from None
            say(f"exporting {model} into {directory} ...")
            export_torchvision(model, directory)
        manifest = Manifest.load(directory)
        path = directory / "profile.json"
        fresh = reprofile or not path.is_file()
        if not fresh:
            try:
                prof = Profile.load(path, manifest)
                dev = prof.data.get("device", {})
                fresh = dev.get("threads") != 1 or float(dev.get("speed_factor", 1.0)) != 1.0
            except SplitrtError:
                fresh = True
        if fresh:
            say(f"profiling {model} on this machine (1 thread, {PROFILE_RUNS} runs) ...")
            import json

            data = measure(manifest, threads=1, runs=PROFILE_RUNS, warmup=2)
            path.write_text(json.dumps(data, indent=1) + "\n")


def chained_profiles(exports: Path, models: tuple[str, ...], out_dir: Path) -> dict[str, float]:
    """Copies of the exports' profiles (and manifests) under ``out_dir`` whose segment times are
    scaled so their sum is the measured chain median (module docstring); returns the scales."""
    import json
    import shutil

    scales = {}
    for model in models:
        src = exports / model
        data = json.loads((src / "profile.json").read_text())
        total = sum(seg["median_s"] for seg in data["segments"])
        scale = float(data["chain"]["median_s"]) / total if total > 0 else 1.0
        for seg in data["segments"]:
            seg["median_s"] *= scale
            seg["p95_s"] *= scale
        head, tail = cut_times([seg["median_s"] for seg in data["segments"]])
        for cut in data["cuts"]:
            cut["head_s"] = float(head[cut["index"]])
            cut["tail_s"] = float(tail[cut["index"]])
        data["chain_scale"] = scale
        dst = out_dir / model
        dst.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / "manifest.json", dst / "manifest.json")
        (dst / "profile.json").write_text(json.dumps(data, indent=1) + "\n")
        scales[model] = scale
    return scales


def live_scenario(base: Scenario, profile_dir: Path, headroom: float = 1.0) -> Scenario:
    """The preset re-based on this machine's measured speed (module docstring)."""
    if not headroom >= 1.0:
        raise SplitrtError(f"--headroom must be >= 1 (1 = the RSU at this machine's full speed), got {headroom}")
    f_host = reference_speed_flops_per_s(profile_dir, base.types, profile_dir) / headroom
    s = f_host / base.rsu_flops_per_s
    return base.replace(
        manifest_dir=str(profile_dir),
        vehicle_profile_dir=str(profile_dir),
        rsu_profile_dir=str(profile_dir),
        rsu_flops_per_s=f_host,
        cv_flops_per_s=(base.cv_flops_per_s[0] * s, base.cv_flops_per_s[1] * s),
        sv_flops_per_s=(base.sv_flops_per_s[0] * s, base.sv_flops_per_s[1] * s),
        rsu_floor_flops_per_s=base.rsu_floor_flops_per_s * s,
        slot_s=base.slot_s / s,
    )


def make_plan(base: Scenario, seed: int, exports: Path, profile_dir: Path, *, headroom: float = 1.0) -> HilPlan:
    """The plan of ``base`` on this machine; ``profile_dir`` receives the chained profiles."""
    scales = chained_profiles(exports, base.types, profile_dir)
    scenario = live_scenario(base, profile_dir, headroom)
    notes = [
        "segment times scaled to the measured chain: " + ", ".join(f"{m} x{scale:.3f}" for m, scale in scales.items())
    ]
    return _with_cpu(plan_for(scenario, base, seed, exports, profile_dir, notes=notes))


def plan_for(
    scenario: Scenario,
    base: Scenario,
    seed: int,
    exports: Path,
    profile_dir: Path,
    *,
    notes: list[str] | None = None,
    rebased: bool = True,
    reference_flops_per_s: float | None = None,
) -> HilPlan:
    """The plan of a scenario as it stands (no profiling, no re-basing, no CPU estimate): the
    episode of ``seed``, every CV's trace and speed factor, the SVs, the rates and the work table.
    ``rebased``: the scenario is ``base`` on this machine (`make_plan`), not a deployment's own.
    Speed factors are relative to ``reference_flops_per_s`` (default: the speed of the profiles
    in ``profile_dir``, i.e. this machine's)."""
    env = VecEnv(scenario, n_envs=1, seed=seed)
    env.reset()
    ep = env.episode(0)
    n, t_slots = scenario.n_cvs, scenario.slots
    f_ref = reference_flops_per_s or reference_speed_flops_per_s(profile_dir, scenario.types, profile_dir)
    rates = np.stack([link_rates_bps(scenario, ep.positions_m[t], ep.fading[t])[0] for t in range(t_slots)])
    pos_x = ep.positions_m[:t_slots, :, 0]
    models = scenario.cv_models()
    cvs = [
        CvPlan(
            id=f"cv{i}",
            model=models[i],
            flops_per_s=float(ep.cv_flops_per_s[i]),
            speed_factor=f_ref / float(ep.cv_flops_per_s[i]),
            trace=LinkTrace(
                vehicle=f"cv{i}",
                slot_s=scenario.slot_s,
                pos_m=pos_x[:, i].copy(),
                sv_pos_m=pos_x[:, n:].copy(),
                rate_bps=rates[:, i, :].copy(),
                node_ok=ep.node_ok[:t_slots, i, :].copy(),
            ),
        )
        for i in range(n)
    ]
    svs = [
        SvPlan(f"sv{j + 1}", float(ep.sv_flops_per_s[j]), f_ref / float(ep.sv_flops_per_s[j]))
        for j in range(scenario.n_svs)
    ]
    if scenario.arrivals != "paper":
        raise SplitrtError(
            f"arrivals = {scenario.arrivals!r}: the live experiment replays the paper's one task per CV per slot "
            "(other arrival processes run in the simulator only)"
        )
    return HilPlan(
        scenario=scenario,
        preset_scenario=base,
        seed=seed,
        exports=exports,
        profile_dir=profile_dir,
        episode=ep,
        cvs=cvs,
        svs=svs,
        rsu_flops_per_s=scenario.rsu_flops_per_s,
        rsu_speed_factor=f_ref / scenario.rsu_flops_per_s,
        rates_bps=rates,
        work=work_table(scenario),
        cpu=CpuEstimate(1, 0, 0, 0, ""),
        notes=list(notes or []),
        rebased=rebased,
    )


def _with_cpu(plan: HilPlan) -> HilPlan:
    import dataclasses

    return dataclasses.replace(plan, cpu=estimate_cpu(plan))


def estimate_cpu(plan: HilPlan, cpus: int | None = None) -> CpuEstimate:
    """CPU demand of the live run on this machine (module docstring)."""
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    sc = plan.scenario
    compute = 0.0
    for cv in plan.cvs:
        prof = Profile.load(plan.exports / cv.model / "profile.json")
        compute += float(prof.data["chain"]["median_s"])
    n_tasks = len(plan.cvs)
    processes = 1 + len(plan.svs) + len(plan.cvs)
    per_slot = compute + n_tasks * TASK_OVERHEAD_CPU_S + processes * SLOT_OVERHEAD_CPU_S + processes * TC_CPU_S
    peak = (
        1.0 / plan.rsu_speed_factor
        + sum(1.0 / s.speed_factor for s in plan.svs)
        + sum(1.0 / c.speed_factor for c in plan.cvs)
    )
    detail = (
        f"{compute * 1e3:.0f} ms of DNN compute + {per_slot * 1e3 - compute * 1e3:.0f} ms of overhead "
        f"per {sc.slot_s * 1e3:.0f} ms slot"
    )
    return CpuEstimate(cpus, per_slot, per_slot / (sc.slot_s * cpus), peak, detail)
