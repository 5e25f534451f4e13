"""Export a torchvision classification model to ONNX and hand it to the segmenter.

Weights default to a seeded random initialisation (this machine has no internet, and latency
does not depend on weight values); ``weights`` accepts a local ``state_dict`` file. The whole
model is exported once with the TorchScript exporter (``dynamo=False``: exact and ~10x faster
here than dynamo) in eval mode; segments are then cut from the ONNX graph, never from torch
sub-modules (a sliced ``nn.Sequential`` starts in training mode and shared Dropout layers can
flip back to training during export: ANCHORS.md).
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path
from typing import Any

import onnx

from splitrt.edge_runtime.errors import SplitrtError
from splitrt.edge_runtime.formats.manifest import Manifest, sha256_file
from splitrt.models.segmenter import ParityReport, segment_model

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17


def classification_models() -> list[str]:
    """Names of torchvision's classification models (what ``--model`` accepts)."""
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def default_input_shape(name: str) -> tuple[int, int, int, int]:
    """(1, 3, S, S) with S the crop size of the model's default weights recipe (224 for most,
    299 for inception_v3), read from torchvision's metadata without downloading anything."""
    import torchvision

    try:
        transforms = torchvision.models.get_model_weights(name).DEFAULT.transforms()
        size = int(getattr(transforms, "crop_size", [224])[0])
    except Exception:  # models without a weights enum or transforms
        size = 224
    return (1, 3, size, size)


def build_model(name: str, *, seed: int = 0, weights: str | Path | None = None):
    """The torchvision model ``name`` in eval mode, seeded or loaded from ``weights``."""
    import torch
    import torchvision

    known = classification_models()
    if name not in known:
        close = [m for m in known if name.lower()[:4] in m][:6]
        hint = f" (similar: {', '.join(close)})" if close else ""
        raise SplitrtError(f"unknown model {name!r}: not a torchvision classification model{hint}")
    torch.manual_seed(seed)
    kwargs: dict[str, Any] = {"weights": None}
    if name in ("googlenet", "inception_v3"):
        kwargs["aux_logits"] = False  # eval mode never runs them; keep them out of the graph
        kwargs["init_weights"] = True
    model = torchvision.models.get_model(name, **kwargs)
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise SplitrtError(f"weights file {path} does not exist")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise SplitrtError(f"cannot read weights file {path}: {str(exc).splitlines()[0]}") from None
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise SplitrtError(f"weights file {path} does not hold a state_dict")
        own = model.state_dict()
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        bad_shapes = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
        if missing or unexpected or bad_shapes:
            raise SplitrtError(
                f"weights file {path} does not match {name}: {len(missing)} missing key(s) {missing[:3]}, "
                f"{len(unexpected)} unexpected {unexpected[:3]}, {len(bad_shapes)} of another shape {bad_shapes[:3]}"
            )
        model.load_state_dict(state, strict=True)
    model.eval()
    for module in model.modules():
        module.eval()  # belt and braces: no sub-module may stay in training mode
    return model


def export_onnx(model, input_shape: tuple[int, ...], opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """TorchScript-based ONNX export of an eval-mode model, in memory."""
    import torch

    buf = io.BytesIO()
    dummy = torch.zeros(input_shape)
    with warnings.catch_warnings(), torch.no_grad(), _no_mha_fastpath():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (dummy,),
            buf,
            dynamo=False,
            opset_version=opset,
            input_names=["input"],
            output_names=["logits"],
            do_constant_folding=True,
        )
    return onnx.load_from_string(buf.getvalue())


@contextlib.contextmanager
def _no_mha_fastpath():
    """Without autograd, ``nn.MultiheadAttention`` (ViT, ...) takes a fused fast path,
    ``aten::_native_multi_head_attention``, that has no ONNX export; the plain path computes the
    same attention from exportable ops."""
    import torch

    mha = getattr(torch.backends, "mha", None)
    if mha is None or not hasattr(mha, "set_fastpath_enabled"):
        yield
        return
    before = mha.get_fastpath_enabled()
    mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        mha.set_fastpath_enabled(before)


def export_torchvision(
    name: str,
    out_dir: str | Path,
    *,
    seed: int = 0,
    weights: str | Path | None = None,
    opset: int = DEFAULT_OPSET,
    granularity: str = "layer",
    input_shape: tuple[int, ...] | None = None,
) -> tuple[Manifest, ParityReport]:
    """Export torchvision model ``name`` into ``out_dir`` (segments + manifest.json)."""
    import torch
    import torchvision

    model = build_model(name, seed=seed, weights=weights)
    shape = tuple(input_shape) if input_shape else default_input_shape(name)
    proto = export_onnx(model, shape, opset)
    source = {
        "kind": "torchvision",
        "name": name,
        "seed": seed,
        "weights_sha256": sha256_file(weights) if weights else None,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "exporter": "torch.onnx.export(dynamo=False)",
    }
    return segment_model(proto, out_dir, name=name, source=source, granularity=granularity, input_shape=shape)
