"""Cut discovery on hand-built graphs, against hand-derived live sets."""

from __future__ import annotations

import pytest

from splitrt.edge_runtime.errors import SplitrtError
from splitrt.models.cuts import analyse
from tests.onnx_graphs import chain_model, residual_model, two_input_model


def test_chain_every_position_is_valid():
    an = analyse(chain_model())
    assert an.n_positions == 6
    assert an.valid_positions() == [0, 1, 2, 3, 4, 5]
    assert an.live_tensor == ["x", "c1", "r1", "p1", "f1", "y"]


def test_chain_layer_granularity_merges_activations_and_flatten():
    an = analyse(chain_model())
    # before conv1 (input), before pool1, before fc, end: Relu stays with conv1, Flatten with pool1
    assert an.cut_positions("layer") == [0, 2, 4, 5]
    assert an.cut_positions("op") == [0, 1, 2, 3, 4, 5]


def test_residual_block_is_never_cut_inside():
    an = analyse(residual_model())
    # non-constant nodes: conv_a relu_a conv_b relu_b conv_c add relu_out conv_d reshape
    assert [n.name for n in an.nodes] == [
        "conv_a",
        "relu_a",
        "conv_b",
        "relu_b",
        "conv_c",
        "add",
        "relu_out",
        "conv_d",
        "reshape",
    ]
    assert an.live_count.tolist() == [1, 1, 1, 2, 2, 2, 1, 1, 1, 1]
    assert an.valid_positions() == [0, 1, 2, 6, 7, 8, 9]
    assert an.cut_positions("layer") == [0, 2, 7, 9]


def test_constants_are_not_live():
    an = analyse(residual_model())
    assert "shape" in an.constants
    assert [n.name for n in an.const_nodes] == ["k"]


def test_several_inputs_refused_with_names():
    with pytest.raises(SplitrtError, match=r"2 inputs \(a, b\).*single-input"):
        analyse(two_input_model())


def test_unknown_granularity_refused():
    with pytest.raises(SplitrtError, match="granularity 'block'"):
        analyse(chain_model()).cut_positions("block")
