"""An edge node's settings: `ServerConfig` (units in the names), checked when it is built.

``role``: ``rsu`` (one queue per DNN type, the KKT shares) or ``sv`` (one FIFO). ``discipline``:
how the queues share the node's compute (splitrt.edge_runtime.node.disciplines).
"""

from __future__ import annotations

from dataclasses import dataclass

from splitrt.edge_runtime.compute.speed import MODES as SPEED_MODES
from splitrt.edge_runtime.configfields import setting
from splitrt.edge_runtime.errors import SplitrtError
from splitrt.edge_runtime.link.wire import MAX_HEADER_BYTES, MAX_PAYLOAD_BYTES
from splitrt.edge_runtime.node.disciplines import DISCIPLINE_CLASSES

ROLES = ("rsu", "sv")
DISCIPLINES = tuple(DISCIPLINE_CLASSES)


@dataclass(frozen=True)
class ServerConfig:
    """An edge node's settings (units in the names); every field but ``start_unix_s`` is a
    `splitrt serve` flag, made from its metadata (splitrt.edge_runtime.configfields).

    Filled in after the flags are parsed: ``name`` (empty: `splitrt serve` names the node
    ROLE-PID) and ``start_unix_s`` (from --start-at, once the epoch is known).
    """

    bind: str = setting("tcp://0.0.0.0:5555", help="ZeroMQ endpoint to bind (tcp://127.0.0.1:* picks a free port)")
    role: str = setting("rsu", choices=ROLES, help="rsu: per-type queues + KKT shares; sv: one FIFO")
    name: str = setting("", help="node name reported in replies (default: ROLE-PID)")
    threads: int = setting(1, help="ONNX Runtime intra-op threads per session")
    workers: int = setting(1, help="tasks computed concurrently")
    slot_s: float = setting(1.0, unit="s", help="slot length tau in seconds (allocation period)")
    v: float = setting(10.0, help="Lyapunov trade-off V of the allocation (P3)")
    capacity_flops_per_s: float | None = setting(
        None,
        flag="--capacity-flops",
        metavar="FLOP/S",
        unit="FLOP/s",
        help="RSU compute F = f_rsu_max in FLOP/s (default: workers x mean effective FLOP/s of the models, "
        "from DIR/profile.json when it matches, else a start-up calibration)",
    )
    queue_limit: int = setting(64, help="tasks per queue (queued + running) before 'busy'")
    resolve_s: float | None = setting(
        None, unit="s", help="rsu: re-solve the allocation after arrivals at most this often (default: slot / 10)"
    )
    grace_s: float = setting(10.0, unit="s", help="on shutdown, wait this long for running tasks")
    calibration_runs: int = setting(3, help="timed chain passes per model at start-up")
    providers: tuple[str, ...] = setting(("cpu",), flag="--provider", help="execution provider: cpu, cuda or tensorrt")
    speed_factor: float = setting(1.0, help="emulate a node this many times slower")
    speed_mode: str = setting(
        "auto",
        choices=SPEED_MODES,
        help="how --speed-factor is emulated (pace: each segment takes factor x its profiled time)",
    )
    max_message_bytes: int | None = setting(
        None,
        metavar="BYTES",
        unit="bytes",
        help="largest ZeroMQ frame accepted; a bigger one disconnects its sender (default: the largest cut tensor)",
    )
    start_unix_s: float | None = setting(
        None,
        cli=False,
        unit="s since the Unix epoch",
        help="wall-clock start of slot 0 (None: when the node starts); filled in from --start-at",
    )
    speed_profile_dir: str = setting(
        "",
        metavar="DIR",
        help="pace: reference profiles DIR/<model>/profile.json (default: each --segments DIR's profile.json)",
    )
    discipline: str = setting(
        "sfq",
        choices=DISCIPLINES,
        help="sfq: one task at a time, shares enforced over worker time; containers: one FIFO per type, "
        "each task held until its type's container (at f_k) has done its work (the paper's RSU)",
    )

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise SplitrtError(f"--role must be rsu or sv, got {self.role!r}")
        if self.discipline not in DISCIPLINES:
            raise SplitrtError(f"--discipline must be one of {', '.join(DISCIPLINES)}, got {self.discipline!r}")
        if self.threads < 1 or self.workers < 1:
            raise SplitrtError(f"--threads and --workers must be >= 1, got {self.threads} and {self.workers}")
        if not self.slot_s > 0:
            raise SplitrtError(f"--slot-s must be positive seconds, got {self.slot_s}")
        if not self.v >= 0:
            raise SplitrtError(f"--v must be >= 0, got {self.v}")
        if self.capacity_flops_per_s is not None and not self.capacity_flops_per_s > 0:
            raise SplitrtError(f"--capacity-flops must be positive FLOP/s, got {self.capacity_flops_per_s}")
        if self.queue_limit < 1:
            raise SplitrtError(f"--queue-limit must be >= 1 task, got {self.queue_limit}")
        if self.resolve_s is not None and not self.resolve_s >= 0:
            raise SplitrtError(f"--resolve-s must be >= 0 s, got {self.resolve_s}")
        if self.max_message_bytes is not None and not MAX_HEADER_BYTES <= self.max_message_bytes <= MAX_PAYLOAD_BYTES:
            raise SplitrtError(
                f"--max-message-bytes must be {MAX_HEADER_BYTES}..{MAX_PAYLOAD_BYTES} bytes, got {self.max_message_bytes}"
            )
        if self.grace_s < 0 or self.calibration_runs < 1:
            raise SplitrtError(
                f"grace must be >= 0 s and calibration runs >= 1, got {self.grace_s} s, {self.calibration_runs}"
            )
