"""Eqs 7-17 (delays), 8/10/16 (queues), 29-33 (P2) and the KKT allocation's use, on hand-built slots."""

from __future__ import annotations

import numpy as np
import pytest

from splitrt.edge_runtime.sysmodel.allocation import allocate_rsu
from splitrt.policy.sim.slot import Links, SlotState, Tables, evaluate_slot

G = 1e9
TAU = 0.25
V = 10.0


def tiny_tables(n_types: int = 1, agent_type=(0, 0, 0)) -> Tables:
    """3 CVs, one RSU + one SV (J = 2), a 3-cut DNN: cut 0 sends 100 B, cut 1 50 B, cut 2 local."""
    n = len(agent_type)
    row = lambda values: np.tile(np.array(values, dtype=float), (n, 1))  # noqa: E731
    return Tables(
        n_nodes=2,
        n_types=n_types,
        agent_type=np.array(agent_type),
        n_cuts=np.full(n, 3),
        cut_bytes=row([100, 50, 0]),
        local_flops=row([0, 2 * G, 5 * G]),
        rsu_flops=row([5 * G, 3 * G, 0]),
        sv_flops=row([5 * G, 3 * G, 0]),
        type_onehot=np.eye(n_types)[list(agent_type)],
        slot_s=TAU,
        v=V,
        rsu_flops_per_s=30 * G,
        rsu_floor_flops_per_s=0.0,
    )


def tiny_state(tasks=(1, 1, 1), q_rsu=(4 * G,)) -> SlotState:
    return SlotState(
        q_loc_flops=np.array([[1 * G, 2 * G, 0.0]]),
        q_rsu_flops=np.array([q_rsu], dtype=float),
        q_sv_flops=np.array([[1 * G]]),
        cv_flops_per_s=np.array([[4 * G, 5 * G, 6 * G]]),
        sv_flops_per_s=np.array([[6 * G]]),
        links=Links.fixed(np.array([[[8e6, 4e6], [16e6, 4e6], [8e6, 2e6]]])),  # (E, N, J): to RSU, to SV
        tasks=np.array([tasks]),
    )


# CV0: cut 1 -> RSU (a = 1*2 + 0); CV1: cut 0 -> RSU (a = 0); CV2: cut 1 -> SV 1 (a = 1*2 + 1)
ACTIONS = np.array([[2, 0, 3]])


def test_every_delay_and_queue_by_hand():
    out = evaluate_slot(tiny_tables(), tiny_state(), ACTIONS)
    f = 30 * G  # one DNN type: P3 gives it the whole RSU
    w_k = 3 * G + 5 * G
    local = [(1 * G + 2 * G) / (4 * G), 0.0, (0 + 2 * G) / (6 * G)]  # eq 7 (0 for cut 0 despite Q_loc)
    tx = [8 * 50 / 8e6, 8 * 100 / 16e6, 8 * 50 / 2e6]  # eqs 4-5, the SV link for CV2
    rsu = [(4 * G + 3 * G) / f + (w_k - 3 * G) / (2 * f), (4 * G + 5 * G) / f + (w_k - 5 * G) / (2 * f), 0.0]
    sv = [0.0, 0.0, (1 * G + 3 * G) / (6 * G) + 0.0]  # eqs 13 + 15, alone at the SV
    np.testing.assert_allclose(out.local_s[0], local, rtol=1e-12)
    np.testing.assert_allclose(out.tx_s[0], tx, rtol=1e-12)
    np.testing.assert_allclose(out.rsu_s[0], rsu, rtol=1e-12)
    np.testing.assert_allclose(out.sv_s[0], sv, rtol=1e-12)
    np.testing.assert_allclose(out.completion_s[0], np.add.reduce([local, tx, rsu, sv]), rtol=1e-12)  # eq 17
    np.testing.assert_allclose(out.rsu_alloc_flops_per_s[0], [f])
    # eq 8: max(Q - f tau + 1[cut != 0] b, 0); eq 10 and 16 alike
    np.testing.assert_allclose(out.q_loc_next_flops[0], [1 * G - 1 * G + 2 * G, 2 * G - 1.25 * G, 0 - 1.5 * G + 2 * G])
    np.testing.assert_allclose(out.q_rsu_next_flops[0], [4 * G - 7.5 * G + w_k])
    np.testing.assert_allclose(out.q_sv_next_flops[0], [1 * G - 1.5 * G + 3 * G])
    # eq 33 in GFLOPs: local 1*(2-1) + 2*(0-1.25) + 0; RSU 4*(8-7.5); SV 1*(3-1.5)
    assert out.pressure[0] == pytest.approx(1.0 - 2.5 + 2.0 + 1.5)
    assert out.penalty[0] == pytest.approx(V * sum(np.add.reduce([local, tx, rsu, sv])))
    assert out.p2[0] == pytest.approx(out.pressure[0] + out.penalty[0])
    assert out.reward[0] == pytest.approx(-out.p2[0])
    # eq 29 and the realised drift
    l_now = 0.5 * (1 + 4 + 0 + 16 + 1)
    l_next = 0.5 * (np.sum((out.q_loc_next_flops / G) ** 2) + (4.5) ** 2 + (2.5) ** 2)
    assert out.lyapunov[0] == pytest.approx(l_next)
    assert out.drift[0] == pytest.approx(l_next - l_now)


def test_fully_local_ignores_the_node_and_no_task_costs_nothing():
    tables, state = tiny_tables(), tiny_state(tasks=(1, 0, 1))
    a = evaluate_slot(tables, state, np.array([[4, 2, 5]]))  # cut 2 = fully local, node 0 / 1 alike
    b = evaluate_slot(tables, state, np.array([[5, 0, 4]]))
    np.testing.assert_array_equal(a.completion_s, b.completion_s)
    assert a.completion_s[0, 1] == 0.0 and a.tx_s.sum() == 0 and a.rsu_s.sum() == 0 and a.sv_s.sum() == 0
    np.testing.assert_allclose(a.local_s[0], [(1 * G + 5 * G) / (4 * G), 0.0, 5 * G / (6 * G)])
    # the task-less CV's queue only drains
    assert a.q_loc_next_flops[0, 1] == pytest.approx(2 * G - 5 * G * TAU)


def test_a_job_of_m_tasks_carries_m_times_the_work():
    one = evaluate_slot(tiny_tables(), tiny_state(tasks=(1, 1, 1)), ACTIONS)
    two = evaluate_slot(tiny_tables(), tiny_state(tasks=(2, 1, 1)), ACTIONS)
    assert two.tx_s[0, 0] == pytest.approx(2 * one.tx_s[0, 0])
    assert two.local_s[0, 0] == pytest.approx((1 * G + 4 * G) / (4 * G))
    assert two.q_rsu_next_flops[0, 0] == pytest.approx(one.q_rsu_next_flops[0, 0] + 3 * G)


def test_rsu_compute_is_the_shared_kkt_allocation():
    tables = tiny_tables(n_types=2, agent_type=(0, 1, 1))
    state = tiny_state(q_rsu=(4 * G, 9 * G))
    actions = np.array([[2, 0, 2]])  # CV0 type 0 at cut 1; CV1, CV2 type 1 at cuts 0 and 1: all to the RSU
    out = evaluate_slot(tables, state, actions)
    f = allocate_rsu(np.array([4 * G, 9 * G]), np.array([3 * G, 8 * G]), np.array([1, 2]), 30 * G, TAU, V)
    np.testing.assert_allclose(out.rsu_alloc_flops_per_s[0], f, rtol=1e-12)
    assert out.rsu_alloc_flops_per_s.sum() == pytest.approx(30 * G)
    # CV2 waits for half of CV1's work (eq 11), CV0 for nobody
    assert out.rsu_s[0, 0] == pytest.approx((4 * G + 3 * G) / f[0])
    assert out.rsu_s[0, 2] == pytest.approx((9 * G + 3 * G) / f[1] + 5 * G / (2 * f[1]))


def test_candidate_axis_equals_one_by_one():
    tables, state = tiny_tables(), tiny_state()
    rng = np.random.default_rng(0)
    cands = rng.integers(0, 6, (7, 1, 3))
    batch = evaluate_slot(tables, state, cands)
    for b in range(7):
        single = evaluate_slot(tables, state, cands[b])
        np.testing.assert_allclose(batch.p2[b], single.p2, rtol=1e-12)
        np.testing.assert_allclose(batch.completion_s[b], single.completion_s, rtol=1e-12)


def test_work_is_conserved_across_the_split():
    """With queues too large to empty, the FLOPs arriving anywhere equal each task's whole model."""
    tables = tiny_tables()
    big = tiny_state()
    big = SlotState(**{**big.__dict__, "q_loc_flops": np.full((1, 3), 1e13), "q_sv_flops": np.full((1, 1), 1e13)})
    big = SlotState(**{**big.__dict__, "q_rsu_flops": np.full((1, 1), 1e13)})
    for actions in ([[2, 0, 3]], [[0, 1, 4]], [[4, 4, 4]], [[1, 3, 2]]):
        out = evaluate_slot(tables, big, np.array(actions))
        arrived = (
            (out.q_loc_next_flops - big.q_loc_flops + big.cv_flops_per_s * TAU).sum()
            + (out.q_rsu_next_flops - big.q_rsu_flops + out.rsu_alloc_flops_per_s * TAU).sum()
            + (out.q_sv_next_flops - big.q_sv_flops + big.sv_flops_per_s * TAU).sum()
        )
        # cut 0 has no local part, so all 5 GFLOPs of each task arrive at some queue
        assert arrived == pytest.approx(3 * 5 * G, rel=1e-9)


def test_chosen_links_equal_the_full_rate_matrix_and_the_channel_model():
    from splitrt.edge_runtime.sysmodel.channel import rate_bps, v2i_gain_db, v2v_gain_db
    from splitrt.policy.sim.scenario import paper

    sc = paper(n_cvs=3, n_svs=4)
    rng = np.random.default_rng(0)
    pos = np.stack([rng.uniform(-500, 500, (5, 7)), rng.choice([-1.6, -4.8, -8.0], (5, 7))], axis=-1)
    fading = rng.exponential(1.0, (5, 3, 5))
    links = Links(pos, fading, sc)
    node = rng.integers(0, 5, (5, 3))
    chosen = links.rate_to(node)  # computed for the chosen links only
    full = Links(pos, fading, sc).rate_bps  # every link
    np.testing.assert_allclose(chosen, np.take_along_axis(full, node[..., None], -1)[..., 0], rtol=1e-13)
    # by hand for env 0, CV 1: the RSU at (0, 10 m) and SV 2 (vehicle index 3 + 1)
    d_rsu = np.hypot(pos[0, 1, 0], pos[0, 1, 1] - 10.0)
    assert full[0, 1, 0] == pytest.approx(rate_bps(10e6, 23, -114, v2i_gain_db(d_rsu), fading[0, 1, 0]))
    d_sv = np.hypot(*(pos[0, 1] - pos[0, 3 + 1]))
    assert full[0, 1, 2] == pytest.approx(rate_bps(10e6, 23, -114, v2v_gain_db(d_sv), fading[0, 1, 2]))
