"""The per-slot link state of one vehicle: where it and the SVs are, the channel rate to every edge
node (eqs 1-2) and which nodes it may offload to (eq 25).

On a road this comes from the vehicle's GPS, the SVs' broadcast positions and a rate estimate. In
an emulated experiment (`splitrt hil`) it is the simulator's episode for the same scenario and
seed: the mobility model's positions and the Rayleigh fading of every link and slot. The same
rates shape the emulated links (tools/hil/linkem.py), so what the vehicle observes is what its
packets experience. `splitrt vehicle --trace FILE` reads it; slot t of the experiment reads row t
(the last row beyond the end).

JSON (``trace.json``):

| key | meaning | unit |
|---|---|---|
| ``format_version`` | 1 | |
| ``vehicle`` | the vehicle id it was made for | |
| ``slot_s``, ``slots``, ``n_nodes`` | tau, rows T, J (node 0 = RSU, 1..J-1 = SVs) | s, -, - |
| ``pos_m`` | (T,) own position along the road (RSU at 0) | m |
| ``sv_pos_m`` | (T, J-1) every SV's position along the road | m |
| ``rate_bps`` | (T, J) channel rate to every node (eqs 1-2, fading included) | bit/s |
| ``node_ok`` | (T, J) node usable: the RSU always, an SV within the V2V radius (eq 25) | bool |
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from splitrt.edge_runtime.errors import SplitrtError
from splitrt.edge_runtime.formats.jsonfile import read_versioned

TRACE_VERSION = 1


@dataclass(frozen=True, eq=False)
class LinkState:
    """One slot of a trace; arrays over nodes have length J, over SVs J - 1."""

    pos_m: float
    sv_pos_m: np.ndarray
    rate_bps: np.ndarray
    node_ok: np.ndarray


@dataclass(frozen=True, eq=False)
class LinkTrace:
    """A vehicle's link state for every slot (see the module docstring)."""

    vehicle: str
    slot_s: float
    pos_m: np.ndarray  # (T,)
    sv_pos_m: np.ndarray  # (T, J-1)
    rate_bps: np.ndarray  # (T, J)
    node_ok: np.ndarray  # (T, J) bool

    def __post_init__(self) -> None:
        t = len(self.pos_m)
        j = self.rate_bps.shape[-1] if self.rate_bps.ndim == 2 else 0
        if (
            t < 1
            or j < 1
            or self.sv_pos_m.shape != (t, j - 1)
            or self.rate_bps.shape != (t, j)
            or self.node_ok.shape != (t, j)
        ):
            raise SplitrtError(
                f"trace of {self.vehicle!r}: shapes pos {self.pos_m.shape}, sv_pos {self.sv_pos_m.shape}, "
                f"rate {self.rate_bps.shape}, node_ok {self.node_ok.shape} do not fit T slots x J nodes"
            )
        if not np.all(self.rate_bps > 0) or not np.all(np.isfinite(self.rate_bps)):
            raise SplitrtError(f"trace of {self.vehicle!r}: every rate must be a positive number of bit/s")

    @property
    def slots(self) -> int:
        return len(self.pos_m)

    @property
    def n_nodes(self) -> int:
        return self.rate_bps.shape[1]

    def at(self, slot: int) -> LinkState:
        t = min(max(int(slot), 0), self.slots - 1)
        return LinkState(float(self.pos_m[t]), self.sv_pos_m[t], self.rate_bps[t], self.node_ok[t])

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": TRACE_VERSION,
            "vehicle": self.vehicle,
            "slot_s": self.slot_s,
            "slots": self.slots,
            "n_nodes": self.n_nodes,
            "pos_m": self.pos_m.tolist(),
            "sv_pos_m": self.sv_pos_m.tolist(),
            "rate_bps": self.rate_bps.tolist(),
            "node_ok": self.node_ok.astype(bool).tolist(),
        }

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), separators=(",", ":")) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> LinkTrace:
        path = Path(path)
        data = read_versioned(path, "trace", TRACE_VERSION)
        try:
            j = int(data["n_nodes"])
            return cls(
                vehicle=str(data.get("vehicle", "")),
                slot_s=float(data["slot_s"]),
                pos_m=np.asarray(data["pos_m"], dtype=np.float64),
                sv_pos_m=np.asarray(data["sv_pos_m"], dtype=np.float64).reshape(len(data["pos_m"]), j - 1),
                rate_bps=np.asarray(data["rate_bps"], dtype=np.float64),
                node_ok=np.asarray(data["node_ok"], dtype=bool),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise SplitrtError(f"trace {path}: {type(exc).__name__}: {exc}") from None
