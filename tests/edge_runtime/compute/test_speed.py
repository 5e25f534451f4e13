"""Device speed emulation: quota arithmetic, the stretch, and the CPU cgroup (root only)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from splitrt.edge_runtime.compute.speed import MIN_QUOTA_US, PERIOD_US, SpeedEmulation, cgroup_root, quota_for
from splitrt.edge_runtime.errors import SplitrtError

ROOT = Path(__file__).resolve().parents[3]


def test_quota_gives_cpus_over_factor():
    assert quota_for(4.0, 1) == (PERIOD_US // 4, PERIOD_US)
    assert quota_for(2.0, 2) == (PERIOD_US, PERIOD_US)
    quota, period = quota_for(50.0, 1)  # below the kernel's 1 ms minimum: longer period
    assert quota >= MIN_QUOTA_US and quota / period == pytest.approx(1 / 50)


def test_stretch_and_validation():
    emu = SpeedEmulation(3.0, "stretch")
    assert emu.apply() == 3.0 and emu.describe() == {"speed_factor": 3.0, "speed_mode": "stretch"}
    emu.close()
    assert SpeedEmulation(1.0, "cgroup").apply() == 1.0  # native speed needs nothing
    with pytest.raises(SplitrtError, match="--speed-factor must be >= 1"):
        SpeedEmulation(0.5)
    with pytest.raises(SplitrtError, match="--speed-mode must be one of"):
        SpeedEmulation(2.0, "nice")


def test_cgroup_quota_is_applied_and_removed():
    root = cgroup_root()
    if root is None:
        pytest.skip("no writable CPU cgroup on this machine (needs root and the cpu controller)")
    # In a child process: this test process must not be throttled.
    code = textwrap.dedent(
        """
        import os
        from splitrt.edge_runtime.compute.speed import SpeedEmulation
        emu = SpeedEmulation(4.0, "cgroup", cpus=1)
        assert emu.apply() == 1.0 and emu.describe()["speed_mode"] == "cgroup"
        group = emu.group
        procs = (group / "cgroup.procs").read_text().split()
        assert str(os.getpid()) in procs, procs
        if (group / "cpu.cfs_quota_us").exists():
            quota = int((group / "cpu.cfs_quota_us").read_text())
            period = int((group / "cpu.cfs_period_us").read_text())
        else:
            quota, period = map(int, (group / "cpu.max").read_text().split())
        print("QUOTA", quota, period, group)
        emu.close()
        assert not group.exists()
        """
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    _, quota, period, group = r.stdout.split()
    assert int(quota) / int(period) == pytest.approx(0.25)
    assert not Path(group).exists()


def test_pace_mode_needs_no_cgroup_and_scales_the_reference():
    import numpy as np

    from splitrt.edge_runtime.compute.speed import pace_times

    emulation = SpeedEmulation(4.0, "pace")
    assert emulation.apply() == 1.0  # the runner paces, it is not stretched
    assert emulation.describe() == {"speed_factor": 4.0, "speed_mode": "pace"}
    emulation.close()
    np.testing.assert_allclose(pace_times(np.array([0.001, 0.002]), 4.0), [0.004, 0.008])
