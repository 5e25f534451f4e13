"""FLOPs of one ONNX node, from the statically inferred shapes (SYSTEM_MODEL.md eq 6).

| op | FLOPs | source |
|---|---|---|
| Conv | 2 * prod(out_spatial) * (C_in/groups * prod(kernel) + b) * C_out * N, b = 1 with bias, else 0 | eq (6) |
| ConvTranspose | 2 * prod(in_spatial) * C_in/groups * prod(kernel) * C_out * N | eq (6) form |
| Gemm | rows * (2 * U_in - 1) * U_out (bias not counted) | eq (6) |
| MatMul | batch * M * (2 * K - 1) * N | eq (6) form |
| Einsum | prod(out) * (2 * K - 1), K = product of the summed-over indices' sizes (one operand: prod(in)) | MatMul's form |
| MaxPool, AveragePool | prod(kernel) per output element | one compare/add per window cell |
| GlobalAveragePool/MaxPool, Reduce* | 1 per input element | |
| BatchNormalization | 2 per element (scale and shift, eval mode) | |
| LayerNormalization, InstanceNormalization, GroupNormalization | 5 per element | |
| Sigmoid, Tanh, Exp, Erf, HardSigmoid, HardSwish, Gelu, Mish, Softplus, Log, Sqrt, Reciprocal | 4 per element | transcendental approximated as 4 |
| Softmax, LogSoftmax | 5 per element | exp, sum, divide |
| Relu, LeakyRelu, PRelu, Clip, Neg, Abs, Add, Sub, Mul, Div, Max, Min, Pow, Sum, Mean, Where | 1 per output element | |
| shape and data movement (Reshape, Flatten, Transpose, Concat, Split, Slice, Gather, Pad, Squeeze, Unsqueeze, Identity, Dropout, Cast, Shape, Expand, Tile, Resize...) | 0 | no arithmetic |
| any other op | 1 per output element | recorded in the manifest's source.uncounted_ops |

Shapes come from ONNX shape inference; a node whose shapes are unknown is an error raised by the
caller, never a guess.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import helper

Shape = tuple[int, ...]

ZERO_COST = frozenset(
    [
        "Reshape",
        "Flatten",
        "Transpose",
        "Concat",
        "Split",
        "Slice",
        "Gather",
        "GatherElements",
        "GatherND",
        "Pad",
        "Squeeze",
        "Unsqueeze",
        "Identity",
        "Dropout",
        "Cast",
        "CastLike",
        "Shape",
        "Size",
        "Expand",
        "Tile",
        "Resize",
        "Upsample",
        "DepthToSpace",
        "SpaceToDepth",
        "Constant",
        "ConstantOfShape",
        "Range",
        "NonZero",
        "ScatterND",
        "ScatterElements",
        "Compress",
        "OneHot",
    ]
)
ONE_PER_ELEMENT = frozenset(
    [
        "Relu",
        "LeakyRelu",
        "PRelu",
        "Clip",
        "Neg",
        "Abs",
        "Add",
        "Sub",
        "Mul",
        "Div",
        "Max",
        "Min",
        "Pow",
        "Sum",
        "Mean",
        "Where",
        "Equal",
        "Less",
        "Greater",
        "Not",
        "And",
        "Or",
        "Sign",
        "Floor",
        "Ceil",
        "Round",
        "ThresholdedRelu",
        "Selu",
        "Elu",
        "Celu",
    ]
)
FOUR_PER_ELEMENT = frozenset(
    [
        "Sigmoid",
        "Tanh",
        "Exp",
        "Erf",
        "HardSigmoid",
        "HardSwish",
        "Gelu",
        "Mish",
        "Softplus",
        "Softsign",
        "Log",
        "Sqrt",
        "Reciprocal",
        "Sin",
        "Cos",
    ]
)
REDUCE = frozenset(
    [
        "GlobalAveragePool",
        "GlobalMaxPool",
        "ReduceMean",
        "ReduceSum",
        "ReduceMax",
        "ReduceMin",
        "ReduceL2",
        "ReduceProd",
    ]
)


def _attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _n(shape: Shape) -> int:
    return int(np.prod(shape, dtype=np.int64))


def node_flops(node: onnx.NodeProto, shape_of: Callable[[str], Shape]) -> tuple[int, bool]:
    """(FLOPs, counted_by_rule) for ``node``; ``shape_of(tensor_name)`` returns a static shape.

    ``counted_by_rule`` is False for op types without a rule in the table above (they are
    charged 1 FLOP per output element and reported).
    """
    op = node.op_type
    inputs = list(node.input)

    def out_elems() -> int:
        return sum(_n(shape_of(o)) for o in node.output if o)

    if op == "Conv":
        w = shape_of(inputs[1])  # (C_out, C_in/groups, k...)
        out = shape_of(node.output[0])  # (N, C_out, spatial...)
        has_bias = len(inputs) > 2 and bool(inputs[2])
        per_out = w[1] * _n(w[2:]) + (1 if has_bias else 0)
        return 2 * out[0] * _n(out[2:]) * per_out * w[0], True
    if op == "ConvTranspose":
        w = shape_of(inputs[1])  # (C_in, C_out/groups, k...)
        x = shape_of(inputs[0])
        return 2 * x[0] * _n(x[2:]) * w[0] * w[1] * _n(w[2:]), True
    if op == "Gemm":
        a = shape_of(inputs[0])
        b = shape_of(inputs[1])
        rows, u_in = (a[1], a[0]) if _attr(node, "transA", 0) else (a[0], a[1])
        u_out = b[0] if _attr(node, "transB", 0) else b[1]
        return rows * (2 * u_in - 1) * u_out, True
    if op == "MatMul":
        a = shape_of(inputs[0])
        out = shape_of(node.output[0])
        k = a[-1]
        return _n(out) * (2 * k - 1), True
    if op == "Einsum":
        return _einsum_flops(str(_attr(node, "equation", b"")), [shape_of(i) for i in inputs], out_elems()), True
    if op in ("MaxPool", "AveragePool", "LpPool"):
        kernel = _attr(node, "kernel_shape", [1])
        return out_elems() * _n(tuple(kernel)), True
    if op in REDUCE:
        return _n(shape_of(inputs[0])), True
    if op == "BatchNormalization":
        return 2 * out_elems(), True
    if op in ("LayerNormalization", "InstanceNormalization", "GroupNormalization"):
        return 5 * out_elems(), True
    if op in ("Softmax", "LogSoftmax"):
        return 5 * out_elems(), True
    if op in FOUR_PER_ELEMENT:
        return 4 * out_elems(), True
    if op in ONE_PER_ELEMENT:
        return out_elems(), True
    if op in ZERO_COST:
        return 0, True
    return out_elems(), False


def _einsum_flops(equation: str | bytes, shapes: list[Shape], out_elems: int) -> int:
    """Einsum as a contraction: each output element sums K products (K = the product of the sizes
    of the indices that appear in the operands but not in the output), as MatMul is counted."""
    eq = (equation.decode() if isinstance(equation, bytes) else equation).replace(" ", "")
    lhs, _, rhs = eq.partition("->")
    terms = lhs.split(",")
    if not _:  # implicit output: the indices that appear once, in alphabetical order
        letters = "".join(terms).replace(".", "")
        rhs = "".join(sorted(c for c in set(letters) if letters.count(c) == 1))
    sizes: dict[str, int] = {}
    for term, shape in zip(terms, shapes, strict=False):
        named = term.replace("...", "")
        offset = len(shape) - len(named) if "..." in term else 0
        before = term.index("...") if "..." in term else len(term)
        for k, c in enumerate(named):
            dim = k if k < before else k + offset
            if dim < len(shape):
                sizes[c] = max(sizes.get(c, 1), int(shape[dim]))
    summed = [c for c in sizes if c not in rhs]
    k = int(np.prod([sizes[c] for c in summed], dtype=np.int64)) if summed else 1
    if len(terms) == 1:
        return _n(shapes[0]) if shapes else out_elems
    return out_elems * (2 * k - 1)
