"""Lyapunov bookkeeping (eqs 8/10/16, 29, 33, 57) on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from splitrt.edge_runtime.sysmodel import lyapunov
from splitrt.edge_runtime.sysmodel.allocation import QUEUE_UNIT_FLOPS

G = QUEUE_UNIT_FLOPS


def test_lyapunov_function_in_gflop_units():
    # 1/2 (1^2 + 2^2 + 3^2) GFLOP^2, with an empty SV list allowed
    value = lyapunov.lyapunov([np.array([1 * G, 2 * G]), np.array([3 * G]), np.zeros(0)])
    assert value == pytest.approx(7.0)


def test_queue_update_clips_at_zero_and_conserves_work():
    q = np.array([5 * G, 1 * G, 0.0])
    service = np.array([2 * G, 3 * G, 1 * G])
    arrivals = np.array([1 * G, 1 * G, 0.0])
    nxt = lyapunov.queue_update(q, service, arrivals)
    np.testing.assert_allclose(nxt, [4 * G, 0.0, 0.0])
    served = q + arrivals - nxt  # what left each queue this slot
    assert np.all(served >= 0) and np.all(served <= service)
    np.testing.assert_allclose(served, [2 * G, 2 * G, 0.0])  # no more than was there


def test_p2_objective_and_reward_by_hand():
    queues = [np.array([2 * G]), np.array([1 * G, 0.0])]
    arrivals = [np.array([3 * G]), np.array([0.5 * G, 4 * G])]
    service = [np.array([1 * G]), np.array([1.5 * G, 2 * G])]
    delays = np.array([0.5, 1.5])
    # sum Q (A - S) = 2*(3-1) + 1*(0.5-1.5) + 0 = 3 GFLOP^2; V sum d = 10 * 2 = 20
    assert lyapunov.queue_pressure(queues, arrivals, service) == pytest.approx(3.0)
    assert lyapunov.penalty(delays, 10.0) == pytest.approx(20.0)
    p2 = lyapunov.p2_objective(queues, arrivals, service, delays, 10.0)
    assert p2 == pytest.approx(23.0)
    assert lyapunov.reward(p2) == pytest.approx(-23.0)


def test_drift_is_the_change_of_l_and_broadcasts():
    now = [np.array([[1 * G, 0.0], [2 * G, 2 * G]])]  # two environments
    nxt = [np.array([[3 * G, 0.0], [0.0, 0.0]])]
    np.testing.assert_allclose(lyapunov.drift(now, nxt), [0.5 * 9 - 0.5, -0.5 * 8])
    # candidate axis in front of the environment axis
    arrivals = [np.ones((5, 2, 2)) * G]
    service = [np.zeros((2, 2))]
    assert lyapunov.queue_pressure(now, arrivals, service).shape == (5, 2)
