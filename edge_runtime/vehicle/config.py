"""A client vehicle's settings (`VehicleConfig`, units in the names, checked when it is built) and
its task arrivals: one task at the start of every slot (the paper's default), or a Poisson process
of RATE tasks per slot (`parse_arrivals`, `arrival_times`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from splitrt.edge_runtime.compute.speed import MODES as SPEED_MODES
from splitrt.edge_runtime.configfields import setting
from splitrt.edge_runtime.errors import SplitrtError
from splitrt.edge_runtime.link.wire import ENCODINGS


def parse_arrivals(spec: str) -> tuple[str, float]:
    """``per-slot`` -> ("per-slot", 1); ``poisson:RATE`` -> ("poisson", RATE tasks per slot)."""
    if spec == "per-slot":
        return "per-slot", 1.0
    kind, _, rate = spec.partition(":")
    if kind == "poisson":
        try:
            value = float(rate)
        except ValueError:
            value = -1.0
        if value > 0:
            return "poisson", value
    raise SplitrtError(f"--arrivals must be per-slot or poisson:RATE (mean tasks per slot, > 0), got {spec!r}")


def arrival_times(spec: str, slots: int, slot_s: float, rng: np.random.Generator) -> list[tuple[float, int]]:
    """(offset seconds from the start, slot index) of every task of a run.

    per-slot: one task at the start of each slot (the paper). poisson:RATE: a Poisson process of
    RATE tasks per slot on average (exponential gaps), over ``slots`` slots.
    """
    kind, rate = parse_arrivals(spec)
    if kind == "per-slot":
        return [(s * slot_s, s) for s in range(slots)]
    out = []
    t = rng.exponential(slot_s / rate)
    while t < slots * slot_s:
        out.append((float(t), int(t // slot_s)))
        t += rng.exponential(slot_s / rate)
    return out


@dataclass(frozen=True)
class VehicleConfig:
    """A client vehicle's settings (units in the names); every field but ``state_lead_s`` is a
    `splitrt vehicle` flag, made from its metadata (splitrt.edge_runtime.configfields)."""

    edges: tuple[str, ...] = setting(
        flag="--edge", repeat=True, metavar="tcp://HOST:PORT", help="an edge node (repeat; order = node index)"
    )
    vehicle_id: str = setting("v0", flag="--id", help="vehicle id (task ids are ID-N)")
    decider: str = setting(
        "greedy",
        help="local | offload[@J] | fixed:K[@J] | greedy[:K] | random | policy:DIR (K = cut, J = node index, "
        "DIR = a trained policy: policy.onnx + policy.json)",
    )
    slots: int = setting(30, help="slots to generate tasks in")
    slot_s: float = setting(1.0, unit="s", help="slot length in seconds")
    arrivals: str = setting("per-slot", help="per-slot (one task per slot) or poisson:RATE (mean tasks per slot)")
    timeout_s: float = setting(5.0, unit="s", help="give up on a node's reply after this long")
    encoding: str = setting("fp32", choices=ENCODINGS, help="payload encoding")
    threads: int = setting(1, help="ONNX Runtime intra-op threads per session")
    providers: tuple[str, ...] = setting(("cpu",), flag="--provider", help="execution provider: cpu, cuda or tensorrt")
    speed_factor: float = setting(1.0, help="emulate a device this many times slower")
    speed_mode: str = setting(
        "auto",
        choices=SPEED_MODES,
        help="cgroup: CPU quota of 1/X (root); stretch: idle X-1 times each segment; pace: every segment takes "
        "X times its profiled time (--speed-profile); auto: cgroup where allowed",
    )
    verify: bool = setting(False, help="compare every result with the whole model's output")
    seed: int = setting(0, help="seed of the inputs and of Poisson arrivals")
    connect_s: float = setting(5.0, unit="s", help="wait this long for the edge connections at start")
    warmup_runs: int = setting(0, help="untimed passes of the whole chain before the start")
    state_lead_s: float = setting(
        0.02, cli=False, unit="s", help="state requests go out this long before every slot boundary"
    )
    late_tolerance_s: float | None = setting(
        None, unit="s", help="a slot boundary noticed later than this is a miss (default: slot / 20)"
    )

    def __post_init__(self) -> None:
        if not self.edges:
            raise SplitrtError("give at least one --edge tcp://HOST:PORT (node 0 is the RSU by convention)")
        if self.slots < 0 or not self.slot_s > 0:
            raise SplitrtError(f"--slots must be >= 0 and --slot-s > 0 s, got {self.slots} and {self.slot_s}")
        if not self.timeout_s > 0:
            raise SplitrtError(f"--timeout-s must be positive seconds, got {self.timeout_s}")
        if not self.connect_s >= 0:
            raise SplitrtError(f"--connect-s must be >= 0 s, got {self.connect_s}")
        if self.encoding not in ENCODINGS:
            raise SplitrtError(f"--encoding must be one of {', '.join(ENCODINGS)}, got {self.encoding!r}")
        if self.warmup_runs < 0 or self.state_lead_s < 0 or (self.late_tolerance_s or 0) < 0:
            raise SplitrtError(
                f"warm-up runs, state lead and late tolerance must be >= 0, got {self.warmup_runs}, "
                f"{self.state_lead_s} s, {self.late_tolerance_s} s"
            )
        if not self.vehicle_id or len(self.vehicle_id) > 64:
            raise SplitrtError(f"--id must be 1..64 characters, got {self.vehicle_id!r}")
        parse_arrivals(self.arrivals)
