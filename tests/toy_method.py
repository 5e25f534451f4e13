"""A toy baseline added the way a user adds one: this file plus one registry line (the
`register` call at the bottom), loaded as a plug-in (``SPLITRT_PLUGINS=tests.toy_method``).

The rule is written once, as the decider a vehicle runs (`splitrt vehicle --decider
tests.toy_method:ToyDecider`); `splitrt evaluate` runs the same decider for every CV in the
simulator (splitrt.policy.methods.live_rules). The rule: cut at the middle of the model, send to
the RSU.
"""

from __future__ import annotations

from splitrt.edge_runtime.decide.context import DecisionContext
from splitrt.policy.methods.registry import MethodSpec, register


def middle_cut(n_cuts: int) -> int:
    """The toy's cut: the middle of the model's cuts 0 .. n_cuts - 1."""
    return (n_cuts - 1) // 2


class ToyDecider:
    name = "toy"

    def __init__(self, n_cuts: int, n_nodes: int, seed: int) -> None:
        self.n_cuts = n_cuts

    def decide(self, ctx: DecisionContext) -> tuple[int, int]:
        return middle_cut(ctx.n_cuts), 0


register("toy", MethodSpec(live="tests.toy_method:ToyDecider"))
