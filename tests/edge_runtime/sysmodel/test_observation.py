"""The eq (53) observation: one vehicle's equals its row of the batched one, field by field in the layout."""

from __future__ import annotations

import numpy as np

from splitrt.edge_runtime.sysmodel import observation as obs_layout


def test_one_vehicle_observation_equals_the_batched_one():
    rng = np.random.default_rng(3)
    for n_nodes in (1, 2, 4):
        batch = 5
        q_loc, q_rsu, pos = (rng.uniform(0, 1e10, batch) for _ in range(3))
        q_sv, sv_pos = rng.uniform(-1e3, 1e10, (batch, n_nodes - 1)), rng.uniform(-500, 500, (batch, n_nodes - 1))
        batched = obs_layout.build_observation(q_loc, q_rsu, q_sv, pos, sv_pos)
        assert batched.shape == (batch, obs_layout.obs_size(n_nodes))
        for b in range(batch):
            one = obs_layout.build_observation(float(q_loc[b]), q_rsu[b], q_sv[b], pos[b], sv_pos[b])
            assert one.dtype == np.float32 and one.shape == (obs_layout.obs_size(n_nodes),)
            np.testing.assert_array_equal(one, batched[b])
            assert one[obs_layout.Q_LOC] == np.float32(q_loc[b])
            np.testing.assert_array_equal(one[obs_layout.sv_queue_slice(n_nodes)], q_sv[b].astype(np.float32))
            assert one[obs_layout.own_position_index(n_nodes)] == np.float32(pos[b])
            np.testing.assert_array_equal(one[obs_layout.sv_position_slice(n_nodes)], sv_pos[b].astype(np.float32))


def test_valid_sampler_draws_every_valid_action_uniformly_and_nothing_else():
    from splitrt.edge_runtime.sysmodel.observation import ValidSampler, sample_valid

    mask = np.zeros((2, 3, 8), dtype=bool)
    mask[0, 0, [1, 4, 6]] = True
    mask[0, 1, :] = True
    mask[0, 2, 7] = True
    mask[1] = np.arange(8) % 2 == 0
    draws = ValidSampler(mask).draw(np.random.default_rng(0), (20_000,))
    assert draws.shape == (20_000, 2, 3)
    assert np.take_along_axis(np.broadcast_to(mask, (20_000, *mask.shape)), draws[..., None], -1).all()
    for e in range(2):
        for i in range(3):
            valid = np.flatnonzero(mask[e, i])
            counts = np.bincount(draws[:, e, i], minlength=8)[valid]
            np.testing.assert_allclose(counts / 20_000, 1 / len(valid), atol=0.02)
    again = sample_valid(np.random.default_rng(0), mask, (20_000,))
    np.testing.assert_array_equal(again, draws)  # the function is the sampler
