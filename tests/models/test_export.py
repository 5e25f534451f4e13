"""Exports of real torchvision models: parity at every cut, DAG cuts, determinism, bad input."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from splitrt.edge_runtime.compute.segments import SegmentRunner, open_session
from splitrt.edge_runtime.errors import SplitrtError
from splitrt.edge_runtime.formats.manifest import Manifest
from splitrt.models.cuts import node_inputs
from splitrt.models.segmenter import PARITY_RTOL, run_shapes, sample_input, segment_model, verify_parity
from splitrt.models.torchvision_export import export_torchvision
from tests.onnx_graphs import two_input_model

PAPER_MODELS = ["alexnet", "resnet18", "vgg16", "mobilenet_v2"]


def brute_force_live(model: onnx.ModelProto, cut_tensor: str) -> set[str]:
    """Tensors crossing the point right after ``cut_tensor`` is produced, recomputed naively."""
    graph = model.graph
    consts = {t.name for t in graph.initializer}
    nodes = list(graph.node)
    for n in nodes:
        if all(i in consts for i in node_inputs(n)):
            consts.update(n.output)
    nodes = [n for n in nodes if n.op_type != "Constant" and not all(i in consts for i in node_inputs(n))]
    if cut_tensor == graph.input[0].name:
        pos = 0
    else:
        pos = next(k for k, n in enumerate(nodes) if cut_tensor in n.output) + 1
    before = {graph.input[0].name} | {o for n in nodes[:pos] for o in n.output}
    after_uses = {i for n in nodes[pos:] for i in node_inputs(n)} | {o.name for o in graph.output}
    return {t for t in before if t in after_uses and t not in consts}


@pytest.mark.parametrize("name", PAPER_MODELS)
def test_parity_at_every_cut(exports, name):
    manifest, report = exports.get_with_parity(name)
    assert report.max_rel_err <= PARITY_RTOL
    assert len(report.per_cut) == manifest.n_segments
    # Independent check against the whole model's final output, splitting at every cut.
    runner = SegmentRunner(manifest)
    x = sample_input(manifest.input, seed=7)
    whole = open_session(manifest.whole_path()).run(None, {manifest.input.name: x})[0]
    scale = float(np.abs(whole).max())
    for cut in range(manifest.n_cuts):
        head = runner.run(x, 0, cut)
        assert head.shape == manifest.cuts[cut].shape
        out = runner.run(head, cut, manifest.n_segments)
        assert float(np.abs(out - whole).max()) <= PARITY_RTOL * scale, f"cut {cut}"


@pytest.mark.parametrize("name", PAPER_MODELS)
def test_every_cut_has_exactly_one_live_tensor(exports, name):
    manifest = exports.get(name)
    whole = onnx.load(str(manifest.whole_path()), load_external_data=False)
    for cut in manifest.cuts[:-1]:
        assert brute_force_live(whole, cut.tensor) == {cut.tensor}


@pytest.mark.parametrize("name", ["googlenet", "efficientnet_b0"])
def test_dag_models_inception_and_squeeze_excite(exports, name):
    """GoogLeNet (inception branches) and EfficientNet-B0 (squeeze-excite gates): every cut
    is a single-tensor cut by an independent brute-force count, and parity holds."""
    manifest, report = exports.get_with_parity(name)
    assert report.max_rel_err <= PARITY_RTOL
    whole = onnx.load(str(manifest.whole_path()))
    for cut in manifest.cuts[:-1]:
        assert brute_force_live(whole, cut.tensor) == {cut.tensor}
    # Each segment is a complete, valid ONNX model on its own.
    for seg in manifest.segments:
        onnx.checker.check_model(onnx.load(str(manifest.segment_path(seg.index))))
    assert manifest.n_segments >= 10


def test_export_is_deterministic(tmp_path):
    a, _ = export_torchvision("resnet18", tmp_path / "a")
    b, _ = export_torchvision("resnet18", tmp_path / "b")
    ja = json.loads((tmp_path / "a" / "manifest.json").read_text())
    jb = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert ja == jb
    assert (tmp_path / "a" / "manifest.json").read_bytes() == (tmp_path / "b" / "manifest.json").read_bytes()
    assert a.digest == b.digest


def test_manifest_schema(exports):
    manifest = exports.get("resnet18")
    data = json.loads((manifest.directory / "manifest.json").read_text())
    assert {"format_version", "source", "input", "cuts", "segments"} <= set(data)
    for cut in data["cuts"]:
        assert {"index", "tensor", "shape", "dtype", "bytes", "flops_before", "flops_after"} <= set(cut)
    for seg in data["segments"]:
        assert {"file", "sha256", "flops", "input", "output"} <= set(seg)
    assert data["source"]["kind"] == "torchvision" and data["source"]["seed"] == 0
    assert data["cuts"][0]["bytes"] == 3 * 224 * 224 * 4  # full offload sends the raw input
    assert data["cuts"][-1]["bytes"] == 0  # fully local sends nothing
    assert Manifest.load(manifest.directory).digest == manifest.digest


def test_unknown_model_name():
    with pytest.raises(SplitrtError, match="unknown model 'resnet19'"):
        export_torchvision("resnet19", "/nonexistent")


def test_weights_file_that_does_not_match(tmp_path):
    import torch

    bad = tmp_path / "bad.pt"
    torch.save({"fc.weight": torch.zeros(3, 3)}, bad)
    with pytest.raises(SplitrtError, match="does not match resnet18"):
        export_torchvision("resnet18", tmp_path / "out", weights=bad)


def test_weights_file_is_used_and_recorded(tmp_path):
    import torch
    import torchvision

    torch.manual_seed(123)
    state = torchvision.models.resnet18(weights=None).state_dict()
    path = tmp_path / "w.pt"
    torch.save(state, path)
    manifest, _ = export_torchvision("resnet18", tmp_path / "out", weights=path)
    assert manifest.source["weights_sha256"] is not None
    seeded, _ = export_torchvision("resnet18", tmp_path / "seeded")
    assert manifest.segments[0].sha256 != seeded.segments[0].sha256


def test_several_inputs_refused(tmp_path):
    with pytest.raises(SplitrtError, match="2 inputs"):
        segment_model(two_input_model(), tmp_path, name="two", source={})


def test_parity_failure_is_detected(exports, tmp_path):
    """A manifest whose segments do not compute the whole model must fail the parity check."""
    manifest = exports.get("resnet18")
    whole = onnx.load(str(manifest.whole_path()))
    # Perturb one weight of the whole model: segments no longer match it.
    init = whole.graph.initializer[0]
    arr = onnx.numpy_helper.to_array(init).copy()
    arr.flat[0] += 100.0
    init.CopyFrom(onnx.numpy_helper.from_array(arr, init.name))
    with pytest.raises(SplitrtError, match="parity check failed"):
        verify_parity(manifest, whole)
    # the same with the reference tensors given, as `segment_model` takes them from its shape run
    run = run_shapes(whole)
    with pytest.raises(SplitrtError, match="parity check failed"):
        verify_parity(manifest, whole, refs=[run.values[c.tensor] for c in manifest.cuts[1:]])
