"""KKT allocation (P3, eqs 43-52) against an independent solver, plus its edge cases."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize

from splitrt.edge_runtime.sysmodel.allocation import allocate_rsu, kkt_allocation, p3_objective, rsu_gamma

F = 30e9  # the paper's 30 GHz RSU, in FLOP/s
TAU = 1.0


def assert_feasible(f: np.ndarray, f_total: float) -> None:
    """A reference allocation must satisfy P3's constraints before its objective means anything:
    f >= 0 and sum f = F (to 1e-9 relative). scipy 1.17's SLSQP returned f = [0, 3e10, 0.03, 3e10]
    (sum 2F) on this test's instances and so "beat" the closed form."""
    f = np.asarray(f, dtype=np.float64)
    if not (np.all(np.isfinite(f)) and np.all(f >= 0) and abs(f.sum() - f_total) <= 1e-9 * f_total):
        raise AssertionError(
            f"reference allocation infeasible: f = {f.tolist()}, sum = {f.sum():.6g}, F = {f_total:.6g}"
        )


def reference(gamma: np.ndarray, q: np.ndarray) -> np.ndarray:
    """An independent solver that is feasible by construction: the shares x = softmax(z) lie on the
    simplex exactly (sum x = 1, x > 0), so P3 becomes an unconstrained problem in z, solved by
    scipy's BFGS with the analytic gradient from two starts (equal shares, sqrt(Gamma) shares, shares by queue).
    No equality constraint is left for a solver version to violate; the caller still checks."""
    act = gamma > 0
    ga, qa = gamma[act], q[act]
    # objective scale: both terms at equal shares (the queue term dominates when Q is large)
    scale = 1.0 + float(np.sum(ga / (F / act.sum())) + np.sum(qa * F * TAU / act.sum()))

    def shares(z):
        x = np.exp(z - z.max())
        return x / x.sum()

    def obj(z):
        x = shares(z)
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):  # line-search probes x -> 0: inf, rejected
            value = (np.sum(ga / (x * F)) - np.sum(qa * x * F * TAU)) / scale
            grad_x = (-ga / (x**2 * F) - qa * F * TAU) / scale
        return value, x * (grad_x - np.dot(x, grad_x))

    best = None
    starts = [np.full(act.sum(), 1.0 / act.sum()), np.sqrt(ga) / np.sqrt(ga).sum()]
    if qa.max() > 0:
        starts.append((qa + 1e-3 * qa.max()) / (qa + 1e-3 * qa.max()).sum())  # most to the largest queues
    for x0 in starts:
        r = minimize(obj, np.log(x0), jac=True, method="BFGS", options={"gtol": 1e-14, "maxiter": 10_000})
        if best is None or r.fun < best.fun:
            best = r
    f = np.zeros_like(gamma)
    f[act] = shares(best.x) * F
    return f


def test_feasibility_check_refuses_what_the_old_reference_returned():
    # the allocation SLSQP (scipy 1.17.1, constraint sum x = 1) returned on a 4-type instance
    with pytest.raises(AssertionError, match="infeasible"):
        assert_feasible(np.array([0.0, 3e10, 0.03, 3e10]), F)
    with pytest.raises(AssertionError, match="infeasible"):
        assert_feasible(np.array([-1.0, F + 1.0]), F)
    assert_feasible(np.array([F / 3, F / 3, F / 3]), F)


def test_matches_an_independent_solver_on_random_instances():
    rng = np.random.default_rng(0)
    for _ in range(100):
        k = int(rng.integers(2, 5))
        q = rng.uniform(0, 1, k) * 10 ** rng.uniform(6, 11, k) * rng.integers(0, 2, k)
        n = rng.integers(0, 4, k)
        w = np.where(n > 0, rng.uniform(1e8, 1e10, k), 0.0)
        gamma = rsu_gamma(q, w, n, v=10.0)
        if not np.any(gamma > 0):
            continue
        f = kkt_allocation(gamma, q, F, TAU)
        assert_feasible(f, F)
        ref = reference(gamma, q)
        assert_feasible(ref, F)
        ours, theirs = p3_objective(f, gamma, q, TAU), p3_objective(ref, gamma, q, TAU)
        # never worse than a feasible solver answer (1e-9 relative: rounding of the two sums) ...
        assert ours <= theirs + 1e-9 * abs(theirs)
        # ... and the solver converged to the same optimum, so the comparison has power
        assert theirs <= ours + 1e-6 * abs(ours)


def test_gamma_formula_by_hand():
    # Q = 5, tasks W = 2 and 4: V*Q + V*(2+4) + V/2 * (4 + 2) = 10*5 + 10*6 + 5*6
    assert rsu_gamma(5.0, 6.0, 2, v=10.0) == pytest.approx(10 * 5 + 10 * 6 + 5 * 6)


def test_closed_form_with_empty_queues():
    # Q = 0: f_k = sqrt(Gamma_k / eta) -> shares proportional to sqrt(Gamma_k)
    gamma = np.array([1.0, 4.0, 9.0]) * 1e10
    f = kkt_allocation(gamma, np.zeros(3), F, TAU)
    np.testing.assert_allclose(f, F * np.array([1, 2, 3]) / 6, rtol=1e-12)


def test_type_without_work_gets_nothing_or_the_floor():
    gamma = np.array([1e10, 0.0, 4e10])
    f = kkt_allocation(gamma, np.zeros(3), F, TAU)
    assert f[1] == 0 and f.sum() == pytest.approx(F)
    np.testing.assert_allclose(f[[0, 2]], F * np.array([1, 2]) / 3, rtol=1e-12)
    floored = kkt_allocation(gamma, np.zeros(3), F, TAU, floor_flops=1e9)
    assert floored[1] == 1e9 and floored.sum() == pytest.approx(F)


def test_idle_rsu_splits_equally():
    np.testing.assert_allclose(kkt_allocation(np.zeros(3), np.zeros(3), F, TAU), F / 3)


def test_huge_queues_keep_precision():
    """eta* sits ~1e-9 above max Q*tau ~ 1e12: still sum f = F and the KKT stationarity holds."""
    q = np.array([1e12, 1e12 - 1.0, 5e11])
    gamma = rsu_gamma(q, np.array([1e9, 2e9, 0.0]), np.array([1, 2, 0]), v=10.0)
    f = kkt_allocation(gamma, q, F, TAU)
    assert f.sum() == pytest.approx(F, rel=1e-12)
    assert np.all(f > 0)
    # KKT stationarity in gap form: Gamma_k / f_k^2 - (max Q tau - Q_k tau) = eta* - max Q tau
    # for every type. Types 0 and 1 (gap 0 and 1 FLOP) resolve it to ~1e-8; a plain bisection on
    # eta (resolution ~1e-4 at 1e12) could not.
    s = gamma / f**2 - (q.max() - q) * TAU
    assert 0 < s[0] < 1e-6
    assert s[1] == pytest.approx(s[0], rel=1e-6)
    # The type far below the top queue gets f = sqrt(Gamma / (gap + s)) ~ sqrt(Gamma / gap).
    assert f[2] == pytest.approx(np.sqrt(gamma[2] / (5e11 * TAU)), rel=1e-9)


def test_batched_equals_one_by_one():
    rng = np.random.default_rng(1)
    gamma = rng.uniform(0, 1e11, (50, 3)) * rng.integers(0, 2, (50, 3))
    q = rng.uniform(0, 1e10, (50, 3)) * (gamma > 0)
    batched = kkt_allocation(gamma, q, F, TAU)
    for i in range(50):
        np.testing.assert_allclose(batched[i], kkt_allocation(gamma[i], q[i], F, TAU), rtol=1e-12)


def test_allocate_rsu_solves_in_gflop_units():
    """allocate_rsu(FLOPs) == kkt_allocation on the same instance expressed in GFLOPs, x 1e9."""
    q = np.array([4e9, 1e9, 0.0])
    w = np.array([3e9, 0.0, 2e9])
    n = np.array([2, 0, 1])
    f = allocate_rsu(q, w, n, F, TAU, v=10.0)
    g = rsu_gamma(q / 1e9, w / 1e9, n, 10.0)
    np.testing.assert_allclose(f, kkt_allocation(g, q / 1e9, F / 1e9, TAU) * 1e9, rtol=1e-12)
    assert f.sum() == pytest.approx(F)


def _bisection_reference(gamma: np.ndarray, q: np.ndarray, f_total: float, tau: float) -> np.ndarray:
    """The plain algorithm of the module docstring: 200 halvings of the log-bracket of s, one instance."""
    act = gamma > 0
    qt = q * tau
    gaps = qt[act].max() - qt[act]
    g = gamma[act]
    lo = np.log(g[gaps == 0].max()) - 2 * np.log(f_total)
    hi = 2 * (np.log(np.sqrt(g).sum()) - np.log(f_total))
    lo = min(lo, hi)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if np.sqrt(g / (np.exp(mid) + gaps)).sum() > f_total:
            lo = mid
        else:
            hi = mid
    f = np.zeros_like(gamma)
    f[act] = np.sqrt(g / (np.exp(0.5 * (lo + hi)) + gaps))
    return f * (f_total / f.sum())


def test_newton_solver_matches_a_plain_bisection():
    """The safeguarded Newton iteration reaches the same root as bisection, across scales."""
    rng = np.random.default_rng(7)
    for trial in range(300):
        k = int(rng.integers(1, 6))
        q = rng.uniform(0, 1, k) * 10 ** rng.uniform(-3, 4, k) * rng.integers(0, 2, k)
        if trial % 3 == 0:
            q = q * 1e3 + 1e3  # large, nearly equal queues: the root hugs max(Q tau)
        n = rng.integers(0, 4, k)
        w = np.where(n > 0, rng.uniform(0.01, 100, k), 0.0)
        gamma = rsu_gamma(q, w, n, v=float(rng.choice([0.1, 10.0, 150.0])))
        if not np.any(gamma > 0):
            continue
        ours = kkt_allocation(gamma, q, 30.0, TAU)
        np.testing.assert_allclose(ours, _bisection_reference(gamma, q, 30.0, TAU), rtol=1e-9, atol=1e-12)
