"""Mobility: the built-in highway, a real SUMO run, and SUMO FCD traces."""

from __future__ import annotations

import re

import numpy as np
import pytest

from splitrt.edge_runtime.errors import SplitrtError
from splitrt.policy.sim import scenario as config
from splitrt.policy.sim.env import VecEnv
from splitrt.policy.sim.mobility import (
    SHIPPED_NET,
    Fcd,
    Highway,
    Sumo,
    build_highway_network,
    fold_into_coverage,
    read_fcd,
)

LANES_Y = {-1.6, -4.8, -8.0}


def test_fold_keeps_vehicles_in_coverage():
    np.testing.assert_allclose(
        fold_into_coverage(np.array([-500.0, 0.0, 499.0, 500.0, 730.0, -510.0]), 500.0),
        [-500.0, 0.0, 499.0, -500.0, -270.0, 490.0],
    )


def test_highway_kinematics():
    sc = config.paper(slots=40)
    traj = Highway(sc).trajectories([np.random.default_rng(1), np.random.default_rng(2)], 8)
    assert traj.shape == (2, 41, 8, 2)
    assert np.all(traj[..., 0] >= -500) and np.all(traj[..., 0] < 500)
    assert set(np.round(traj[..., 1], 6).ravel()) <= LANES_Y
    # constant per-vehicle speed within the clip range, continuous modulo the wrap-around
    step = np.mod(np.diff(traj[..., 0], axis=1), 1000.0)
    assert np.allclose(step, step[:, :1]) and np.all((step >= 20.0) & (step <= 30.0))
    again = Highway(sc).trajectories([np.random.default_rng(1)], 8)
    np.testing.assert_array_equal(again[0], traj[0])


def test_shipped_network_is_rebuilt_by_netconvert(tmp_path):
    lane = re.compile(r'<lane id="([^"]+)" index="(\d)" speed="([^"]+)" length="([^"]+)" shape="([^"]+)"')
    rebuilt = build_highway_network(tmp_path)
    assert lane.findall(rebuilt.read_text()) == lane.findall(SHIPPED_NET.read_text())
    assert len(lane.findall(SHIPPED_NET.read_text())) == 3


def test_real_sumo_run_and_its_fcd_trace(tmp_path):
    sc = config.paper(slots=8, mobility="sumo")
    fcd = tmp_path / "fcd.xml"
    sumo = Sumo(sc, fcd_output=fcd)
    traj = sumo.run(np.random.default_rng(4), 6)
    assert traj.shape == (9, 6, 2)
    assert np.all(np.abs(traj[..., 0]) <= 500.0)
    assert set(np.round(traj[..., 1], 2).ravel()) <= LANES_Y
    step = np.mod(np.diff(traj[..., 0], axis=0), 1000.0)  # metres per 1 s slot
    assert np.all(step <= 30.0 + 1e-6) and step[1:].mean() > 15.0  # moving, never above the top speed
    # deterministic for a given generator (SUMO's own seed is drawn from it)
    np.testing.assert_array_equal(Sumo(sc).run(np.random.default_rng(4), 6), traj)
    # the FCD file SUMO wrote holds the same positions (2 decimals), before folding
    times, ids, pos = read_fcd(fcd)
    np.testing.assert_allclose(times, np.arange(9.0))
    order = [ids.index(f"veh{i}") for i in range(6)]
    folded = pos[:, order].copy()
    folded[..., 0] = fold_into_coverage(folded[..., 0] - sc.trace_rsu_x_m, 500.0)
    np.testing.assert_allclose(folded, traj, atol=0.006)
    # an episode cut from that trace: the same 6 vehicles over the only 9-slot window
    fcd_sc = config.paper(slots=8, mobility="fcd", fcd_file=str(fcd))
    episode = Fcd(fcd_sc).episode(np.random.default_rng(0), 6)
    assert sorted(map(tuple, np.round(episode[0], 2))) == sorted(map(tuple, np.round(folded[0], 2)))
    with pytest.raises(SplitrtError, match="no window of 9 slots of 1.0 s with 7 vehicles"):
        Fcd(fcd_sc).episode(np.random.default_rng(0), 7)


def test_env_on_sumo_mobility_runs_an_episode():
    sc = config.paper(n_cvs=2, n_svs=2, slots=4, mobility="sumo")
    env = VecEnv(sc, n_envs=2, seed=3)
    obs, _, _ = env.reset()
    assert obs.shape == (2, 2, 7)
    for _ in range(4):
        obs, _, _, reward, done, _ = env.step(np.zeros((2, 2), dtype=np.int64))
    assert done.all() and np.all(np.isfinite(reward))


def test_sumo_refuses_a_road_too_short():
    with pytest.raises(SplitrtError, match="need"):
        Sumo(config.paper(slots=400, mobility="sumo"))
    with pytest.raises(SplitrtError, match="does not exist"):
        Sumo(config.paper(mobility="sumo", sumo_net="/nonexistent/net.xml"))
