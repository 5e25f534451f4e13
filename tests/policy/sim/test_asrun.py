"""The as-run model (policy/sim/asrun.py): a hand-computed schedule, conservation, the paper model
where both must agree, and the calibration file's checks."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from splitrt.edge_runtime.errors import SplitrtError
from splitrt.policy.evaluate import run_episodes
from splitrt.policy.methods.registry import make_method
from splitrt.policy.sim.asrun import CALIBRATION_VERSION, AsRun, AsRunEnv, Overheads, load_calibration, make_env
from splitrt.policy.sim.env import VecEnv
from splitrt.policy.sim.scenario import preset
from splitrt.policy.sim.slot import Tables

G = 1e9


def two_type_tables(f_rsu: float = 10 * G) -> Tables:
    """Two CVs of two DNN types, the RSU only (no SV); cut 0 sends the input (1 MB), cut 1 is local."""
    return Tables(
        n_nodes=1,
        n_types=2,
        agent_type=np.array([0, 1]),
        n_cuts=np.array([2, 2]),
        cut_bytes=np.array([[1e6, 0.0], [1e6, 0.0]]),
        local_flops=np.array([[0.0, 4 * G], [0.0, 1 * G]]),
        rsu_flops=np.array([[4 * G, 0.0], [1 * G, 0.0]]),
        sv_flops=np.array([[4 * G, 0.0], [1 * G, 0.0]]),
        type_onehot=np.eye(2),
        slot_s=1.0,
        v=10.0,
        rsu_flops_per_s=f_rsu,
        rsu_floor_flops_per_s=0.0,
    )


def test_hand_computed_schedule_two_types_allocation_changes_mid_task():
    """CV0's 4 GFLOP (type A) reaches the RSU at 0.1 s (1 MB at 80 Mbit/s) and runs alone at
    F = 10 GFLOP/s; CV1's 1 GFLOP (type B) arrives at 0.2 s (at 40 Mbit/s). Both are this slot's
    (Q = 0, n = 1), so P3 gives f ~ sqrt(Gamma) = sqrt(V W): f_A = 2F/3, f_B = F/3 from 0.2 s.
    B needs 1 / (10/3) = 0.3 s: done at 0.5 s. A has 3 GFLOP left at 0.2, does 2 by 0.5 and, as
    on the live RSU, its share is not re-solved when B leaves: 1 GFLOP at 20/3 GFLOP/s, done at 0.65 s."""
    tb = two_type_tables()
    rates = np.array([[[8e7], [4e7]]])  # (T=1, N=2, J=1)
    sim = AsRun(tb, rates, np.array([1 * G, 1 * G]), np.zeros(0), Overheads(), types=["a", "b"])
    sim.begin_slot(0)
    sim.decide(0, np.array([0, 0]), np.array([1, 1]))
    a, b = sim.finish()
    assert a.node_arrival == pytest.approx(0.1) and b.node_arrival == pytest.approx(0.2)
    assert a.remote_start == pytest.approx(0.1) and b.remote_start == pytest.approx(0.2)
    assert b.done == pytest.approx(0.5, abs=1e-12)
    assert a.done == pytest.approx(0.65, abs=1e-12)
    assert a.completion_s == pytest.approx(0.65) and b.completion_s == pytest.approx(0.5)
    assert sim.rsu.solves == 4  # the slot-0 boundary, the two arrivals, and the slot-1 boundary of the drain


def test_a_queued_task_of_an_earlier_slot_counts_in_q_and_the_boundary_re_solves():
    """Type A's 4 GFLOP from slot 0 is still running at the slot-1 boundary (the RSU at 2 GFLOP/s):
    from there it is Q_A (its full FLOPs) and a type-B task of slot 1 shares with it by P3."""
    from splitrt.edge_runtime.sysmodel.allocation import allocate_rsu

    tb = two_type_tables(f_rsu=2 * G)
    rates = np.full((2, 2, 1), 8e9)  # 1 ms per MB
    sim = AsRun(tb, rates, np.array([1 * G, 1 * G]), np.zeros(0), Overheads(), types=["a", "b"])
    sim.begin_slot(0)
    sim.decide(0, np.array([0, 1]), np.array([1, 0]))
    view = sim.begin_slot(1)
    assert view["q_rsu"] == pytest.approx([4 * G, 0.0])
    sim.decide(1, np.array([1, 0]), np.array([0, 1]))
    sim._advance(1.5)
    f = allocate_rsu(np.array([4 * G, 0.0]), np.array([0.0, 1 * G]), np.array([0, 1]), 2 * G, 1.0, 10.0)
    assert [sim.rsu.f["a"], sim.rsu.f["b"]] == pytest.approx(f, rel=1e-12)  # re-solved at B's arrival
    assert f[0] < 2 * G and f[1] > 0
    left = 4 * G - 2 * G * 1.0  # A ran alone at F from 0.001 s: 2 GFLOP left when B arrives at 1.001 s
    assert sim.rsu.queues["a"][0].remaining == pytest.approx(left - f[0] * 0.499, rel=1e-9)
    assert sim.rsu.queues["b"][0].remaining == pytest.approx(1 * G - f[1] * 0.499, rel=1e-9)
    a, b = sim.finish()
    assert a.done > 1.5 and b.done > 1.5


def test_local_fifo_and_overheads_add_where_the_runtime_pays_them():
    """One CV, local work 4 GFLOP at 1 GFLOP/s per slot of 1 s: the FIFO backs up by 3 s per slot;
    the decision and the hand-off delay each job's start only when the worker is idle."""
    tb = two_type_tables()
    ov = Overheads(decide_s=0.01, local_handoff_s=0.002)
    sim = AsRun(tb, np.full((3, 2, 1), 8e7), np.array([1 * G, 1 * G]), np.zeros(0), ov, types=["a", "b"])
    seen = []
    for t in range(3):
        seen.append(sim.begin_slot(t)["q_loc"][0])
        sim.decide(t, np.array([1, 1]), np.array([1, 0]))
    tasks = sim.finish()
    starts = [tk.local_start for tk in tasks]
    assert starts[0] == pytest.approx(0.012)  # decided at 0.01, the idle worker wakes 2 ms later
    assert starts[1] == pytest.approx(4.012) and starts[2] == pytest.approx(8.012)
    assert [tk.done for tk in tasks] == pytest.approx([4.012, 8.012, 12.012])
    # Q_loc at each decision: the FLOPs of the jobs still in the FIFO (running included)
    assert seen == pytest.approx([0.0, 4 * G, 8 * G])


def test_all_local_decisions_equal_the_paper_model():
    """Without overheads, fully local tasks are eq 7-8's FIFO exactly: both models agree."""
    sc = preset("demo", slots=40)
    method = make_method("local")
    paper = run_episodes(sc, method, n_seeds=2, seed=3)
    as_run = run_episodes(sc.replace(sim_model="as-run"), make_method("local"), n_seeds=2, seed=3)
    np.testing.assert_allclose(as_run.completion_sum_s, paper.completion_sum_s, rtol=1e-9)
    np.testing.assert_allclose(as_run.backlog["q_loc_flops"], paper.backlog["q_loc_flops"], rtol=1e-9, atol=1.0)


@settings(max_examples=15, deadline=None)
@given(
    n_cvs=st.integers(1, 5),
    n_svs=st.integers(0, 3),
    seed=st.integers(0, 2**31),
    decide=st.floats(0, 0.01),
    link=st.floats(0, 0.01),
    jitter=st.sampled_from([0.0, 0.003]),
)
def test_every_task_completes_once_and_its_parts_add_up(n_cvs, n_svs, seed, decide, link, jitter):
    sc = preset("demo", n_cvs=n_cvs, n_svs=n_svs, slots=25)
    ov = Overheads(
        decide_s=decide,
        link_s=link,
        link_jitter_s=jitter,
        local_handoff_s=0.001,
        rsu_handoff_s=0.001,
        sv_other_s=0.0005,
    )
    env = AsRunEnv(sc, n_envs=2, seed=seed, overheads=ov, jitter_seed=seed % 7)
    rng = np.random.default_rng(seed)
    *_, mask = env.reset()
    generated = 0
    for _ in range(sc.slots):
        actions = np.array([[rng.choice(np.flatnonzero(m)) for m in env_mask] for env_mask in mask])
        generated += int(env._tasks[:, env.slot].sum())
        *_, mask, _, _, info = env.step(actions)
        assert np.all(info["q_rsu_flops"] >= 0) and np.all(info["q_sv_flops"] >= 0)
    runs = env.finish()
    tasks = [tk for run in runs for tk in run]
    assert len(tasks) == generated
    assert len({(k, tk.slot, tk.cv) for k, run in enumerate(runs) for tk in run}) == generated  # once each
    for tk in tasks:
        assert math.isfinite(tk.done) and tk.done >= tk.arrival
        assert sum(tk.components(ov).values()) == pytest.approx(tk.completion_s, abs=1e-9)
        assert all(v >= -1e-12 for v in tk.components(ov).values()), tk
    # FIFO at every SV and within every RSU type: service starts in arrival order
    for run in runs:
        queues: dict = {}
        for tk in run:
            if tk.node is not None:
                key = (tk.node, env.tables.agent_type[tk.cv] if tk.node == 0 else 0)
                queues.setdefault(key, []).append(tk)
        for q in queues.values():
            q.sort(key=lambda tk: tk.node_arrival)
            ends = [tk.remote_end for tk in q]
            assert ends == sorted(ends)
            for prev, nxt in itertools.pairwise(q):
                assert nxt.remote_start >= prev.remote_end - 1e-12


def test_link_jitter_is_seeded_and_changes_only_the_link_time():
    sc = preset("demo", slots=30)

    def run(jitter: float, draw: int) -> list:
        env = AsRunEnv(sc, 1, seed=4, overheads=Overheads(link_s=0.002, link_jitter_s=jitter), jitter_seed=draw)
        env.reset()
        for _ in range(sc.slots):
            env.step(np.zeros((1, sc.n_cvs), dtype=np.int64))  # every task's input to the RSU
        return env.finish()[0]

    a, b, c = run(0.003, 0), run(0.003, 0), run(0.003, 1)
    assert [t.done for t in a] == [t.done for t in b]  # the same draw, the same schedule
    assert [t.node_arrival for t in a] != [t.node_arrival for t in c]
    still = run(0.0, 0), run(0.0, 5)
    assert [t.done for t in still[0]] == [t.done for t in still[1]]  # no jitter: the seed does not matter
    for x, y in zip(a, still[0], strict=True):
        assert x.sent == y.sent  # before the link nothing moves
        assert x.node_arrival - x.sent >= (y.node_arrival - y.sent) - 0.002 - 1e-12  # clipped at the shaped time


def test_make_env_picks_the_model_and_the_as_run_env_keeps_the_episodes():
    sc = preset("demo", slots=5)
    assert type(make_env(sc, 2, seed=1)) is VecEnv
    a = make_env(sc.replace(sim_model="as-run"), 2, seed=1)
    assert isinstance(a, AsRunEnv)
    p = VecEnv(sc, 2, seed=1)
    pa, pp = a.reset(), p.reset()
    np.testing.assert_array_equal(pa[2], pp[2])  # same masks
    np.testing.assert_array_equal(a.episode(1).fading, p.episode(1).fading)
    with pytest.raises(SplitrtError, match="arrivals = paper"):
        sc.replace(sim_model="as-run", arrivals="poisson")
    with pytest.raises(SplitrtError, match="sim_model"):
        sc.replace(sim_model="queueing")


def test_calibration_file_round_trip_and_bad_files(tmp_path):
    ov = Overheads(decide_s=0.003, link_s=0.002, decide_by={"mad2rl": 0.005})
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps({"format_version": CALIBRATION_VERSION, "overheads": ov.to_dict()}))
    assert load_calibration(path) == ov
    assert load_calibration(path).decide_for("mad2rl") == 0.005 and ov.decide_for("greedy") == 0.003
    env = AsRunEnv(preset("demo", slots=3, calibration_file=str(path)), 1, seed=0)
    assert env.overheads == ov  # the scenario names the file
    bad = tmp_path / "bad.json"
    for text, match in [
        ("{", "cannot read the calibration"),
        (json.dumps({"format": "x"}), "format_version must be 1"),
        (json.dumps({"format_version": CALIBRATION_VERSION}), "missing field.s. overheads"),
        (json.dumps({"format_version": CALIBRATION_VERSION, "overheads": []}), "overheads must be an object"),
        (json.dumps({"format_version": CALIBRATION_VERSION, "overheads": {"decide": 1}}), "unknown overhead"),
        (json.dumps({"format_version": CALIBRATION_VERSION, "overheads": {"link_s": -1}}), "link_s must be"),
        (json.dumps({"format_version": CALIBRATION_VERSION, "overheads": {"decide_by": {"a": "x"}}}), "decide_by.a"),
    ]:
        bad.write_text(text)
        with pytest.raises(SplitrtError, match=match):
            load_calibration(bad)
    with pytest.raises(SplitrtError, match="missing.json does not exist"):
        load_calibration(tmp_path / "missing.json")
