"""The decision seam: what a vehicle asks for every task, whoever answers (a fixed rule, a
baseline, the on-device ONNX policy).

A `Decider` gets a `DecisionContext` (the eq-53 observation plus what the vehicle knows of its
model and links) and returns ``(cut, node)`` in manifest indexing: segments [0, cut) run locally,
the rest on edge node ``node`` (0 = RSU, 1..J-1 = SVs); ``cut == n_cuts - 1`` is fully local and
the node is ignored. Deciders are per vehicle (decentralised execution); the simulator's batched
baselines call the same pure functions below where the rule is the same.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import numpy as np

from splitrt.edge_runtime.decide.context import Decider, DecisionContext
from splitrt.edge_runtime.errors import SplitrtError
from splitrt.edge_runtime.sysmodel import observation as obs_layout


def greedy_choice(cut_bytes: np.ndarray, node_queues: np.ndarray, node_ok: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The paper's greedy baseline: cut where the transmitted tensor is smallest (among the
    offloading cuts 0..n-2; the first such cut on ties), offload to the reachable node with the
    shortest queue. Vectorised: ``node_queues``/``node_ok`` (..., J) -> (cut, node) of shape (...).
    A vehicle with no reachable node runs fully local (cut n-1, node 0)."""
    cut_bytes = np.asarray(cut_bytes)
    node_ok = np.asarray(node_ok, dtype=bool)
    offload_cut = int(np.argmin(cut_bytes[:-1]))
    queues = np.where(node_ok, np.asarray(node_queues, dtype=np.float64), np.inf)
    node = np.argmin(queues, axis=-1)
    any_ok = node_ok.any(axis=-1)
    cut = np.where(any_ok, offload_cut, len(cut_bytes) - 1)
    return cut, np.where(any_ok, node, 0)


# ---- the vehicle's built-in deciders (`splitrt vehicle --decider SPEC`) -----------------------


class LocalDecider:
    """Run every task fully on the vehicle (cut n, nothing sent)."""

    name = "local"

    def decide(self, ctx: DecisionContext) -> tuple[int, int]:
        return ctx.n_cuts - 1, 0


@dataclass(frozen=True)
class FixedDecider:
    """Always cut at ``cut`` and offload to ``node`` (``offload`` is cut 0: the raw input)."""

    cut: int
    node: int = 0
    name: str = "fixed"

    def decide(self, ctx: DecisionContext) -> tuple[int, int]:
        return self.cut, self.node


class GreedyDecider:
    """The paper's greedy baseline (`greedy_choice`): smallest tensor, shortest reachable queue.
    With ``cut`` (spec ``greedy:K``) the cut is fixed and only the node is chosen (shortest known
    backlog among the reachable nodes; none reachable: fully local)."""

    def __init__(self, cut: int | None = None) -> None:
        self.cut = cut
        self.name = "greedy" if cut is None else f"greedy:{cut}"

    def decide(self, ctx: DecisionContext) -> tuple[int, int]:
        cut, node = greedy_choice(ctx.cut_bytes, ctx.node_queues_flops(), ctx.node_ok)
        if self.cut is not None and int(cut) != ctx.n_cuts - 1:
            cut = self.cut
        return int(cut), int(node)


class RandomDecider:
    """Uniform over the valid actions (eq 55's (cut, node) pairs under the mask), seeded."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)

    def decide(self, ctx: DecisionContext) -> tuple[int, int]:
        cut, node = obs_layout.decode_action(int(obs_layout.sample_valid(self.rng, ctx.action_mask())), ctx.n_nodes)
        return int(cut), int(node)


DECIDER_SPECS = "local | offload[@J] | fixed:K[@J] | greedy[:K] | random | policy:DIR | MODULE:FACTORY"


def load_decider(spec: str, n_cuts: int, n_nodes: int, seed: int) -> Decider:
    """A decider of your own: ``package.module:factory``, called with the keyword arguments
    ``n_cuts``, ``n_nodes`` and ``seed``; it must return an object with ``name`` and ``decide``."""
    module_name, _, attr = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise SplitrtError(f"--decider {spec!r}: cannot load {attr!r} from {module_name!r} ({exc})") from None
    decider = factory(n_cuts=n_cuts, n_nodes=n_nodes, seed=seed)
    if not callable(getattr(decider, "decide", None)) or not isinstance(getattr(decider, "name", None), str):
        raise SplitrtError(f"--decider {spec!r}: {attr} returned {type(decider).__name__}, not a decider")
    return decider


def make_decider(spec: str, n_cuts: int, n_nodes: int, seed: int = 0) -> Decider:
    """A decider from its command-line spec (`DECIDER_SPECS`); J is the edge node index (node 0 =
    the first --edge, by convention the RSU), K the manifest cut (0 .. n_cuts - 1), DIR a trained
    policy (splitrt.edge_runtime.decide.onnx_policy: MAD2RL or P-QMIX as ONNX). ``seed`` seeds random and policy noise."""
    text = spec.strip()
    if text.startswith("policy:"):
        from splitrt.edge_runtime.decide.onnx_policy import OnDevicePolicy  # loads ONNX Runtime: only when asked for

        policy = OnDevicePolicy(text[len("policy:") :], seed=seed)
        policy.check_nodes(n_nodes)
        return policy
    if text == "random":
        return RandomDecider(seed)
    if "." in text.partition(":")[0] and ":" in text:
        return load_decider(text, n_cuts, n_nodes, seed)
    body, _, node_text = text.partition("@")
    node = 0
    if node_text:
        if not node_text.isdigit() or not 0 <= int(node_text) < n_nodes:
            raise SplitrtError(f"--decider {spec!r}: node must be 0..{n_nodes - 1} (one per --edge), got {node_text!r}")
        node = int(node_text)
    if body == "local" and not node_text:
        return LocalDecider()
    if body == "greedy" and not node_text:
        return GreedyDecider()
    if body == "offload":
        return FixedDecider(0, node, name=text)
    if body.startswith(("fixed:", "greedy:")) and not (body.startswith("greedy:") and node_text):
        kind, _, k = body.partition(":")
        if not k.isdigit() or not 0 <= int(k) < n_cuts:
            raise SplitrtError(f"--decider {spec!r}: cut must be 0..{n_cuts - 1} for this model, got {k!r}")
        return FixedDecider(int(k), node, name=text) if kind == "fixed" else GreedyDecider(int(k))
    raise SplitrtError(f"--decider {spec!r} is not one of: {DECIDER_SPECS}")
