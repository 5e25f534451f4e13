"""DNN workloads of the simulator, read from the same manifests (and cut indices) the runtime uses.

The simulator needs no ONNX file and no torch: it reads only a manifest's cut table (eq 3 bytes,
eq 6 FLOPs before / after every cut). The paper's three models are shipped under
policy/data/manifests/ (exported with seed 0 by ``splitrt export --model alexnet,resnet18,vgg16``;
a test checks that a fresh export has the same cut table).

A `Workload` gives, for every cut c (manifest indexing: segments [0, c) run on the CV):

| array | meaning | unit |
|---|---|---|
| ``cut_bytes[c]`` | D of eq (3), what crosses the link (0 at the fully local cut) | bytes |
| ``local_flops[c]`` | work run on the CV, sum_{l < phi} B_l (eqs 7-8) | FLOPs of the CV |
| ``rsu_flops[c]`` | work run at the RSU, sum_{l >= phi} B_l (eqs 9-11) | FLOPs of the RSU |
| ``sv_flops[c]`` | work run at an SV (eqs 13-15) | FLOPs of an SV |

From a manifest alone the three FLOP arrays are eq (6)'s counts. From measured profiles
(`splitrt profile`) each segment's work is its measured median time x the profiled device's
reference speed f_ref = (sum of the models' FLOPs) / (sum of their segment medians): a device
running at f_ref reproduces the measured per-cut times exactly, and the queues stay in
(effective) FLOPs as eqs 8-16 want. Local and SV work come from the vehicle's profiles, RSU work
from the RSU's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from splitrt.edge_runtime.compute.profile import Profile
from splitrt.edge_runtime.formats.manifest import Manifest
from splitrt.edge_runtime.formats.work import ModelWork, WorkTable
from splitrt.policy.sim.profiles import SHIPPED_MANIFESTS, load_manifest, load_profile, reference_speed_flops_per_s
from splitrt.policy.sim.scenario import Scenario


@dataclass(frozen=True, eq=False)
class Workload(ModelWork):
    """One DNN type's per-cut table (see the module docstring); arrays of length n_cuts = L_k + 1.
    The work a live node and the controller read (`ModelWork`, a work table's row) plus what the
    simulator needs besides: the bytes at every cut and where the numbers came from."""

    cut_bytes: np.ndarray = field(default_factory=lambda: np.zeros(0))
    source: str = ""

    @property
    def n_cuts(self) -> int:
        return len(self.cut_bytes)

    @classmethod
    def from_manifest(cls, manifest: Manifest) -> Workload:
        before = manifest.flops_before().astype(np.float64)
        after = manifest.flops_after().astype(np.float64)
        return cls(manifest.model, before, after, after.copy(), manifest.cut_bytes().astype(np.float64), "eq6")

    @classmethod
    def from_profiles(
        cls,
        manifest: Manifest,
        vehicle: Profile,
        vehicle_ref_flops_per_s: float,
        rsu: Profile,
        rsu_ref_flops_per_s: float,
    ) -> Workload:
        for prof in (vehicle, rsu):
            prof.check_manifest(manifest)
        return cls(
            manifest.model,
            vehicle.head_s * vehicle_ref_flops_per_s,
            rsu.tail_s * rsu_ref_flops_per_s,
            vehicle.tail_s * vehicle_ref_flops_per_s,
            manifest.cut_bytes().astype(np.float64),
            f"profiles:{vehicle.path}|{rsu.path}",
        )


def load_workloads(scenario: Scenario) -> dict[str, Workload]:
    """One `Workload` per DNN type of ``scenario`` (eq 6 FLOPs, or measured when profiles are set)."""
    manifests = {m: load_manifest(m, scenario.manifest_dir) for m in scenario.types}
    if not scenario.vehicle_profile_dir:
        return {m: Workload.from_manifest(man) for m, man in manifests.items()}
    f_veh = reference_speed_flops_per_s(scenario.vehicle_profile_dir, scenario.types, scenario.manifest_dir)
    f_rsu = reference_speed_flops_per_s(scenario.rsu_profile_dir, scenario.types, scenario.manifest_dir)
    return {
        m: Workload.from_profiles(
            man,
            load_profile(m, scenario.vehicle_profile_dir, man),
            f_veh,
            load_profile(m, scenario.rsu_profile_dir, man),
            f_rsu,
        )
        for m, man in manifests.items()
    }


def work_table(scenario: Scenario) -> WorkTable:
    """The scenario's workloads as the runtime's work table (splitrt.edge_runtime.formats.work): what a live
    experiment's vehicles and edge nodes count their queues in, so they match the simulator's."""
    workloads = load_workloads(scenario)
    models = {}
    for model, w in workloads.items():
        manifest = load_manifest(model, scenario.manifest_dir)
        models[model] = {
            "manifest_sha256": manifest.digest,
            "local_flops": w.local_flops.tolist(),
            "rsu_flops": w.rsu_flops.tolist(),
            "sv_flops": w.sv_flops.tolist(),
        }
    unit = "effective_flops" if scenario.vehicle_profile_dir else "flops"
    source = (
        f"profiles: vehicle {scenario.vehicle_profile_dir}, rsu {scenario.rsu_profile_dir}"
        if scenario.vehicle_profile_dir
        else f"manifests: {scenario.manifest_dir or SHIPPED_MANIFESTS}"
    )
    return WorkTable(unit, source, models)


#: also importable from here (they lived in this module before policy/sim/profiles.py)
__all__ = [
    "SHIPPED_MANIFESTS",
    "Workload",
    "load_manifest",
    "load_profile",
    "load_workloads",
    "reference_speed_flops_per_s",
    "work_table",
]
