"""Channel model (eqs 1, 2, 4, 5) against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from splitrt.edge_runtime.sysmodel.channel import (
    dbm_to_w,
    rate_bps,
    rayleigh_power,
    transmission_delay_s,
    v2i_gain_db,
    v2v_gain_db,
)

B, P_DBM, NOISE_DBM = 10e6, 23.0, -114.0  # Table I


def test_path_gains_by_hand():
    assert v2i_gain_db(100.0) == pytest.approx(-38.4 - 21.0 * 2)  # -80.4 dB
    assert v2v_gain_db(100.0) == pytest.approx(-44.23 - 16.7 * 2)
    assert v2i_gain_db(1000.0) == pytest.approx(-38.4 - 63.0)
    # distances under 1 m are clamped (a vehicle right at the antenna)
    assert v2i_gain_db(0.0) == pytest.approx(-38.4)


def test_power_conversion():
    assert dbm_to_w(30.0) == pytest.approx(1.0)
    assert dbm_to_w(23.0) == pytest.approx(0.19952623, rel=1e-7)
    assert dbm_to_w(-114.0) == pytest.approx(10 ** (-14.4), rel=1e-12)  # -144 dBW


def test_v2i_rate_at_100_m_matches_the_hand_computation():
    # SNR = 23 dBm - 80.4 dB + 114 dBm = 56.6 dB; R = B log2(1 + 10^5.66) ~ 188 Mbit/s (SYSTEM_MODEL.md)
    snr = 10 ** (56.6 / 10)
    expected = B * math.log2(1 + snr)
    assert rate_bps(B, P_DBM, NOISE_DBM, v2i_gain_db(100.0)) == pytest.approx(expected, rel=1e-12)
    assert 185e6 < expected < 192e6
    # at 500 m about 140 Mbit/s
    assert rate_bps(B, P_DBM, NOISE_DBM, v2i_gain_db(500.0)) == pytest.approx(139.26e6, rel=1e-3)


def test_fading_scales_the_snr():
    g = v2v_gain_db(120.0)
    snr = 10 ** ((P_DBM - NOISE_DBM + g) / 10)
    h = np.array([0.0, 0.5, 2.0])
    np.testing.assert_allclose(rate_bps(B, P_DBM, NOISE_DBM, g, h), B * np.log2(1 + snr * h), rtol=1e-12)


def test_rayleigh_power_is_exp1_and_seeded():
    a = rayleigh_power(np.random.default_rng(3), (200_000,))
    b = rayleigh_power(np.random.default_rng(3), (200_000,))
    np.testing.assert_array_equal(a, b)
    assert a.mean() == pytest.approx(1.0, abs=0.01)  # E|u|^2 = 1 for u ~ CN(0, 1)
    assert (a > 1.0).mean() == pytest.approx(math.exp(-1.0), abs=0.005)  # P(|u|^2 > x) = e^-x


def test_transmission_delay_is_eight_bits_per_byte():
    assert transmission_delay_s(1_000_000, 8e6) == pytest.approx(1.0)
    assert transmission_delay_s(602112, 188e6) == pytest.approx(8 * 602112 / 188e6)
    # nothing sent (the fully local cut): exactly 0, even over a dead link
    np.testing.assert_array_equal(transmission_delay_s(np.array([0.0, 0.0]), np.array([0.0, 1e6])), [0.0, 0.0])
