"""Tiny hand-built ONNX graphs for fast, exact tests of cut discovery, FLOPs and the runtime."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _init(name: str, shape: tuple[int, ...], rng: np.random.Generator) -> onnx.TensorProto:
    return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)


def chain_model(seed: int = 0) -> onnx.ModelProto:
    """x(1,3,8,8) -> Conv(4,3x3,pad1)+bias -> Relu -> MaxPool2 -> Flatten -> Gemm(64->10)."""
    rng = np.random.default_rng(seed)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], kernel_shape=[3, 3], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2], name="pool1"),
        helper.make_node("Flatten", ["p1"], ["f1"], axis=1, name="flat"),
        helper.make_node("Gemm", ["f1", "w2", "b2"], ["y"], transB=1, name="fc"),
    ]
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
        [_init("w1", (4, 3, 3, 3), rng), _init("b1", (4,), rng), _init("w2", (10, 64), rng), _init("b2", (10,), rng)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def residual_model(seed: int = 0) -> onnx.ModelProto:
    """x -> Conv a -> Relu -> [Conv b -> Relu -> Conv c] + skip -> Relu -> Conv d -> y.

    Node order: conv_a, relu_a, conv_b, relu_b, conv_c, add, relu_out, conv_d. Positions 3, 4, 5
    (inside the block) have the block input live beside the branch: never valid cuts.
    A Constant node feeds a Reshape at the end to check constants never count as live.
    """
    rng = np.random.default_rng(seed)
    nodes = [
        helper.make_node("Conv", ["x", "wa"], ["a"], pads=[1, 1, 1, 1], kernel_shape=[3, 3], name="conv_a"),
        helper.make_node("Relu", ["a"], ["ra"], name="relu_a"),
        helper.make_node("Conv", ["ra", "wb"], ["b"], pads=[1, 1, 1, 1], kernel_shape=[3, 3], name="conv_b"),
        helper.make_node("Relu", ["b"], ["rb"], name="relu_b"),
        helper.make_node("Conv", ["rb", "wc"], ["c"], pads=[1, 1, 1, 1], kernel_shape=[3, 3], name="conv_c"),
        helper.make_node("Add", ["c", "ra"], ["s"], name="add"),
        helper.make_node("Relu", ["s"], ["rs"], name="relu_out"),
        helper.make_node(
            "Constant", [], ["shape"], value=numpy_helper.from_array(np.array([1, -1], np.int64)), name="k"
        ),
        helper.make_node("Conv", ["rs", "wd"], ["d"], kernel_shape=[1, 1], name="conv_d"),
        helper.make_node("Reshape", ["d", "shape"], ["y"], name="reshape"),
    ]
    graph = helper.make_graph(
        nodes,
        "residual",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 72])],
        [
            _init("wa", (4, 2, 3, 3), rng),
            _init("wb", (4, 4, 3, 3), rng),
            _init("wc", (4, 4, 3, 3), rng),
            _init("wd", (2, 4, 1, 1), rng),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def two_input_model() -> onnx.ModelProto:
    nodes = [helper.make_node("Add", ["a", "b"], ["y"])]
    graph = helper.make_graph(
        nodes,
        "two",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 4]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 4]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def policy_model(n_nodes: int, n_types: int, max_actions: int, steps: int, seed: int = 0) -> onnx.ModelProto:
    """An on-device policy graph with splitrt.edge_runtime.decide.onnx_policy's interface, small enough for an oracle.

    q = Where(mask, (obs * scale) @ w_obs + type_onehot @ w_type + 0.1 * noise.sum(1), -1e9) and
    action = argmax q; ``scale`` takes the queues (FLOPs) to GFLOP and the positions (m) to 100 m.
    Initializers: scale (2J+1,), w_obs (2J+1, A), w_type (K, A).
    """
    rng = np.random.default_rng(seed)
    d = 2 * n_nodes + 1
    scale = np.array([1e-9] * (n_nodes + 1) + [1e-2] * n_nodes, dtype=np.float32)
    nodes = [
        helper.make_node("Mul", ["obs", "scale"], ["s"]),
        helper.make_node("MatMul", ["s", "w_obs"], ["h_obs"]),
        helper.make_node("MatMul", ["type_onehot", "w_type"], ["h_type"]),
        helper.make_node("ReduceSum", ["noise", "axes"], ["n_sum"], keepdims=0),
        helper.make_node("Mul", ["n_sum", "tenth"], ["h_noise"]),
        helper.make_node("Add", ["h_obs", "h_type"], ["h1"]),
        helper.make_node("Add", ["h1", "h_noise"], ["h"]),
        helper.make_node("Where", ["mask", "h", "masked"], ["q"]),
        helper.make_node("ArgMax", ["q"], ["action"], axis=1, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "policy",
        [
            helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["B", d]),
            helper.make_tensor_value_info("type_onehot", TensorProto.FLOAT, ["B", n_types]),
            helper.make_tensor_value_info("mask", TensorProto.BOOL, ["B", max_actions]),
            helper.make_tensor_value_info("noise", TensorProto.FLOAT, ["B", steps, max_actions]),
        ],
        [
            helper.make_tensor_value_info("q", TensorProto.FLOAT, ["B", max_actions]),
            helper.make_tensor_value_info("action", TensorProto.INT64, ["B"]),
        ],
        [
            numpy_helper.from_array(scale, "scale"),
            _init("w_obs", (d, max_actions), rng),
            _init("w_type", (n_types, max_actions), rng),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "axes"),
            numpy_helper.from_array(np.array(0.1, dtype=np.float32), "tenth"),
            numpy_helper.from_array(np.array(-1e9, dtype=np.float32), "masked"),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
