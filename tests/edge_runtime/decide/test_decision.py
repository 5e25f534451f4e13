"""The vehicle's built-in deciders behind the decision seam, and their command-line specs."""

from __future__ import annotations

import numpy as np
import pytest

from splitrt.edge_runtime.decide.deciders import (
    DecisionContext,
    FixedDecider,
    GreedyDecider,
    LocalDecider,
    make_decider,
)
from splitrt.edge_runtime.errors import SplitrtError
from splitrt.edge_runtime.sysmodel.observation import build_observation


def context(node_queues, node_ok, cut_bytes=(600, 800, 200, 300, 50, 0)) -> DecisionContext:
    q = np.asarray(node_queues, dtype=float)
    obs = build_observation(7.0, q[0], q[1:], 0.0, np.zeros(len(q) - 1))
    n = len(cut_bytes)
    return DecisionContext(
        observation=obs,
        cut_bytes=np.asarray(cut_bytes),
        flops_before=np.arange(n),
        flops_after=np.arange(n)[::-1],
        node_ok=np.asarray(node_ok, dtype=bool),
    )


def test_specs_build_the_right_deciders():
    assert isinstance(make_decider("local", 6, 3), LocalDecider)
    assert isinstance(make_decider("greedy", 6, 3), GreedyDecider)
    assert make_decider("offload", 6, 3) == FixedDecider(0, 0, name="offload")
    assert make_decider("offload@2", 6, 3) == FixedDecider(0, 2, name="offload@2")
    assert make_decider("fixed:4@1", 6, 3) == FixedDecider(4, 1, name="fixed:4@1")
    assert make_decider("fixed:5", 6, 3).decide(context([0, 0, 0], [1, 1, 1])) == (5, 0)


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("fixed:6", "cut must be 0..5"),
        ("fixed:x", "cut must be 0..5"),
        ("offload@3", "node must be 0..2"),
        ("offload@-1", "node must be 0..2"),
        ("greedy@1", "is not one of"),
        ("greedy:6", "cut must be 0..5"),
        ("greedy:2@1", "is not one of"),
        ("policy", "is not one of"),
    ],
)
def test_bad_specs_name_the_problem(spec, needle):
    with pytest.raises(SplitrtError, match=needle):
        make_decider(spec, 6, 3)


def test_local_and_greedy_decisions():
    ctx = context([5.0, 1.0, 3.0], [True, True, True])
    assert LocalDecider().decide(ctx) == (5, 0)
    # smallest offloading tensor is cut 4 (50 bytes); shortest queue is node 1
    assert GreedyDecider().decide(ctx) == (4, 1)
    assert GreedyDecider().decide(context([5.0, 1.0, 3.0], [True, False, True])) == (4, 2)
    assert GreedyDecider().decide(context([5.0, 1.0, 3.0], [False, False, False])) == (5, 0)
    assert ctx.node_queues_flops().tolist() == [5.0, 1.0, 3.0]


def test_greedy_at_a_fixed_cut_only_picks_the_node():
    greedy2 = make_decider("greedy:2", 6, 3)
    assert greedy2.name == "greedy:2"
    assert greedy2.decide(context([5.0, 1.0, 3.0], [True, True, True])) == (2, 1)
    assert greedy2.decide(context([0.5, 1.0, 3.0], [True, True, False])) == (2, 0)
    assert greedy2.decide(context([5.0, 1.0, 3.0], [False, False, False])) == (5, 0)  # nowhere to go


def test_random_decider_stays_in_the_mask_and_is_seeded():
    from splitrt.edge_runtime.decide.deciders import RandomDecider

    ctx = context([5.0, 1.0, 3.0], [True, False, True])
    picks = [RandomDecider(seed=s).decide(ctx) for s in range(200)]
    mask = ctx.action_mask()
    assert all(mask[cut * 3 + node] for cut, node in picks)  # never node 1 below the last cut
    assert len(set(picks)) > 5  # it does vary
    assert RandomDecider(7).decide(ctx) == RandomDecider(7).decide(ctx)
    assert isinstance(make_decider("random", 6, 3), RandomDecider)


def test_policy_spec_names_a_missing_policy(tmp_path):
    with pytest.raises(SplitrtError, match="policy metadata .* does not exist"):
        make_decider(f"policy:{tmp_path}", 6, 3)
