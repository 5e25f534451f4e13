"""A vehicle's decider run in the simulator: the method's rule written once, for both worlds.

`LiveRule(spec)` builds, for every CV of every environment, the decider a vehicle would run
(``spec`` as for ``splitrt vehicle --decider``: a built-in rule such as ``local``, ``offload`` or
``random``, or ``module:factory`` of a decider of your own; splitrt.edge_runtime.decide.deciders)
and asks it every slot with the `DecisionContext` the vehicle builds: the CV's eq (53)
observation, its model's cut table and the nodes it can reach (eq 25). Decentralised, as on the
road: no decider sees another CV. A registry entry without a simulator form of its own
(`MethodSpec.sim` None) runs this way in `splitrt evaluate`.
"""

from __future__ import annotations

import numpy as np

from splitrt.edge_runtime.decide.context import DecisionContext
from splitrt.edge_runtime.decide.deciders import make_decider


class LiveRule:
    """The decider ``spec`` per CV (module docstring); ``seed`` seeds every CV's decider apart."""

    @staticmethod
    def options(seed: int | None = None) -> None:
        """The options ``--method-opt NAME.KEY=VALUE`` may set (the spec and name come from the registry)."""

    def __init__(self, spec: str, name: str | None = None, seed: int | None = None) -> None:
        self.spec = spec
        self.name = name or spec
        self._seed = seed
        self._base = seed or 0
        self._deciders: dict[tuple[int, int], object] = {}
        #: CV -> the seed its vehicle's decider has (tools/hil: the live run's own seeds, so a
        #: seeded rule such as ``random`` draws what the live vehicles drew); env 0 only
        self.cv_seeds: dict[int, int] | None = None

    def reset(self, env, seed: int | None) -> None:
        """New deciders (made on first use: a CV's decider needs its model's cut count)."""
        self._base = self._seed if self._seed is not None else (seed or 0)
        self._deciders = {}

    def decider(self, env: int, cv: int, n_cuts: int, n_nodes: int):
        """Environment ``env``'s CV ``cv``'s decider, seeded from (seed, env, cv)."""
        key = (env, cv)
        if key not in self._deciders:
            if self.cv_seeds is not None and env == 0 and cv in self.cv_seeds:
                seed = self.cv_seeds[cv]
            else:
                seed = int(np.random.SeedSequence([self._base, env, cv]).generate_state(1)[0])
            self._deciders[key] = make_decider(self.spec, n_cuts, n_nodes, seed=seed)
        return self._deciders[key]

    def act(self, obs: np.ndarray, state: np.ndarray, mask: np.ndarray, view) -> np.ndarray:
        j = view.tables.n_nodes
        models = view.scenario.cv_models()
        actions = np.empty(mask.shape[:2], dtype=np.int64)
        for e in range(mask.shape[0]):
            for i, m in enumerate(models):
                w = view.workloads[m]
                ctx = DecisionContext(
                    observation=obs[e, i],
                    cut_bytes=w.cut_bytes,
                    flops_before=w.local_flops,
                    flops_after=w.rsu_flops,
                    node_ok=view.node_ok[e, i],
                    model=m,
                    slot=view.slot,
                )
                cut, node = self.decider(e, i, w.n_cuts, j).decide(ctx)
                actions[e, i] = cut * j + node
        return actions
