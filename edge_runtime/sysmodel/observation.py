"""The per-vehicle observation of eq (53) and the action encoding of eq (55): one layout for the
simulator, the trained policy and the live vehicle.

Nodes: J edge nodes, node 0 is the RSU, nodes 1..J-1 are the service vehicles (SVs).

Observation of client vehicle i, a float vector of 2J + 1 values (eq 53):

| index | quantity | unit |
|---|---|---|
| 0 | own local queue Q_loc_i | FLOPs |
| 1 | RSU queue of the vehicle's own DNN type, Q_k | FLOPs |
| 2 .. J | queue of SV 1 .. J-1, Q_veh_j | FLOPs |
| J + 1 | own position along the road | m |
| J + 2 .. 2J | position of SV 1 .. J-1 along the road | m |

Positions are coordinates along the highway with the RSU at 0 (negative before it, positive
after it). The global state (eq 54) is the concatenation of every CV's observation.

Action (eq 55): one index a over (L_k + 1) * J choices, cut = a // J, node = a % J. Cut c runs
segments [0, c) locally (manifest indexing; the paper's phi = c + 1). The fully local cut
c = L_k ignores the node. SVs farther than the V2V radius (eq 25) are masked.
"""

from __future__ import annotations

import numpy as np

Q_LOC = 0
Q_RSU = 1


def obs_size(n_nodes: int) -> int:
    """2J + 1 (eq 53)."""
    return 2 * n_nodes + 1


def sv_queue_slice(n_nodes: int) -> slice:
    return slice(2, n_nodes + 1)


def own_position_index(n_nodes: int) -> int:
    return n_nodes + 1


def sv_position_slice(n_nodes: int) -> slice:
    return slice(n_nodes + 2, 2 * n_nodes + 1)


def build_observation(
    q_loc_flops: np.ndarray,
    q_rsu_type_flops: np.ndarray,
    q_sv_flops: np.ndarray,
    pos_m: np.ndarray,
    sv_pos_m: np.ndarray,
) -> np.ndarray:
    """Stack eq (53)'s quantities. Leading shapes broadcast: scalars (...), SV arrays (..., J-1).

    Returns float32 (..., 2J + 1).
    """
    q_sv = np.asarray(q_sv_flops, dtype=np.float64)
    sv_pos = np.asarray(sv_pos_m, dtype=np.float64)
    lead = np.broadcast_shapes(
        np.shape(q_loc_flops), np.shape(q_rsu_type_flops), np.shape(pos_m), q_sv.shape[:-1], sv_pos.shape[:-1]
    )
    n_sv = q_sv.shape[-1]
    # Assignment broadcasts each part into place: no broadcast_to/concatenate temporaries, so
    # one vehicle's observation (once per task on a live vehicle) costs tens of microseconds.
    out = np.empty((*lead, 3 + n_sv + sv_pos.shape[-1]), dtype=np.float32)
    out[..., 0] = q_loc_flops
    out[..., 1] = q_rsu_type_flops
    out[..., 2 : 2 + n_sv] = q_sv
    out[..., 2 + n_sv] = pos_m
    out[..., 3 + n_sv :] = sv_pos
    return out


def encode_action(cut: np.ndarray | int, node: np.ndarray | int, n_nodes: int) -> np.ndarray | int:
    """a = cut * J + node (eq 55)."""
    return cut * n_nodes + node


def decode_action(action: np.ndarray | int, n_nodes: int) -> tuple[np.ndarray | int, np.ndarray | int]:
    """(cut, node) = (a // J, a % J)."""
    return action // n_nodes, action % n_nodes


def action_mask(n_cuts: int, node_ok: np.ndarray) -> np.ndarray:
    """Valid actions (..., n_cuts * J) from the per-node availability (..., J).

    Offloading actions (cut < n_cuts - 1) to an unavailable node are invalid. The fully local
    cut is always valid, with any node index (the node is ignored there).
    """
    node_ok = np.asarray(node_ok, dtype=bool)
    j = node_ok.shape[-1]
    mask = np.repeat(node_ok[..., None, :], n_cuts, axis=-2)  # (..., n_cuts, J)
    mask[..., n_cuts - 1, :] = True
    return mask.reshape(*node_ok.shape[:-1], n_cuts * j)


def node_backlog_flops(state: dict, model: str) -> float:
    """The backlog a vehicle of type ``model`` sees at a node (eq 53): the RSU's queue of its type,
    or an SV's whole FIFO. ``state`` is the node's snapshot as its state reply carries it
    (splitrt.edge_runtime.node.server `EdgeServer.snapshot`)."""
    queues = state.get("queues", {})
    if state.get("role") == "rsu" and model in queues:
        return float(queues[model]["flops"])
    return float(sum(q.get("flops", 0.0) for q in queues.values()))


class ValidSampler:
    """Uniform draws among the True entries of a mask (..., A): the one "pick a valid action at
    random" of the project (the vehicle's ``random`` decider, the simulator's GA, training's
    exploration). The valid actions of each row are listed first by a stable sort; a draw takes
    the r-th of them with r uniform below their count: one random number per row and draw."""

    def __init__(self, mask: np.ndarray) -> None:
        mask = np.asarray(mask, dtype=bool)
        self.order = np.argsort(~mask, axis=-1, kind="stable")
        self.counts = mask.sum(axis=-1)

    def draw(self, rng: np.random.Generator, shape: tuple[int, ...] = ()) -> np.ndarray:
        """Action indices of shape (*shape, ...) (the mask's shape without its last axis)."""
        r = (rng.random((*shape, *self.counts.shape)) * self.counts).astype(np.int64)
        order = np.broadcast_to(self.order, (*shape, *self.order.shape))
        return np.take_along_axis(order, r[..., None], axis=-1)[..., 0]


def sample_valid(rng: np.random.Generator, mask: np.ndarray, shape: tuple[int, ...] = ()) -> np.ndarray:
    """`ValidSampler(mask).draw(rng, shape)`."""
    return ValidSampler(mask).draw(rng, shape)
