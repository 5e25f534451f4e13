"""Work tables: the work every cut puts on the vehicle and on an edge node, in the simulator's unit.

The simulator keeps its queues in FLOPs (eqs 8, 10, 16): eq (6)'s counts from the manifest, or,
when it is calibrated with measured profiles, *effective* FLOPs (measured seconds x the profiled
device's reference speed, policy/sim/workloads.py), in which a device's FLOP/s is its real speed on
every segment alike. A live experiment compared with the simulator must count its queues in the
same unit, so the vehicle and the edge nodes can be handed the simulator's table for their models
(`splitrt vehicle --work FILE`, `splitrt serve --work FILE`) instead of the manifest's FLOPs.

JSON (``work.json``):

| key | meaning |
|---|---|
| ``format_version`` | 1 |
| ``unit`` | ``flops`` (eq 6) or ``effective_flops`` (profile seconds x reference FLOP/s) |
| ``source`` | where the numbers come from (manifests, profile paths) |
| ``models`` | model -> ``{manifest_sha256, local_flops, rsu_flops, sv_flops}``; arrays over the cuts 0..L_k: work on the vehicle before the cut (eqs 7-8), at the RSU after it (eqs 9-10), at an SV after it (eqs 13-16) |
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from splitrt.edge_runtime.errors import SplitrtError
from splitrt.edge_runtime.formats.jsonfile import read_versioned
from splitrt.edge_runtime.formats.manifest import Manifest

WORK_VERSION = 1
UNITS = ("flops", "effective_flops")


@dataclass(frozen=True, eq=False)
class ModelWork:
    """One DNN type's row of a work table; arrays of length n_cuts."""

    model: str
    local_flops: np.ndarray
    rsu_flops: np.ndarray
    sv_flops: np.ndarray

    def edge_flops(self, role: str) -> np.ndarray:
        """Work after each cut at an edge node of ``role`` (rsu or sv)."""
        return self.rsu_flops if role == "rsu" else self.sv_flops


@dataclass(frozen=True, eq=False)
class WorkTable:
    """Per-model work tables (see the module docstring)."""

    unit: str
    source: str
    models: dict[str, dict[str, Any]]

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            raise SplitrtError(f"work table unit must be one of {', '.join(UNITS)}, got {self.unit!r}")

    @classmethod
    def load(cls, path: str | Path) -> WorkTable:
        path = Path(path)
        data = read_versioned(path, "work table", WORK_VERSION)
        if not isinstance(data.get("models"), dict):
            raise SplitrtError(f"work table {path}: 'models' must be an object of model -> table")
        return cls(str(data.get("unit", "")), str(data.get("source", "")), data["models"])

    def to_dict(self) -> dict[str, Any]:
        return {"format_version": WORK_VERSION, "unit": self.unit, "source": self.source, "models": self.models}

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        return path

    def for_model(self, manifest: Manifest) -> ModelWork:
        """The row of ``manifest``'s model; refused if it was made for another export."""
        row = self.models.get(manifest.model)
        if row is None:
            raise SplitrtError(f"the work table has no row for {manifest.model!r} (has: {', '.join(self.models)})")
        want = row.get("manifest_sha256")
        if want and want != manifest.digest:
            raise SplitrtError(
                f"the work table's {manifest.model} row was made for manifest {want[:12]}, "
                f"this export is {manifest.digest[:12]}"
            )
        arrays = {}
        for key in ("local_flops", "rsu_flops", "sv_flops"):
            values = np.asarray(row.get(key, []), dtype=np.float64)
            if values.shape != (manifest.n_cuts,) or not np.all(np.isfinite(values)) or np.any(values < 0):
                raise SplitrtError(
                    f"the work table's {manifest.model}.{key} must hold {manifest.n_cuts} finite values >= 0 "
                    f"(one per cut), got {values.shape[0] if values.ndim == 1 else values.shape}"
                )
            arrays[key] = values
        return ModelWork(manifest.model, **arrays)
