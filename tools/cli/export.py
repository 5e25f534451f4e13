"""Export DNNs as verified per-layer ONNX segments plus manifest.json.

Each model goes to OUT/<name>/ (segments seg_NNN.onnx, the whole model model.onnx, manifest.json).
Cuts are found on the ONNX graph: a cut is a point where exactly one tensor crosses, so DAG
models (residual, inception, squeeze-excite, dense blocks) are never cut inside a branch.
Parity against the whole model is checked at every cut before the manifest is written.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def _shape(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(d) for d in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--input-shape {text!r} must be integers like 1,3,224,224") from None
    if any(d <= 0 for d in dims):
        raise argparse.ArgumentTypeError(f"--input-shape {text!r} must be positive")
    return dims


def configure(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--model",
        action="append",
        metavar="NAME[,NAME...]",
        help="torchvision classification model(s), e.g. alexnet,resnet18,vgg16,mobilenet_v2 (repeatable)",
    )
    src.add_argument("--onnx", type=Path, metavar="FILE", help="a single-input ONNX model of your own")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="each model is written to DIR/<name>/")
    p.add_argument("--name", help="directory/model name for --onnx (default: the file's stem)")
    p.add_argument("--weights", type=Path, metavar="FILE", help="local state_dict for the (single) --model")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights when --weights is not given")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset for torchvision exports")
    p.add_argument(
        "--granularity",
        choices=["layer", "op"],
        default="layer",
        help="layer: cut only before conv/pool/fc layers (the paper's notion); op: every valid cut",
    )
    p.add_argument(
        "--input-shape", type=_shape, metavar="N,C,H,W", help="static input shape (default: the model's own, batch 1)"
    )


def main(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from splitrt.edge_runtime.errors import SplitrtError

    if args.onnx is not None:
        from splitrt.edge_runtime.formats.manifest import sha256_file
        from splitrt.models.segmenter import load_onnx, segment_model

        name = args.name or args.onnx.stem
        start = time.perf_counter()
        model = load_onnx(args.onnx)
        source = {"kind": "onnx", "file": args.onnx.name, "sha256": sha256_file(args.onnx)}
        manifest, parity = segment_model(
            model,
            args.out / name,
            name=name,
            source=source,
            granularity=args.granularity,
            input_shape=args.input_shape,
        )
        _report(manifest, parity, time.perf_counter() - start)
        return 0

    from splitrt.models.torchvision_export import export_torchvision

    names = [n.strip() for group in args.model for n in group.split(",") if n.strip()]
    if args.weights is not None and len(names) != 1:
        raise SplitrtError(f"--weights applies to one model, but {len(names)} were given: {', '.join(names)}")
    bar = tqdm(names, desc="export", unit="model", disable=len(names) < 2)
    for name in bar:
        bar.set_postfix_str(name)
        start = time.perf_counter()
        manifest, parity = export_torchvision(
            name,
            args.out / name,
            seed=args.seed,
            weights=args.weights,
            opset=args.opset,
            granularity=args.granularity,
            input_shape=args.input_shape,
        )
        bar.clear()
        _report(manifest, parity, time.perf_counter() - start)
    return 0


def _report(manifest, parity, seconds: float) -> None:
    fixed = manifest.source.get("fixed_input_dims")
    if fixed:
        print(
            f"{manifest.model}: the input's free dims were fixed: {', '.join(f'{k} = {v}' for k, v in fixed.items())}"
        )
    print(
        f"{manifest.model}: {manifest.n_segments} segments, {manifest.n_cuts} cuts, "
        f"{manifest.total_flops / 1e9:.2f} GFLOPs, parity {parity.max_rel_err:.1e} of output scale, "
        f"{seconds:.1f} s -> {manifest.directory}"
    )
