"""Scenario configuration of the simulator: one frozen dataclass, named presets, CLI overrides.

`Scenario` holds every parameter of the paper's system model (SYSTEM_MODEL.md, Table I) plus the
choices the paper leaves open, each with its unit in the name and a help text (shown by
`splitrt evaluate --show-scenario`). Presets:

- ``paper``: Table I. B = 10 MHz, sigma^2 = -114 dBm, p = 23 dBm, f_loc ~ U[4, 6] GHz, f_veh ~
  U[6, 8] GHz, f_rsu = 30 GHz (GHz read as GFLOP/s), V2V radius 150 m, mean speed 25 m/s, T = 30
  slots of tau = 1 s, V = 10, 5 CVs and 5 SVs, AlexNet / ResNet18 / VGG16. Workloads are the
  shipped manifests' eq (6) FLOPs.
- ``calibrated``: the same network, but every per-cut compute time comes from ONNX Runtime profiles
  measured on this workstation (policy/data/profiles, 1 thread) and the device speeds keep the
  paper's ratios around this machine's measured speed (the RSU is this machine; vehicles are
  4/30..6/30 and SVs 6/30..8/30 of it, i.e. the speed factors a one-workstation live experiment
  applies). The slot is shortened by the same factor (tau = 30 GFLOP / f_measured) so that the
  load per slot relative to capacity is the paper's (SYSTEM_MODEL.md "Scale check"); the radio
  is unchanged, so transmission takes a larger share of a slot than in the paper.
  `calibrated_scenario` builds the same from any vehicle / RSU profile directories.

Choices the paper does not state (documented here once, used by policy/sim/mobility.py and
policy/sim/slot.py):

- RSU coverage radius 500 m (the distance where SYSTEM_MODEL.md quotes ~140 Mbit/s); the road
  segment under coverage is x in [-500, 500) m with the RSU at x = 0, 10 m beside the road.
- 3 lanes of 3.2 m (SUMO's default width), unidirectional, lane centres at y = -1.6, -4.8, -8.0 m.
- Vehicles stay in coverage by wrap-around: one leaving at x = +R re-enters at x = -R (a new
  vehicle taking its place; its queue carries over). Speeds ~ N(25, 2.5) m/s clipped to [20, 30].
- Device speeds are drawn once per vehicle per episode.
- DNN types are assigned to CVs round-robin: CV i runs ``models[i % K]`` (5 CVs: AlexNet,
  ResNet18, VGG16, AlexNet, ResNet18).
- Arrivals: ``paper`` = one task per CV per slot; ``bernoulli`` = one task with probability
  ``arrival_rate_per_slot``; ``poisson`` = Poisson(``arrival_rate_per_slot``) tasks. A CV's tasks of
  one slot follow its one decision as one job (m tasks = m x the FLOPs and bytes).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from splitrt.edge_runtime.configfields import helps as field_helps
from splitrt.edge_runtime.configfields import setting
from splitrt.edge_runtime.errors import SplitrtError
from splitrt.edge_runtime.sysmodel.channel import V2I_GAIN_DB, V2V_GAIN_DB
from splitrt.policy.sim.profiles import DATA_DIR, reference_speed_flops_per_s

ARRIVALS = ("paper", "bernoulli", "poisson")
SIM_MODELS = ("paper", "as-run")
MOBILITY = ("highway", "sumo", "fcd")


def _f(default: Any, help: str) -> Any:
    """A scenario setting: set with ``--set KEY=VALUE`` (`parse_overrides`), not a flag of its own;
    the same field metadata as every other config (splitrt.edge_runtime.configfields)."""
    return setting(default, help=help, cli=False)


@dataclass(frozen=True)
class Scenario:
    """Every parameter of one simulated network. See the module docstring for the choices."""

    name: str = _f("paper", "preset this scenario came from")
    n_cvs: int = _f(5, "client vehicles (agents), each generating DNN tasks")
    n_svs: int = _f(5, "service vehicles (edge nodes 1..J-1)")
    models: tuple[str, ...] = _f(("alexnet", "resnet18", "vgg16"), "DNN types K; CV i runs models[i % K]")
    slots: int = _f(30, "episode length T in slots")
    slot_s: float = _f(1.0, "slot length tau in seconds")
    v: float = _f(10.0, "Lyapunov trade-off V (delay weight against queue backlog)")
    bandwidth_hz: float = _f(10e6, "channel bandwidth B in Hz")
    noise_dbm: float = _f(-114.0, "noise power sigma^2 in dBm")
    tx_power_dbm: float = _f(23.0, "CV transmit power p in dBm")
    v2i_gain_intercept_db: float = _f(V2I_GAIN_DB[0], "V2I path gain intercept in dB (eq 2)")
    v2i_gain_slope_db: float = _f(V2I_GAIN_DB[1], "V2I path gain per decade of distance in dB (eq 2)")
    v2v_gain_intercept_db: float = _f(V2V_GAIN_DB[0], "V2V path gain intercept in dB (eq 2)")
    v2v_gain_slope_db: float = _f(V2V_GAIN_DB[1], "V2V path gain per decade of distance in dB (eq 2)")
    cv_flops_per_s: tuple[float, float] = _f((4e9, 6e9), "CV compute f_loc ~ U[lo, hi] in FLOP/s")
    sv_flops_per_s: tuple[float, float] = _f((6e9, 8e9), "SV compute f_veh ~ U[lo, hi] in FLOP/s")
    rsu_flops_per_s: float = _f(30e9, "RSU compute f_rsu_max in FLOP/s, shared by DNN types (eq 26)")
    rsu_floor_flops_per_s: float = _f(0.0, "compute kept for a DNN type with no work (P3 edge case)")
    v2v_radius_m: float = _f(150.0, "V2V radius in m: SVs farther away are masked (eq 25)")
    coverage_radius_m: float = _f(500.0, "RSU coverage radius in m (road segment [-R, R))")
    rsu_offset_m: float = _f(10.0, "lateral distance of the RSU from the road edge in m")
    lanes: int = _f(3, "lanes of the unidirectional highway")
    lane_width_m: float = _f(3.2, "lane width in m")
    mean_speed_mps: float = _f(25.0, "mean vehicle speed in m/s")
    speed_std_mps: float = _f(2.5, "standard deviation of vehicle speeds in m/s")
    speed_range_mps: tuple[float, float] = _f((20.0, 30.0), "vehicle speeds are clipped to [lo, hi] m/s")
    arrivals: str = _f("paper", "task arrivals: paper (1 per CV per slot), bernoulli or poisson")
    arrival_rate_per_slot: float = _f(1.0, "Bernoulli probability or Poisson mean of tasks per CV per slot")
    mobility: str = _f("highway", "highway (built-in), sumo (run SUMO) or fcd (read a SUMO FCD trace)")
    sumo_net: str = _f("", "SUMO network for mobility=sumo ('' = the shipped 3-lane highway)")
    fcd_file: str = _f("", "SUMO FCD trace (XML) for mobility=fcd")
    trace_rsu_x_m: float = _f(500.0, "x of the RSU in SUMO/FCD coordinates; x is folded into [x-R, x+R)")
    manifest_dir: str = _f("", "directory of manifests (<model>.json or <model>/manifest.json); '' = shipped")
    vehicle_profile_dir: str = _f("", "profiles measured on a vehicle (per-cut local/SV times); '' = eq 6 FLOPs")
    rsu_profile_dir: str = _f("", "profiles measured on the RSU (per-cut edge times); '' = eq 6 FLOPs")
    sim_model: str = _f("paper", "slot model: paper (eqs 3-17) or as-run (the runtime's queues event by event)")
    calibration_file: str = _f("", "the as-run model's overheads (OUT/calibration.json of splitrt hil); '' = none")

    def __post_init__(self) -> None:
        def bad(name: str, value: Any, why: str) -> SplitrtError:
            return SplitrtError(f"scenario {self.name!r}: {name} = {value!r} {why}")

        for name in ("n_cvs", "slots", "lanes"):
            if getattr(self, name) < 1:
                raise bad(name, getattr(self, name), "must be >= 1")
        if self.n_svs < 0:
            raise bad("n_svs", self.n_svs, "must be >= 0")
        if not self.models:
            raise bad("models", self.models, "must name at least one DNN")
        positive = (
            "slot_s",
            "bandwidth_hz",
            "rsu_flops_per_s",
            "v2v_radius_m",
            "coverage_radius_m",
            "lane_width_m",
            "mean_speed_mps",
        )
        for name in positive:
            if not getattr(self, name) > 0:
                raise bad(name, getattr(self, name), "must be > 0")
        for name in ("v", "rsu_floor_flops_per_s", "speed_std_mps", "rsu_offset_m"):
            if getattr(self, name) < 0:
                raise bad(name, getattr(self, name), "must be >= 0")
        for name in ("cv_flops_per_s", "sv_flops_per_s", "speed_range_mps"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise bad(name, (lo, hi), "must satisfy 0 < lo <= hi")
        if self.rsu_floor_flops_per_s * len(set(self.models)) >= self.rsu_flops_per_s:
            raise bad("rsu_floor_flops_per_s", self.rsu_floor_flops_per_s, "x K types leaves the RSU nothing")
        if self.arrivals not in ARRIVALS:
            raise bad("arrivals", self.arrivals, f"is not one of {', '.join(ARRIVALS)}")
        if self.arrivals == "bernoulli" and not 0 < self.arrival_rate_per_slot <= 1:
            raise bad("arrival_rate_per_slot", self.arrival_rate_per_slot, "must be a probability in (0, 1]")
        if self.arrivals == "poisson" and not self.arrival_rate_per_slot > 0:
            raise bad("arrival_rate_per_slot", self.arrival_rate_per_slot, "tasks/slot must be > 0")
        if self.sim_model not in SIM_MODELS:
            raise bad("sim_model", self.sim_model, f"is not one of {', '.join(SIM_MODELS)}")
        if self.sim_model == "as-run" and self.arrivals != "paper":
            raise bad(
                "sim_model", self.sim_model, "replays the runtime's one task per CV per slot: needs arrivals = paper"
            )
        if self.mobility not in MOBILITY:
            raise bad("mobility", self.mobility, f"is not one of {', '.join(MOBILITY)}")
        if self.mobility == "fcd" and not self.fcd_file:
            raise bad("fcd_file", self.fcd_file, "must name a SUMO FCD trace when mobility = fcd")
        if bool(self.vehicle_profile_dir) != bool(self.rsu_profile_dir):
            raise bad(
                "vehicle_profile_dir/rsu_profile_dir",
                (self.vehicle_profile_dir, self.rsu_profile_dir),
                "must be given together (both profile-calibrated, or both eq 6 FLOPs)",
            )

    # ---- derived ---------------------------------------------------------------------------
    @property
    def n_nodes(self) -> int:
        """J: the RSU plus every SV."""
        return 1 + self.n_svs

    @property
    def types(self) -> tuple[str, ...]:
        """The K distinct DNN types, in first-use order (the RSU keeps one queue per type)."""
        return tuple(dict.fromkeys(self.models))

    def cv_models(self) -> list[str]:
        """The DNN of every CV (round-robin over ``models``)."""
        return [self.models[i % len(self.models)] for i in range(self.n_cvs)]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "scenario") -> Scenario:
        """The inverse of `to_dict` (JSON lists become tuples); ``source`` names the file in errors."""
        hints = typing.get_type_hints(cls)
        unknown = sorted(set(data) - set(hints))
        if unknown:
            raise SplitrtError(f"{source}: unknown scenario setting(s) {', '.join(unknown)}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        try:
            return cls(**values)
        except TypeError as exc:
            raise SplitrtError(f"{source}: {exc}") from None

    def replace(self, **changes: Any) -> Scenario:
        return dataclasses.replace(self, **changes)


# ---- presets ---------------------------------------------------------------------------------
SHIPPED_PROFILES = DATA_DIR / "profiles"

#: The paper's compute figures, used to keep the calibrated preset in the paper's ratios.
PAPER_RSU_FLOPS_PER_S = 30e9


def paper(**overrides: Any) -> Scenario:
    """Table I (see the module docstring)."""
    return Scenario(name="paper", **overrides)


def calibrated_scenario(
    vehicle_profile_dir: str | Path,
    rsu_profile_dir: str | Path,
    *,
    paper_ratios: bool,
    manifest_dir: str | Path = "",
    **overrides: Any,
) -> Scenario:
    """A scenario whose per-cut compute times are measured ones.

    Per-cut work is measured seconds x the profiled device's reference speed (splitrt.policy.sim.workloads),
    so a device running at that speed reproduces the measured times exactly. With
    ``paper_ratios`` (one workstation standing in for every device) the RSU runs at the measured
    speed, CVs at 4/30..6/30 and SVs at 6/30..8/30 of it, and the slot shrinks by the same factor;
    otherwise vehicles run at the vehicle profile's speed and the RSU at the RSU profile's.
    """
    types = tuple(dict.fromkeys(overrides.get("models", Scenario().models)))
    f_veh = reference_speed_flops_per_s(vehicle_profile_dir, types, manifest_dir)
    f_rsu = reference_speed_flops_per_s(rsu_profile_dir, types, manifest_dir)
    p = Scenario()
    if paper_ratios:
        scale = f_rsu / PAPER_RSU_FLOPS_PER_S
        speeds = {
            "rsu_flops_per_s": f_rsu,
            "cv_flops_per_s": (p.cv_flops_per_s[0] * scale, p.cv_flops_per_s[1] * scale),
            "sv_flops_per_s": (p.sv_flops_per_s[0] * scale, p.sv_flops_per_s[1] * scale),
            "slot_s": p.slot_s / scale,
        }
    else:
        speeds = {"rsu_flops_per_s": f_rsu, "cv_flops_per_s": (f_veh, f_veh), "sv_flops_per_s": (f_veh, f_veh)}
    values = {
        "name": "calibrated",
        "vehicle_profile_dir": str(vehicle_profile_dir),
        "rsu_profile_dir": str(rsu_profile_dir),
        "manifest_dir": str(manifest_dir),
        **speeds,
        **overrides,
    }
    return Scenario(**values)


def calibrated(**overrides: Any) -> Scenario:
    """The profiles measured on this workstation, device speeds in the paper's ratios."""
    return calibrated_scenario(SHIPPED_PROFILES, SHIPPED_PROFILES, paper_ratios=True, **overrides)


#: The live demo's DNN types: light enough for 3 CVs, 2 SVs and an RSU as processes on 2 cores
#: (VGG16 is ~10x ResNet18's compute and would saturate them).
DEMO_MODELS = ("alexnet", "resnet18", "mobilenet_v2")
#: The overload preset's slot as a fraction of the demo's: the same tasks arrive 2.5x as often.
OVERLOAD_SLOT_FRACTION = 0.4


def demo(**overrides: Any) -> Scenario:
    """The live demo (`make demo`, `splitrt hil --preset demo`): 3 CVs and 2 SVs with AlexNet /
    ResNet18 / MobileNetV2, profiles measured on this workstation, device speeds in the paper's
    ratios and the slot shortened like ``calibrated``'s; 40 slots."""
    values = {"n_cvs": 3, "n_svs": 2, "models": DEMO_MODELS, "slots": 40, **overrides}
    return calibrated_scenario(SHIPPED_PROFILES, SHIPPED_PROFILES, paper_ratios=True, name="demo", **values)


def overload(**overrides: Any) -> Scenario:
    """``demo`` with tasks arriving 2.5x as often (slot x `OVERLOAD_SLOT_FRACTION`): a CV cannot
    run its own DNN within a slot, so local queues must grow while offloading keeps them bounded
    (the live check of the Lyapunov controller)."""
    base = demo()
    return base.replace(**{"name": "overload", "slot_s": base.slot_s * OVERLOAD_SLOT_FRACTION, **overrides})


PRESETS = {"paper": paper, "calibrated": calibrated, "demo": demo, "overload": overload}


def preset(name: str, **overrides: Any) -> Scenario:
    if name not in PRESETS:
        raise SplitrtError(f"unknown scenario preset {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[name](**overrides)


# ---- KEY=VALUE overrides (CLI) ---------------------------------------------------------------
def _coerce(name: str, text: str, kind: Any) -> Any:
    origin = typing.get_origin(kind)
    try:
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
        if kind is str:
            return text
        if origin is tuple:
            args = typing.get_args(kind)
            parts = [p.strip() for p in text.replace(":", ",").split(",") if p.strip()]
            if len(args) == 2 and args[1] is Ellipsis:
                return tuple(_coerce(name, p, args[0]) for p in parts)
            if len(parts) != len(args):
                raise ValueError(f"needs {len(args)} comma-separated values")
            return tuple(_coerce(name, p, a) for p, a in zip(parts, args, strict=True))
    except ValueError as exc:
        raise SplitrtError(f"--set {name}={text!r}: {exc}") from None
    raise SplitrtError(f"--set {name}: cannot parse a value of type {kind}")


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["n_svs=3", "cv_flops_per_s=4e9,6e9"]`` -> typed values, checked against `Scenario`'s fields."""
    hints = typing.get_type_hints(Scenario)
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise SplitrtError(f"--set {pair!r} must look like KEY=VALUE")
        key, text = (s.strip() for s in pair.split("=", 1))
        if key not in hints or key == "name":
            raise SplitrtError(
                f"--set {key!r} is not a scenario setting; known: {', '.join(k for k in hints if k != 'name')}"
            )
        out[key] = _coerce(key, text, hints[key])
    return out


def describe(scenario: Scenario) -> str:
    """A table of every setting: name, value, help (for ``--show-scenario``)."""
    helps = field_helps(Scenario)
    rows = [(f.name, repr(getattr(scenario, f.name)), helps[f.name]) for f in dataclasses.fields(scenario)]
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    return "\n".join(f"{a:<{w0}}  {b:<{w1}}  {c}" for a, b, c in rows)
