"""Device speed emulation: make this host compute X times slower, to stand in for a Pi or an SV.

Two mechanisms, chosen by ``mode``:

``cgroup``  The whole process is moved into its own CPU cgroup whose CFS bandwidth quota is
            1/X of the CPUs it would otherwise use (``cpus`` = its ONNX Runtime threads): with
            period P, quota = P * cpus / X. Everything the process does (segments, encoding,
            the link) is slowed alike, as on a slower board. cgroup v1 (``/sys/fs/cgroup/cpu``,
            files ``cpu.cfs_period_us`` / ``cpu.cfs_quota_us``) and v2 (``cpu.max``) are
            supported; both need root (or a delegated subtree). The period is 10 ms (so a 5 ms
            segment is throttled within its own run, not once per 100 ms) unless X demands a
            longer one (the kernel's minimum quota is 1 ms). The quota caps CPU time: the
            slowdown is exactly X when the process would otherwise get its ``cpus`` CPUs to
            itself, and less when other processes already hold it below that (measure it with
            ``splitrt bench --only speed_emulation``).
``stretch`` After every segment the runner idles (X - 1) times the segment's measured compute
            (splitrt.edge_runtime.compute.segments.SegmentRunner ``speed_factor``): exactly X on the segments,
            whatever the load, but encoding and the link run at native speed, and the CPU is
            free while idling.
``pace``    Every segment ends X times its reference time after it started (the reference is the
            device's own profile on this host, `pace_times`): the emulated device has exactly
            the profiled speed / X whatever else runs, as long as the host still computes each
            segment within X times its reference (below saturation it does). Measured here: a
            CPU quota of 1/5.5 made AlexNet 0.99x, ResNet18 1.22x and MobileNetV2 1.32x slower
            than the factor asked (throttling a 10 ms period costs short segments most), and
            stretching amplifies contention: three vehicles starting their heads together on 2
            cores each measured ~1.5x their compute and then idled 4.5x that. The caller passes
            the times to SegmentRunner (``pace_s``); encoding and the link run natively.
``auto``    cgroup where the kernel and privileges allow it, else stretch (logged).

`SpeedEmulation.apply()` returns the ``speed_factor`` to give SegmentRunner (X for stretch, 1
for cgroup) and `close()` moves the process back and removes its group. Profiles measured under
emulation record ``speed_factor`` and ``speed_mode`` (splitrt.edge_runtime.compute.profile).
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from splitrt.edge_runtime.errors import SplitrtError

log = logging.getLogger(__name__)

MODES = ("auto", "cgroup", "stretch", "pace")
CGROUP_V1_CPU = Path("/sys/fs/cgroup/cpu")
CGROUP_V2 = Path("/sys/fs/cgroup")
PERIOD_US = 10_000
MIN_QUOTA_US = 1_000
GROUP_PREFIX = "splitrt-"


def cgroup_root() -> tuple[Path, int] | None:
    """(directory, version) of a writable CPU-bandwidth cgroup hierarchy, or None."""
    if (CGROUP_V1_CPU / "cpu.cfs_quota_us").exists() and os.access(CGROUP_V1_CPU, os.W_OK):
        return CGROUP_V1_CPU, 1
    controllers = CGROUP_V2 / "cgroup.controllers"
    if controllers.exists() and "cpu" in controllers.read_text().split() and os.access(CGROUP_V2, os.W_OK):
        return CGROUP_V2, 2
    return None


def quota_for(factor: float, cpus: int) -> tuple[int, int]:
    """(quota_us, period_us) giving ``cpus / factor`` CPUs of bandwidth."""
    period = PERIOD_US
    quota = round(period * cpus / factor)
    if quota < MIN_QUOTA_US:
        period = round(MIN_QUOTA_US * factor / cpus)
        quota = round(period * cpus / factor)
    return quota, period


@dataclass
class SpeedEmulation:
    """Emulate a device ``factor`` times slower (see the module docstring)."""

    factor: float = 1.0
    mode: str = "auto"
    cpus: int = 1
    group: Path | None = None
    applied_mode: str = "none"

    def __post_init__(self) -> None:
        if not self.factor >= 1.0:
            raise SplitrtError(f"--speed-factor must be >= 1 (1 = native speed), got {self.factor}")
        if self.mode not in MODES:
            raise SplitrtError(f"--speed-mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.cpus < 1:
            raise SplitrtError(f"speed emulation needs cpus >= 1, got {self.cpus}")

    def apply(self) -> float:
        """Start emulating; returns the ``speed_factor`` for SegmentRunner."""
        if self.factor == 1.0:
            self.applied_mode = "none"
            return 1.0
        if self.mode == "pace":  # the runner paces each segment (pace_times); nothing to set up here
            self.applied_mode = "pace"
            return 1.0
        root = cgroup_root()
        if self.mode == "stretch" or (self.mode == "auto" and root is None):
            if self.mode == "auto":
                log.info("no writable CPU cgroup here: emulating speed factor %g by stretching segments", self.factor)
            self.applied_mode = "stretch"
            return self.factor
        if root is None:
            raise SplitrtError(
                f"--speed-mode cgroup needs a writable CPU cgroup ({CGROUP_V1_CPU} or {CGROUP_V2} with the cpu "
                "controller, usually root); use --speed-mode stretch"
            )
        self._enter_cgroup(*root)
        self.applied_mode = "cgroup"
        return 1.0

    def _enter_cgroup(self, root: Path, version: int) -> None:
        remove_stale_groups(root)
        group = root / f"{GROUP_PREFIX}{os.getpid()}"
        quota, period = quota_for(self.factor, self.cpus)
        try:
            group.mkdir(exist_ok=True)
            if version == 1:
                (group / "cpu.cfs_period_us").write_text(f"{period}\n")
                (group / "cpu.cfs_quota_us").write_text(f"{quota}\n")
            else:
                (group / "cpu.max").write_text(f"{quota} {period}\n")
            (group / "cgroup.procs").write_text(f"{os.getpid()}\n")
        except OSError as exc:
            _remove(group, root)
            raise SplitrtError(f"cannot set up CPU cgroup {group}: {exc}; use --speed-mode stretch") from None
        self.group = group
        log.info(
            "speed factor %g: process %d in %s, quota %d us per %d us", self.factor, os.getpid(), group, quota, period
        )

    def close(self) -> None:
        """Move the process back to the parent group and remove its own (idempotent)."""
        if self.group is None:
            return
        _remove(self.group, self.group.parent)
        self.group = None

    def describe(self) -> dict[str, object]:
        return {"speed_factor": self.factor, "speed_mode": self.applied_mode}

    def __enter__(self) -> SpeedEmulation:
        self.apply()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def pace_times(reference_segment_s: np.ndarray, factor: float) -> np.ndarray:
    """Per-segment seconds of a device ``factor`` times slower than the reference (``pace`` mode)."""
    return np.asarray(reference_segment_s, dtype=np.float64) * float(factor)


def _remove(group: Path, parent: Path) -> None:
    try:
        if (group / "cgroup.procs").exists() and str(os.getpid()) in (group / "cgroup.procs").read_text().split():
            (parent / "cgroup.procs").write_text(f"{os.getpid()}\n")
        group.rmdir()
    except OSError as exc:
        log.warning("could not remove cgroup %s: %s", group, exc)


def remove_stale_groups(root: Path) -> None:
    """Remove empty groups left by splitrt processes that were killed (their pid is gone)."""
    for group in root.glob(f"{GROUP_PREFIX}*"):
        pid = group.name[len(GROUP_PREFIX) :]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            with contextlib.suppress(OSError):
                group.rmdir()
