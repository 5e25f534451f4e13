"""Cut discovery on an ONNX graph, with no per-model lists.

A *position* p (0..m) lies between the m non-constant nodes of the graph's stored topological
order (ONNX requires nodes to be stored topologically sorted). The tensors *live* across p are
those produced before p (the model input counts as produced before position 0) and consumed at
or after p, or returned as a graph output. Initializers, Constant nodes and everything computed
only from them are constants: a segment that needs one carries its own copy, so they never count
as live. A position is a valid cut when exactly one tensor is live across it; then the graph
splits there into two programs connected by that tensor alone. Positions inside a residual block,
an inception module, a squeeze-excite gate or a dense block always have the block input (or a
branch output) live beside the running tensor, so they are never valid.

Granularity:
- ``op``: every valid position.
- ``layer`` (default; the paper's notion): only valid positions directly before a "layer" node
  (Conv, ConvTranspose, Gemm, MatMul, pooling) or a LayerNormalization, the first op of every
  pre-norm transformer block (ViT, Swin), whose blocks would otherwise have no cut between them.
  Activations, normalisations, flatten/reshape and dropout that follow a layer therefore stay in
  that layer's segment.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from splitrt.edge_runtime.errors import SplitrtError

LAYER_OPS = frozenset(
    [
        "Conv",
        "ConvTranspose",
        "Gemm",
        "MatMul",
        "MaxPool",
        "AveragePool",
        "LpPool",
        "GlobalAveragePool",
        "GlobalMaxPool",
    ]
)
#: Where a ``layer`` cut may lie: directly before one of these.
CUT_BEFORE = LAYER_OPS | {"LayerNormalization"}
GRANULARITIES = ("layer", "op")


def node_inputs(node: onnx.NodeProto) -> list[str]:
    """Every tensor a node reads: its inputs plus outer-scope names used inside its subgraphs."""
    names = [i for i in node.input if i]
    for attr in node.attribute:
        graphs = list(attr.graphs) + ([attr.g] if attr.HasField("g") else [])
        for g in graphs:
            local = {i.name for i in g.input} | {t.name for t in g.initializer}
            for sub in g.node:
                local.update(o for o in sub.output if o)
            for sub in g.node:
                names.extend(n for n in node_inputs(sub) if n not in local)
    return names


@dataclass
class GraphAnalysis:
    """What cut discovery knows about a graph (see the module docstring for the terms)."""

    model: onnx.ModelProto
    input_name: str
    output_name: str
    nodes: list[onnx.NodeProto]  # non-constant nodes, stored order
    const_nodes: list[onnx.NodeProto]  # nodes computing constants, stored order
    constants: set[str]  # initializer names + outputs of constant nodes
    live_count: np.ndarray  # (m + 1,) number of live tensors at each position
    live_tensor: list[str | None]  # the single live tensor at each valid position, else None

    @property
    def n_positions(self) -> int:
        return len(self.nodes) + 1

    def valid_positions(self) -> list[int]:
        return [p for p in range(self.n_positions) if self.live_count[p] == 1]

    def cut_positions(self, granularity: str = "layer") -> list[int]:
        """Chosen cut positions, always including 0 (raw input) and m (model output)."""
        if granularity not in GRANULARITIES:
            raise SplitrtError(f"granularity {granularity!r} is not one of {', '.join(GRANULARITIES)}")
        m = len(self.nodes)
        valid = self.valid_positions()
        if granularity == "op":
            chosen = valid
        else:
            chosen = [p for p in valid if p in (0, m) or self.nodes[p].op_type in CUT_BEFORE]
        chosen = sorted(set(chosen) | {0, m})
        # A segment of only zero-cost nodes between two cuts would be an empty "layer": it can
        # only appear at op granularity and is harmless there, so nothing is removed.
        return chosen


def analyse(model: onnx.ModelProto) -> GraphAnalysis:
    """Classify nodes into constant/non-constant and count live tensors at every position."""
    graph = model.graph
    init_names = {t.name for t in graph.initializer}
    real_inputs = [i.name for i in graph.input if i.name not in init_names]
    if len(real_inputs) != 1:
        raise SplitrtError(
            f"the model has {len(real_inputs)} inputs ({', '.join(real_inputs) or 'none'}); "
            "splitrt splits single-input models only"
        )
    if len(graph.output) != 1:
        raise SplitrtError(
            f"the model has {len(graph.output)} outputs ({', '.join(o.name for o in graph.output)}); "
            "splitrt splits single-output models only"
        )
    input_name, output_name = real_inputs[0], graph.output[0].name

    constants = set(init_names)
    nodes: list[onnx.NodeProto] = []
    const_nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        ins = node_inputs(node)
        if all(i in constants for i in ins) and node.op_type not in ("RandomNormal", "RandomUniform"):
            const_nodes.append(node)
            constants.update(o for o in node.output if o)
        else:
            nodes.append(node)

    m = len(nodes)
    produced_at: dict[str, int] = {input_name: -1}
    last_use: dict[str, int] = {}
    for pos, node in enumerate(nodes):
        for name in node_inputs(node):
            if name in constants:
                continue
            if name not in produced_at:
                raise SplitrtError(f"node {node.name or node.op_type} reads {name!r} before it is produced")
            last_use[name] = pos
        for out in node.output:
            if out:
                produced_at[out] = pos
    if output_name in constants:
        raise SplitrtError(f"the model output {output_name!r} is a constant: nothing to split")
    last_use[output_name] = m  # the output is live until the end

    # A tensor produced at node q (q = -1: the input) and last used at node u is live across
    # every position p with q < p <= u. Difference array over positions 0..m.
    diff = np.zeros(m + 2, dtype=np.int64)
    for name, u in last_use.items():
        q = produced_at[name]
        diff[q + 1] += 1
        diff[u + 1] -= 1
    live_count = np.cumsum(diff)[: m + 1]

    live_tensor: list[str | None] = [None] * (m + 1)
    for name, u in last_use.items():
        q = produced_at[name]
        for p in range(q + 1, u + 1):
            if live_count[p] == 1:
                live_tensor[p] = name
    return GraphAnalysis(model, input_name, output_name, nodes, const_nodes, constants, live_count, live_tensor)
