"""What one decision sees (`DecisionContext`) and what decides (`Decider`): the interface shared by
the vehicle's built-in deciders (splitrt.edge_runtime.decide.deciders) and the on-device policy
(splitrt.edge_runtime.decide.onnx_policy), kept apart from both so that neither imports the other to name it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from splitrt.edge_runtime.sysmodel import observation as obs_layout


@dataclass(frozen=True)
class DecisionContext:
    """Inputs of one decision. Arrays over nodes have length J (node 0 = RSU)."""

    observation: np.ndarray  # (2J + 1,) eq (53), units in splitrt.edge_runtime.sysmodel.observation
    cut_bytes: np.ndarray  # (n_cuts,) eq (3); last entry 0
    flops_before: np.ndarray  # (n_cuts,) FLOPs run locally at each cut
    flops_after: np.ndarray  # (n_cuts,) FLOPs run remotely at each cut
    node_ok: np.ndarray  # (J,) bool: node reachable (and an SV within the V2V radius, eq 25)
    model: str = ""
    slot: int = 0
    rate_bps: np.ndarray | None = None  # (J,) current link rate estimate per node, bit/s

    @property
    def n_cuts(self) -> int:
        return len(self.cut_bytes)

    @property
    def n_nodes(self) -> int:
        return len(self.node_ok)

    def node_queues_flops(self) -> np.ndarray:
        """(J,) backlog seen at every node: the RSU's queue of this type, then each SV's."""
        j = self.n_nodes
        return np.concatenate([[self.observation[obs_layout.Q_RSU]], self.observation[obs_layout.sv_queue_slice(j)]])

    def action_mask(self) -> np.ndarray:
        return obs_layout.action_mask(self.n_cuts, self.node_ok)


class Decider(Protocol):
    """Anything that picks (cut, node) for one task."""

    name: str

    def decide(self, ctx: DecisionContext) -> tuple[int, int]: ...
