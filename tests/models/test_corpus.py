"""Any single-input vision model exports: a corpus of torchvision families, a user ONNX with dynamic
axes, and the models that cannot be split refused with the reason.

Each corpus model is checked against things the export does not compute itself: the chained
segments against the *torch* model's output on a fresh input, and the FLOPs total against
`torch.utils.flop_counter.FlopCounterMode` (torch's own count of its conv and matmul kernels) and,
for VGG16 and ViT-B/16, a closed formula written from the architectures' papers.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from splitrt.edge_runtime.compute.segments import SegmentRunner
from splitrt.edge_runtime.errors import SplitrtError
from splitrt.models.segmenter import PARITY_RTOL, segment_model
from splitrt.models.torchvision_export import (
    _no_mha_fastpath,
    build_model,
    default_input_shape,
)

torch = pytest.importorskip("torch")

#: family -> models (exported into the session's export cache, shared with the other export tests)
FAMILIES = {
    "plain chain": ["alexnet", "vgg16"],
    "fire modules": ["squeezenet1_1"],
    "residual": ["resnet18", "resnext50_32x4d"],
    "inception": ["googlenet", "inception_v3"],
    "dense": ["densenet121"],
    "squeeze-excite": ["efficientnet_b0", "regnet_y_400mf"],
    "inverted residual": ["mobilenet_v2", "mobilenet_v3_small", "mnasnet0_5"],
    "channel shuffle": ["shufflenet_v2_x0_5"],
    "regnet": ["regnet_x_400mf"],
    "convnext": ["convnext_tiny"],
    "transformer": ["vit_b_16", "swin_t", "maxvit_t"],
}
#: over ~5 s to export here: deselect with -m "not slow" for a quick run (make test runs them)
SLOW = {"inception_v3", "resnext50_32x4d", "vit_b_16", "swin_t", "maxvit_t", "convnext_tiny"}
CORPUS = [
    pytest.param(name, id=name, marks=[pytest.mark.slow] if name in SLOW else [])
    for names in FAMILIES.values()
    for name in names
]


def torch_reference(name: str, x: np.ndarray) -> tuple[np.ndarray, int]:
    """The torch model's output on ``x`` and torch's FLOP count of that forward pass."""
    from torch.utils.flop_counter import FlopCounterMode

    model = build_model(name)
    with torch.no_grad(), _no_mha_fastpath(), FlopCounterMode(display=False) as counter:
        y = model(torch.from_numpy(x)).numpy()
    return y, int(counter.get_total_flops())


@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", CORPUS)
def test_corpus_model_exports_with_parity_cuts_and_flops(exports, tmp_path, name):
    manifest, parity = exports.get_with_parity(name)  # exported once per session (the formula tests reuse it)
    assert manifest.input.shape == default_input_shape(name)
    # the export's own check: every cut equals the whole (unfolded) ONNX model's tensor
    assert len(parity.per_cut) == manifest.n_cuts - 1 and parity.max_rel_err <= PARITY_RTOL
    assert manifest.n_cuts - 2 >= 4, f"{name}: only {manifest.n_cuts - 2} cuts between input and output"
    # independent: the chained segments against torch on another input
    x = np.random.default_rng(7).standard_normal(manifest.input.shape).astype(np.float32)
    ref, torch_flops = torch_reference(name, x)
    runner = SegmentRunner(manifest, threads=1)
    y = x
    for s in range(manifest.n_segments):
        y = runner.run_segment(y, s)
    assert y.shape == ref.shape
    assert np.max(np.abs(y - ref)) <= PARITY_RTOL * np.max(np.abs(ref))
    # FLOPs: ours add the elementwise ops torch's counter leaves out (a few %), nothing more
    assert manifest.source["uncounted_ops"] == []
    assert 0.9 <= manifest.total_flops / torch_flops <= 1.1, (manifest.total_flops, torch_flops)


def gemm(rows: int, u_in: int, u_out: int) -> int:
    return rows * (2 * u_in - 1) * u_out


def test_vgg16_flops_match_the_closed_formula(exports):
    """Simonyan & Zisserman's configuration D at 224 x 224: 13 3x3 convs (with bias) and 3 fc layers."""
    plan = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
    size, c_in, flops = 224, 3, 0
    for v in plan:
        if v == "M":
            flops += (size // 2) ** 2 * c_in * 4  # 2x2 max pool: 4 compares per output
            size //= 2
        else:
            flops += 2 * size * size * (c_in * 9 + 1) * v + size * size * v  # conv + bias, ReLU
            c_in = v
    # the adaptive average pool to 7 x 7 is an identity at 224 (at most 1 FLOP per element): left out
    flops += gemm(1, 25088, 4096) + 4096 + gemm(1, 4096, 4096) + 4096 + gemm(1, 4096, 1000)
    total = exports.get("vgg16").total_flops
    assert abs(total - flops) / flops <= 0.10, (total, flops)


@pytest.mark.slow
def test_vit_b16_flops_match_the_closed_formula(exports):
    """Dosovitskiy et al.'s ViT-B/16 at 224: 196 patches + 1 token, width 768, 12 blocks, MLP 3072."""
    n, d, mlp, layers = 197, 768, 3072, 12
    per_block = 2 * (4 * n * d * d + 2 * n * n * d + 2 * n * d * mlp)  # qkv + out proj, QK^T and AV, MLP
    flops = 2 * 196 * 768 * 3 * 16 * 16 + layers * per_block + 2 * d * 1000
    manifest = exports.get("vit_b_16")
    assert abs(manifest.total_flops - flops) / flops <= 0.10, (manifest.total_flops, flops)


def dynamic_onnx(tmp_path, name: str = "shufflenet_v2_x0_5", axes: dict | None = None):
    """A user's ONNX file exported with dynamic batch and spatial axes (shape ops everywhere)."""
    import io
    import warnings

    model = build_model(name)
    buf = io.BytesIO()
    axes = axes if axes is not None else {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.zeros(1, 3, 224, 224),),
            buf,
            dynamo=False,
            opset_version=17,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": axes, "logits": {0: "batch"}},
        )
    proto = onnx.load_from_string(buf.getvalue())
    path = tmp_path / f"{name}-dynamic.onnx"
    onnx.save(proto, str(path))
    return model, proto, path


def test_a_user_onnx_with_dynamic_axes_exports_for_the_shape_given_and_says_what_it_fixed(tmp_path):
    model, proto, _ = dynamic_onnx(tmp_path)
    dims = [d.dim_param for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "", "height", "width"]  # symbolic, as the user's file has them
    with pytest.raises(SplitrtError, match=r"symbolic dims \['batch', 3, 'height', 'width'\]; pass --input-shape"):
        segment_model(proto, tmp_path / "no-shape", name="shuffle", source={})
    with pytest.raises(SplitrtError, match="dim 1 of input 'input' is fixed at 3 in the model, not 4"):
        segment_model(proto, tmp_path / "bad", name="shuffle", source={}, input_shape=(1, 4, 160, 160))
    manifest, parity = segment_model(proto, tmp_path / "s", name="shuffle", source={}, input_shape=(1, 3, 160, 160))
    assert manifest.source["fixed_input_dims"] == {"batch": 1, "height": 160, "width": 160}
    assert manifest.source["shape_ops_folded"] > 0  # the channel shuffles' size computations
    assert manifest.input.shape == (1, 3, 160, 160) and parity.max_rel_err <= PARITY_RTOL
    assert manifest.n_cuts - 2 >= 4
    x = np.random.default_rng(3).standard_normal((1, 3, 160, 160)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    runner = SegmentRunner(manifest, threads=1)
    y = x
    for s in range(manifest.n_segments):
        y = runner.run_segment(y, s)
    assert np.max(np.abs(y - ref)) <= PARITY_RTOL * np.max(np.abs(ref))


def test_only_a_dynamic_batch_is_fixed_to_one_by_default(tmp_path):
    _, proto, _ = dynamic_onnx(tmp_path, "mobilenet_v3_small", axes={0: "N"})
    manifest, _ = segment_model(proto, tmp_path / "s", name="mnv3", source={})
    assert manifest.source["fixed_input_dims"] == {"N": 1} and manifest.input.shape == (1, 3, 224, 224)


def test_the_export_verb_says_which_dims_it_fixed(tmp_path):
    import subprocess
    import sys

    _, _, path = dynamic_onnx(tmp_path, "mobilenet_v3_small", axes={0: "N", 2: "H", 3: "W"})
    done = subprocess.run(
        [sys.executable, "-m", "splitrt.tools.cli.main", "export", "--onnx", str(path), "--out", str(tmp_path / "out"),
         "--input-shape", "1,3,192,192"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    # (the manifest keeps its JSON keys sorted)
    assert "the input's free dims were fixed: H = 192, N = 1, W = 192" in done.stdout


def _model(nodes, name: str = "m") -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_model_whose_only_cuts_are_its_input_and_output_is_refused_with_the_reason(tmp_path):
    # y = relu(x) + sigmoid(x): x stays live beside the first branch, then both branches
    both = _model(
        [
            helper.make_node("Relu", ["x"], ["a"]),
            helper.make_node("Sigmoid", ["x"], ["b"]),
            helper.make_node("Add", ["a", "b"], ["y"]),
        ]
    )
    with pytest.raises(SplitrtError, match="no point between its input and its output is crossed by a single tensor"):
        segment_model(both, tmp_path / "a", name="both", source={}, granularity="op")
    with pytest.raises(SplitrtError, match="at least 2 tensors cross every one of the 2 positions"):
        segment_model(both, tmp_path / "b", name="both", source={})
    # single-tensor points exist, but none before a layer: the error says to cut at op granularity
    chain = _model([helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Sigmoid", ["a"], ["y"])])
    with pytest.raises(SplitrtError, match="use --granularity op"):
        segment_model(chain, tmp_path / "c", name="chain", source={})
    manifest, _ = segment_model(chain, tmp_path / "d", name="chain", source={}, granularity="op")
    assert manifest.n_cuts == 3
    with pytest.raises(SplitrtError, match="single operation"):
        segment_model(_model([helper.make_node("Relu", ["x"], ["y"])]), tmp_path / "e", name="one", source={})
