"""Vehicle mobility: where every CV and SV is at the start of each slot.

All models share one interface: `Mobility.trajectories(rngs, n_vehicles)` returns the positions of
a whole episode, shape (E, T + 1, V, 2) in metres: [..., 0] = x along the road with the RSU at
x = 0 (traffic drives towards +x), [..., 1] = y across it. The RSU stands at (0, rsu_offset_m)
beside the road; lane l's centre is at y = -(lanes - l - 0.5) * lane_width_m (SUMO's geometry:
lane 0 is the outer lane, the edge line is y = 0). Vehicle order: the CVs, then the SVs. Traffic
does not depend on the offloading decisions, so a whole episode is generated at reset (one
libsumo run per environment for SUMO) and the simulator's step only indexes it.

Vehicles stay in coverage as in the paper: x is folded into [-R, R) (R = coverage_radius_m), so
a vehicle leaving at +R re-enters at -R. For SUMO the road is long and vehicles really drive on;
only the reported x is folded (vehicles on different "laps" never meet in SUMO, so no car is
teleported and car-following / lane changes stay SUMO's own).

- `Highway`: built-in kinematics. Each vehicle gets a uniform start in [-R, R), a uniform lane and
  a constant speed ~ N(mean, std) clipped to the speed range (no car-following: vehicles are
  points, the paper's model has no interaction between them).
- `Sumo`: runs SUMO (libsumo, the eclipse-sumo package's binaries) on the shipped 10 km 3-lane
  highway (policy/data/sumo, built by `build_highway_network` with netconvert) or any network
  whose first edge is a straight road along x. Vehicles are inserted at t = 0 at distinct 50 m
  slots of [0, 2R) (so insertion never conflicts), with our rng's lane and desired speed
  (speedFactor 1, no deviation) and SUMO's own seed drawn from our rng: deterministic.
- `Fcd`: reads a SUMO FCD trace (``--fcd-output``). An episode picks a random start time and V
  vehicles present at every slot of the window; x is folded around ``trace_rsu_x_m``.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from splitrt.edge_runtime.errors import SplitrtError
from splitrt.policy.sim.scenario import DATA_DIR, Scenario

log = logging.getLogger(__name__)

SUMO_DIR = DATA_DIR / "sumo"
SHIPPED_NET = SUMO_DIR / "highway.net.xml"
#: Spacing of the insertion slots of `Sumo` (m): far enough apart for SUMO's safe-insertion check.
INSERT_SPACING_M = 50.0


class Mobility(Protocol):
    def trajectories(self, rngs: Sequence[np.random.Generator], n_vehicles: int) -> np.ndarray:
        """Positions (E, T + 1, V, 2) in m of one episode per generator (see module docstring)."""
        ...


def fold_into_coverage(x_m: np.ndarray, radius_m: float) -> np.ndarray:
    """Wrap coordinates into [-R, R): leaving at +R means re-entering at -R."""
    return np.mod(np.asarray(x_m, dtype=np.float64) + radius_m, 2.0 * radius_m) - radius_m


def lane_y_m(lane: np.ndarray, scenario: Scenario) -> np.ndarray:
    """Centre line y of lane index ``lane`` (0 = outer lane), SUMO's layout."""
    return -(scenario.lanes - np.asarray(lane) - 0.5) * scenario.lane_width_m


def draw_speeds_mps(rng: np.random.Generator, n: int, scenario: Scenario) -> np.ndarray:
    lo, hi = scenario.speed_range_mps
    return np.clip(rng.normal(scenario.mean_speed_mps, scenario.speed_std_mps, n), lo, hi)


class Highway:
    """Built-in unidirectional multi-lane highway (see module docstring)."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario

    def trajectories(self, rngs: Sequence[np.random.Generator], n_vehicles: int) -> np.ndarray:
        sc = self.scenario
        r = sc.coverage_radius_m
        u = np.empty((len(rngs), 2, n_vehicles))
        z = np.empty((len(rngs), n_vehicles))
        for e, rng in enumerate(rngs):  # two generator calls per environment
            u[e] = rng.random((2, n_vehicles))
            z[e] = rng.standard_normal(n_vehicles)
        x0 = -r + 2 * r * u[:, 0]
        lane = np.minimum((u[:, 1] * sc.lanes).astype(np.int64), sc.lanes - 1)
        lo, hi = sc.speed_range_mps
        speed = np.clip(sc.mean_speed_mps + sc.speed_std_mps * z, lo, hi)
        t_s = np.arange(sc.slots + 1) * sc.slot_s
        out = np.empty((len(rngs), sc.slots + 1, n_vehicles, 2))
        out[..., 0] = fold_into_coverage(x0[:, None, :] + speed[:, None, :] * t_s[None, :, None], r)
        out[..., 1] = lane_y_m(lane, sc)[:, None, :]
        return out


# ---- SUMO ----------------------------------------------------------------------------------
def sumo_home() -> str:
    """SUMO_HOME of the installed eclipse-sumo package (exported to the environment if unset)."""
    try:
        import sumo
    except ImportError:
        raise SplitrtError("mobility=sumo needs the eclipse-sumo package: pip install 'splitrt[sim]'") from None
    os.environ.setdefault("SUMO_HOME", sumo.SUMO_HOME)
    return sumo.SUMO_HOME


def sumo_binary(name: str) -> str:
    """A SUMO tool (sumo, netconvert, ...) from the eclipse-sumo package, else from PATH."""
    path = Path(sumo_home()) / "bin" / name
    if path.is_file():
        return str(path)
    found = shutil.which(name)
    if not found:
        raise SplitrtError(f"SUMO tool {name!r} not found under {path.parent} or on PATH")
    return found


def build_highway_network(out_dir: str | Path) -> Path:
    """Rebuild the shipped highway network from its node and edge files with SUMO's netconvert."""
    out = Path(out_dir) / "highway.net.xml"
    subprocess.run(
        [
            sumo_binary("netconvert"),
            "--node-files",
            str(SUMO_DIR / "highway.nod.xml"),
            "--edge-files",
            str(SUMO_DIR / "highway.edg.xml"),
            "--offset.disable-normalization",
            "true",
            "--no-turnarounds",
            "true",
            "-o",
            str(out),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return out


def _first_edge(net_file: Path) -> tuple[str, int, float]:
    """(edge id, lane count, length in m) of the network's first non-internal edge."""
    try:
        root = ET.parse(net_file).getroot()
    except (OSError, ET.ParseError) as exc:
        raise SplitrtError(f"cannot read SUMO network {net_file}: {exc}") from None
    for edge in root.iter("edge"):
        if edge.get("function") == "internal":
            continue
        lanes = edge.findall("lane")
        if lanes:
            return str(edge.get("id")), len(lanes), float(lanes[0].get("length", "0"))
    raise SplitrtError(f"SUMO network {net_file} has no edge with lanes")


class Sumo:
    """SUMO (libsumo) traffic on a straight highway, positions sampled every slot."""

    def __init__(self, scenario: Scenario, fcd_output: str | Path | None = None) -> None:
        self.scenario = scenario
        self.net = Path(scenario.sumo_net) if scenario.sumo_net else SHIPPED_NET
        if not self.net.is_file():
            raise SplitrtError(f"sumo_net {self.net} does not exist")
        self.edge, self.n_lanes, self.length_m = _first_edge(self.net)
        self.fcd_output = Path(fcd_output) if fcd_output else None
        r = scenario.coverage_radius_m
        needed = 2 * r + scenario.slots * scenario.slot_s * scenario.speed_range_mps[1] * 1.1
        if self.length_m < needed:
            raise SplitrtError(
                f"SUMO network {self.net}: edge {self.edge!r} is {self.length_m:.0f} m, but {scenario.slots} slots of "
                f"{scenario.slot_s} s at up to {scenario.speed_range_mps[1]} m/s from [0, {2 * r:.0f}) m need {needed:.0f} m"
            )

    def trajectories(self, rngs: Sequence[np.random.Generator], n_vehicles: int) -> np.ndarray:
        return np.stack([self.run(rng, n_vehicles, index=e) for e, rng in enumerate(rngs)])

    def run(self, rng: np.random.Generator, n_vehicles: int, index: int = 0) -> np.ndarray:
        """One SUMO run: (T + 1, V, 2) positions, x folded into coverage."""
        sc = self.scenario
        r = sc.coverage_radius_m
        n_slots_road = int(2 * r // INSERT_SPACING_M)
        lanes = min(sc.lanes, self.n_lanes)
        if n_vehicles > n_slots_road * lanes:
            raise SplitrtError(
                f"mobility=sumo: {n_vehicles} vehicles do not fit {lanes} lanes x {2 * r:.0f} m at {INSERT_SPACING_M} m spacing"
            )
        chosen = rng.choice(n_slots_road * lanes, size=n_vehicles, replace=False)
        lane = chosen % lanes
        depart_m = (chosen // lanes + 0.5) * INSERT_SPACING_M + rng.uniform(-10.0, 10.0, n_vehicles)
        speed = draw_speeds_mps(rng, n_vehicles, sc)
        sumo_seed = int(rng.integers(0, 2**31 - 1))
        raw = self._simulate(lane, depart_m, speed, sumo_seed, index)
        raw[..., 0] = fold_into_coverage(raw[..., 0] - sc.trace_rsu_x_m, r)
        return raw

    def _simulate(
        self, lane: np.ndarray, depart_m: np.ndarray, speed: np.ndarray, sumo_seed: int, index: int
    ) -> np.ndarray:
        sumo_home()
        import libsumo as traci

        sc = self.scenario
        cmd = [
            sumo_binary("sumo"),
            "-n",
            str(self.net),
            "--step-length",
            repr(float(sc.slot_s)),
            "--seed",
            str(sumo_seed),
            "--begin",
            "0",
            "--no-step-log",
            "true",
            "--no-warnings",
            "true",
            "--duration-log.disable",
            "true",
        ]
        if self.fcd_output is not None:
            out = self.fcd_output if index == 0 else self.fcd_output.with_suffix(f".{index}.xml")
            cmd += ["--fcd-output", str(out)]
        n = len(lane)
        ids = [f"veh{i}" for i in range(n)]
        positions = np.empty((sc.slots + 1, n, 2))
        traci.start(cmd)
        try:
            traci.route.add("splitrt_route", [self.edge])
            traci.vehicletype.copy("DEFAULT_VEHTYPE", "splitrt_car")
            traci.vehicletype.setSpeedFactor("splitrt_car", 1.0)
            traci.vehicletype.setSpeedDeviation("splitrt_car", 0.0)
            # Front vehicles first: each new one then only adapts to a leader already on the road
            # (inserting in front of a follower can be refused by SUMO's safe-gap check).
            for i in np.argsort(-depart_m, kind="stable"):
                vid = ids[i]
                traci.vehicle.add(
                    vid,
                    "splitrt_route",
                    typeID="splitrt_car",
                    depart="0",
                    departLane=str(int(lane[i])),
                    departPos=f"{depart_m[i]:.3f}",
                    departSpeed="max",  # the safe speed up to the vehicle maximum: never refused
                )
                traci.vehicle.setMaxSpeed(vid, float(speed[i]))
            for t in range(sc.slots + 1):
                traci.simulationStep()
                present = set(traci.vehicle.getIDList())
                missing = [v for v in ids if v not in present]
                if missing:
                    raise SplitrtError(
                        f"SUMO on {self.net}: vehicle(s) {', '.join(missing[:5])} not on the road at slot {t} "
                        "(insertion refused or the road ended)"
                    )
                for i, vid in enumerate(ids):
                    positions[t, i] = traci.vehicle.getPosition(vid)
        finally:
            traci.close()
        return positions


# ---- FCD traces ------------------------------------------------------------------------------
def read_fcd(path: str | Path) -> tuple[np.ndarray, list[str], np.ndarray]:
    """A SUMO FCD trace as (times (n_t,), vehicle ids, positions (n_t, n_ids, 2) with NaN where absent)."""
    path = Path(path)
    if not path.is_file():
        raise SplitrtError(f"FCD trace {path} does not exist")
    times: list[float] = []
    rows: list[dict[str, tuple[float, float]]] = []
    try:
        for _, elem in ET.iterparse(path, events=("end",)):
            if elem.tag == "timestep":
                rows.append(
                    {
                        v.get("id", ""): (float(v.get("x", "nan")), float(v.get("y", "nan")))
                        for v in elem.iter("vehicle")
                    }
                )
                times.append(float(elem.get("time", "nan")))
                elem.clear()
    except (ET.ParseError, ValueError) as exc:
        raise SplitrtError(f"cannot read FCD trace {path}: {exc}") from None
    if not times:
        raise SplitrtError(f"FCD trace {path} has no <timestep> elements")
    ids = sorted({vid for row in rows for vid in row})
    index = {vid: i for i, vid in enumerate(ids)}
    pos = np.full((len(times), len(ids), 2), np.nan)
    for t, row in enumerate(rows):
        for vid, xy in row.items():
            pos[t, index[vid]] = xy
    return np.array(times), ids, pos


class Fcd:
    """Episodes cut from a SUMO FCD trace (see module docstring)."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.path = Path(scenario.fcd_file)
        times, self.ids, pos = read_fcd(self.path)
        # Keep the timesteps on the slot grid of the trace's first time.
        k = (times - times[0]) / scenario.slot_s
        on_grid = np.abs(k - np.round(k)) < 1e-6
        grid = np.round(k[on_grid]).astype(np.int64)
        n_grid = int(grid.max()) + 1
        self.pos = np.full((n_grid, len(self.ids), 2), np.nan)
        self.pos[grid] = pos[on_grid]
        self.t0_s = float(times[0])

    def trajectories(self, rngs: Sequence[np.random.Generator], n_vehicles: int) -> np.ndarray:
        return np.stack([self.episode(rng, n_vehicles) for rng in rngs])

    def episode(self, rng: np.random.Generator, n_vehicles: int) -> np.ndarray:
        sc = self.scenario
        n = sc.slots + 1
        present = ~np.isnan(self.pos[..., 0])  # (n_grid, n_ids)
        starts = []
        if len(self.pos) >= n:
            window = np.lib.stride_tricks.sliding_window_view(present, n, axis=0).all(axis=-1)  # (n_start, n_ids)
            starts = np.flatnonzero(window.sum(axis=1) >= n_vehicles)
        if len(starts) == 0:
            raise SplitrtError(
                f"FCD trace {self.path}: no window of {n} slots of {sc.slot_s} s with {n_vehicles} vehicles present "
                f"throughout ({len(self.ids)} vehicles, {len(self.pos)} slots on the grid)"
            )
        start = int(rng.choice(starts))
        eligible = np.flatnonzero(present[start : start + n].all(axis=0))
        chosen = rng.choice(eligible, size=n_vehicles, replace=False)
        out = self.pos[start : start + n][:, chosen].copy()
        out[..., 0] = fold_into_coverage(out[..., 0] - sc.trace_rsu_x_m, sc.coverage_radius_m)
        return out


def make_mobility(scenario: Scenario) -> Mobility:
    if scenario.mobility == "highway":
        return Highway(scenario)
    if scenario.mobility == "sumo":
        return Sumo(scenario)
    return Fcd(scenario)
