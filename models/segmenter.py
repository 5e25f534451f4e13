"""Split a single-input ONNX model into per-cut segment files plus ``manifest.json``.

This is the torch-free half of `splitrt export` (`splitrt export --onnx FILE` uses only this);
`splitrt.models.torchvision_export` produces the ONNX model for a torchvision name and hands it here.
Parity is checked before the manifest is written: every cut tensor produced by chaining the
segments with ONNX Runtime must equal the same tensor computed by the whole model.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper, shape_inference

from splitrt.edge_runtime.compute.segments import SegmentRunner, session_options
from splitrt.edge_runtime.errors import SplitrtError
from splitrt.edge_runtime.formats.manifest import Cut, Manifest, Segment, TensorSpec, sha256_file
from splitrt.models.cuts import analyse, node_inputs
from splitrt.models.flops import node_flops

log = logging.getLogger(__name__)

WHOLE_FILE = "model.onnx"
#: Parity tolerance: max |chain - whole| <= PARITY_RTOL * max |whole| at every cut.
PARITY_RTOL = 1e-4


@dataclass(frozen=True)
class ParityReport:
    max_rel_err: float  # worst over all cuts of max|chain - whole| / max|whole|
    per_cut: tuple[float, ...]


def load_onnx(path: str | Path) -> onnx.ModelProto:
    """Load and check an ONNX file, turning every failure into one clear line."""
    path = Path(path)
    if not path.is_file():
        raise SplitrtError(f"ONNX file {path} does not exist")
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as exc:  # protobuf DecodeError, onnx ValidationError, OSError
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise SplitrtError(f"{path} is not a valid ONNX model: {first}") from None
    return model


def make_static(
    model: onnx.ModelProto, input_shape: Sequence[int] | None = None
) -> tuple[onnx.ModelProto, dict[str, int]]:
    """Give the single input a static shape: ``input_shape`` if given, else batch 1 for a symbolic
    leading dim. Any other symbolic dim is an error that asks for ``--input-shape``.

    Returns (the model, {dim: value} for every dim that was not a fixed number before, named by
    its symbol when it had one, else by its position, e.g. ``{"batch_size": 1, "height": 256}``)."""
    model = _copy(model)
    init = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in init]
    if len(inputs) != 1:
        analyse(model)  # raises the "several inputs" error with names
    dims = inputs[0].type.tensor_type.shape.dim
    current = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in dims]
    names = [d.dim_param if d.HasField("dim_param") and d.dim_param else f"dim {k}" for k, d in enumerate(dims)]
    if input_shape is not None:
        if len(input_shape) != len(dims):
            raise SplitrtError(
                f"--input-shape {list(input_shape)} has {len(input_shape)} dims; input "
                f"{inputs[0].name!r} has {len(dims)}"
            )
        clash = [
            (k, c, v) for k, (c, v) in enumerate(zip(current, input_shape, strict=True)) if c is not None and c != v
        ]
        if clash:
            k, c, v = clash[0]
            raise SplitrtError(
                f"--input-shape {list(input_shape)}: dim {k} of input {inputs[0].name!r} is fixed at {c} in the model, not {v}"
            )
        new = list(input_shape)
    else:
        new = [1 if (i == 0 and d is None) else d for i, d in enumerate(current)]
        if any(d is None for d in new):
            shown = [c if c is not None else names[k] for k, c in enumerate(current)]
            raise SplitrtError(
                f"input {inputs[0].name!r} has symbolic dims {shown}; pass --input-shape (e.g. 1,3,224,224)"
            )
    fixed = {names[k]: int(v) for k, (c, v) in enumerate(zip(current, new, strict=True)) if c is None}
    for d, v in zip(dims, new, strict=True):
        d.Clear()
        d.dim_value = int(v)
    # Clear stale shapes downstream of the input so inference recomputes them for the new shape.
    del model.graph.value_info[:]
    for out in model.graph.output:
        out.type.tensor_type.ClearField("shape")
    return model, fixed


def weightless(model: onnx.ModelProto, keep_bytes: int = 4096) -> tuple[onnx.ModelProto, list[onnx.TensorProto]]:
    """A copy of ``model`` whose large initializers became graph inputs of the same type.

    Shape inference and the parity probe then never serialise hundreds of MB of weights (VGG16:
    553 MB). Small initializers (reshape targets and the like) keep their data, so shape
    inference can still propagate values through them. Returns (light model, moved tensors).
    """
    light = onnx.ModelProto()
    light.ir_version = model.ir_version
    light.opset_import.extend(model.opset_import)
    light.functions.extend(model.functions)
    g = light.graph
    g.name = model.graph.name
    g.node.extend(model.graph.node)
    g.input.extend(model.graph.input)
    g.output.extend(model.graph.output)
    g.value_info.extend(model.graph.value_info)
    moved = []
    declared = {i.name for i in model.graph.input}
    for t in model.graph.initializer:
        nbytes = int(np.prod(t.dims, dtype=np.int64)) * np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
        if nbytes <= keep_bytes:
            g.initializer.append(t)
        else:
            moved.append(t)
            if t.name not in declared:
                g.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    return light, moved


def infer_shapes(model: onnx.ModelProto) -> dict[str, tuple[tuple[int, ...], int]]:
    """name -> (static shape, ONNX elem type) for every tensor shape inference could resolve."""
    light, _ = weightless(model)
    try:
        inferred = shape_inference.infer_shapes(light, check_type=True, strict_mode=True, data_prop=True)
    except Exception as exc:
        raise SplitrtError(f"ONNX shape inference failed: {str(exc).splitlines()[0]}") from None
    table: dict[str, tuple[tuple[int, ...], int]] = {}
    g = inferred.graph
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        tt = vi.type.tensor_type
        if not tt.HasField("shape"):
            continue
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim)
        if all(d > 0 for d in dims) or dims == ():
            table[vi.name] = (dims, tt.elem_type)
    for t in model.graph.initializer:
        table[t.name] = (tuple(t.dims), t.data_type)
    return table


@dataclass(frozen=True)
class RunTable:
    """What one real run of the whole model saw: every node output's shape, element type and value.

    ``values`` hold every tensor of the run (the values of the cut tensors are the parity reference
    of `verify_parity`; the values of ``Shape`` / ``Size`` outputs are what `fold_shapes` folds)."""

    shapes: dict[str, tuple[tuple[int, ...], int]]
    values: dict[str, np.ndarray]


def run_shapes(model: onnx.ModelProto, *, seed: int = 0) -> RunTable:
    """Run ``model`` (its single input static, `make_static`) once with ONNX Runtime on
    `sample_input`, every node output made a graph output, no graph optimisation (so every stored
    tensor exists as stored), and record what came out.

    This is the ground truth for every tensor's shape, whatever ONNX shape inference leaves
    symbolic (reshapes whose target is computed at run time from ``Shape``/``Gather``/``Concat``)."""
    light, moved = weightless(model)
    outputs = {o.name for o in light.graph.output}
    for name in [o for n in light.graph.node for o in n.output if o and o not in outputs]:
        vi = onnx.ValueInfoProto()
        vi.name = name  # untyped: ONNX Runtime takes the type from the graph
        light.graph.output.append(vi)
    opts = session_options(1)
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        sess = ort.InferenceSession(light.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise SplitrtError(f"ONNX Runtime cannot load the model: {str(exc).strip().splitlines()[0]}") from None
    moved_names = {m.name for m in moved}
    [inp] = [i for i in model.graph.input if i.name not in moved_names | {x.name for x in model.graph.initializer}]
    tt = inp.type.tensor_type
    spec = TensorSpec(inp.name, tuple(d.dim_value for d in tt.shape.dim), _np_dtype(tt.elem_type))
    feeds = {m.name: numpy_helper.to_array(m) for m in moved}
    feeds[spec.name] = sample_input(spec, seed)
    wanted = [o.name for o in sess.get_outputs()]
    try:
        got = sess.run(wanted, feeds)
    except Exception as exc:
        raise SplitrtError(f"the model does not run on its input shape: {str(exc).strip().splitlines()[0]}") from None
    values = {spec.name: feeds[spec.name]}
    values.update((n, v) for n, v in zip(wanted, got, strict=True) if isinstance(v, np.ndarray))
    shapes = {n: (tuple(int(d) for d in v.shape), helper.np_dtype_to_tensor_dtype(v.dtype)) for n, v in values.items()}
    return RunTable(shapes, values)


def fold_shapes(model: onnx.ModelProto, run: RunTable) -> tuple[onnx.ModelProto, int]:
    """A copy of ``model`` whose ``Shape`` and ``Size`` nodes are Constant nodes holding the values
    the real run gave them (exact: the input shape is static). The arithmetic on them then depends
    on constants only, so cut discovery treats it as constant (each segment carries its copy) and
    it no longer keeps an early tensor live across later positions. Returns (model, nodes folded)."""
    out = _copy(model)
    folded = 0
    for i, node in enumerate(out.graph.node):
        if node.op_type in ("Shape", "Size") and node.output[0] in run.values:
            value = run.values[node.output[0]]
            const = helper.make_node(
                "Constant",
                [],
                [node.output[0]],
                name=(node.name or node.op_type) + "_folded",
                value=numpy_helper.from_array(value.astype(np.int64), node.output[0]),
            )
            out.graph.node[i].CopyFrom(const)
            folded += 1
    return out, folded


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def _strip_doc(model: onnx.ModelProto) -> None:
    """Drop doc strings (exporters put stack traces there), so files depend only on the graph."""
    model.doc_string = ""
    model.graph.doc_string = ""
    for node in model.graph.node:
        node.doc_string = ""


def _np_dtype(elem_type: int) -> str:
    return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)).name


def _label(nodes: Sequence[onnx.NodeProto]) -> str:
    """A readable name for a segment from its first layer node ('/layer1/layer1.0/conv1/Conv' ->
    'layer1.0/conv1')."""
    from splitrt.models.cuts import LAYER_OPS

    node = next((n for n in nodes if n.op_type in LAYER_OPS), nodes[0])
    parts = [p for p in node.name.strip("/").split("/") if p]
    if parts and parts[-1].split("_")[0] == node.op_type:
        parts = parts[:-1]
    parts = [p for i, p in enumerate(parts) if not (i + 1 < len(parts) and parts[i + 1].startswith(p + "."))]
    return "/".join(parts[:2]) or node.op_type


def segment_model(
    model: onnx.ModelProto,
    out_dir: str | Path,
    *,
    name: str,
    source: dict[str, Any],
    granularity: str = "layer",
    input_shape: Sequence[int] | None = None,
    keep_whole: bool = True,
    parity_seed: int = 0,
) -> tuple[Manifest, ParityReport]:
    """Write segments, the whole model and ``manifest.json`` into ``out_dir``; verify parity.

    Returns the loaded manifest and the parity report. Raises `SplitrtError` when the model
    cannot be split (several inputs, unknown shapes) or parity fails.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model, fixed = make_static(model, input_shape)
    if fixed:
        log.info("%s: fixed the input's dims %s", name, ", ".join(f"{k} = {v}" for k, v in fixed.items()))
    _strip_doc(model)
    reference = model  # parity is checked against the model before folding
    run = run_shapes(model, seed=parity_seed)
    model, folded = fold_shapes(model, run)
    an = analyse(model)
    try:
        shapes = infer_shapes(model)
    except SplitrtError as exc:  # the run below has every tensor; inference only cross-checks it
        log.info("%s; taking every shape from the real run", exc)
        shapes = {}
    for t, (dims, elem) in run.shapes.items():
        if t in shapes and shapes[t][0] != dims:
            raise SplitrtError(
                f"tensor {t!r}: ONNX shape inference says {list(shapes[t][0])}, the run gave {list(dims)}"
            )
        shapes.setdefault(t, (dims, elem))
    for init in model.graph.initializer:
        shapes.setdefault(init.name, (tuple(init.dims), init.data_type))
    positions = an.cut_positions(granularity)
    if len(positions) <= 2:
        _no_cut(an, name, granularity)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)

    def shape_of(t: str) -> tuple[int, ...]:
        if t not in shapes:
            raise SplitrtError(
                f"tensor {t!r} has no static shape (neither ONNX shape inference nor a run of the model gave one)"
            )
        return shapes[t][0]

    # FLOPs per non-constant node, then per segment.
    node_cost = np.zeros(len(an.nodes), dtype=np.int64)
    uncounted: set[str] = set()
    for i, node in enumerate(an.nodes):
        flops, known = node_flops(node, shape_of)
        node_cost[i] = flops
        if not known:
            uncounted.add(node.op_type)

    const_producer = {o: k for k, n in enumerate(an.const_nodes) for o in n.output if o}
    inits = {t.name: t for t in model.graph.initializer}

    # Remove stale segment files from a previous export into the same directory.
    for stale in out.glob("seg_*.onnx"):
        stale.unlink()

    segments: list[Segment] = []
    cut_tensors = [an.live_tensor[p] for p in positions]
    refs = [run.values[c] for c in cut_tensors[1:]]  # the parity reference: the unfolded model's run
    del run  # every other tensor of the run
    for s, (a, b) in enumerate(itertools.pairwise(positions)):
        seg_nodes = an.nodes[a:b]
        t_in, t_out = cut_tensors[s], cut_tensors[s + 1]
        assert t_in is not None and t_out is not None
        needed: set[str] = set()
        stack = [i for n in seg_nodes for i in node_inputs(n) if i in an.constants]
        const_idx: set[int] = set()
        while stack:
            t = stack.pop()
            if t in needed:
                continue
            needed.add(t)
            k = const_producer.get(t)
            if k is not None and k not in const_idx:
                const_idx.add(k)
                stack.extend(i for i in node_inputs(an.const_nodes[k]) if i in an.constants)
        graph = helper.make_graph(
            nodes=[an.const_nodes[k] for k in sorted(const_idx)] + list(seg_nodes),
            name=f"{name}_seg{s:03d}",
            inputs=[helper.make_tensor_value_info(t_in, shapes[t_in][1], shape_of(t_in))],
            outputs=[helper.make_tensor_value_info(t_out, shapes[t_out][1], shape_of(t_out))],
            initializer=[inits[t] for t in sorted(needed) if t in inits],
        )
        seg_model = helper.make_model(
            graph, opset_imports=list(model.opset_import), producer_name="splitrt", ir_version=model.ir_version
        )
        seg_model.functions.extend(model.functions)
        file = f"seg_{s:03d}.onnx"
        onnx.save(seg_model, str(out / file))
        segments.append(
            Segment(
                index=s,
                file=file,
                sha256=sha256_file(out / file),
                flops=int(node_cost[a:b].sum()),
                input=t_in,
                output=t_out,
                ops=tuple(n.op_type for n in seg_nodes),
                label=_label(seg_nodes),
            )
        )

    total = sum(s.flops for s in segments)
    cuts: list[Cut] = []
    before = 0
    for c, t in enumerate(cut_tensors):
        shape, elem = shape_of(t), shapes[t][1]
        spec = TensorSpec(t, shape, _np_dtype(elem))
        cuts.append(
            Cut(
                index=c,
                tensor=t,
                shape=shape,
                dtype=spec.dtype,
                bytes=0 if c == len(segments) else spec.bytes,
                flops_before=before,
                flops_after=total - before,
            )
        )
        if c < len(segments):
            before += segments[c].flops

    whole = None
    if keep_whole:
        onnx.save(model, str(out / WHOLE_FILE))
        whole = {"file": WHOLE_FILE, "sha256": sha256_file(out / WHOLE_FILE)}
    in_shape, in_elem = shape_of(an.input_name), shapes[an.input_name][1]
    out_shape, out_elem = shape_of(an.output_name), shapes[an.output_name][1]
    manifest = Manifest(
        model=name,
        source={
            **source,
            "uncounted_ops": sorted(uncounted),
            **({"shape_ops_folded": folded} if folded else {}),
            **({"fixed_input_dims": fixed} if fixed else {}),
        },
        granularity=granularity,
        input=TensorSpec(an.input_name, in_shape, _np_dtype(in_elem)),
        output=TensorSpec(an.output_name, out_shape, _np_dtype(out_elem)),
        cuts=tuple(cuts),
        segments=tuple(segments),
        whole=whole,
        opset=opset,
        directory=out,
    )
    report = verify_parity(manifest, reference, seed=parity_seed, refs=refs)
    manifest.write(out)
    return Manifest.load(out), report


def _no_cut(an, name: str, granularity: str) -> None:
    """Refuse a model with no cut between its input and its output, saying why."""
    inner = an.live_count[1:-1]
    if granularity == "layer" and len(an.valid_positions()) > 2:
        raise SplitrtError(
            f"{name}: no cut directly before a layer (conv, pool, fc, matmul, layer norm) carries a single "
            f"tensor; {len(an.valid_positions()) - 2} other positions do: use --granularity op"
        )
    if not inner.size:
        raise SplitrtError(f"{name} has a single operation: there is nothing between its input and output to cut")
    least = int(inner.min())
    raise SplitrtError(
        f"{name} cannot be split: no point between its input and its output is crossed by a single tensor "
        f"(at least {least} tensors cross every one of the {inner.size} positions), so the only cuts are the "
        "input (all remote) and the output (all local)"
    )


def sample_input(spec: TensorSpec, seed: int = 0) -> np.ndarray:
    """A deterministic test input: standard normal for float inputs, zeros otherwise."""
    rng = np.random.default_rng(seed)
    if np.dtype(spec.dtype).kind == "f":
        return rng.standard_normal(spec.shape).astype(spec.dtype)
    return np.zeros(spec.shape, dtype=spec.dtype)


def verify_parity(
    manifest: Manifest,
    whole: onnx.ModelProto,
    *,
    seed: int = 0,
    threads: int = 1,
    refs: Sequence[np.ndarray] | None = None,
) -> ParityReport:
    """Chain the segments and compare every cut tensor with the whole model's (PARITY_RTOL).

    ``refs`` are the whole model's tensors at cuts 1..n on `sample_input` (``seed``), when the
    caller has them (`segment_model` takes them from its `run_shapes` run). Without them the whole
    model is run once with every cut tensor added as an extra graph output, so the check covers
    the intermediate tensors, not only the final one; its large weights are fed as inputs
    (`weightless`) rather than serialised into the probe.
    """
    x = sample_input(manifest.input, seed)
    if refs is None:
        probe, moved = weightless(whole)
        names = [c.tensor for c in manifest.cuts[1:]]
        existing = {o.name for o in probe.graph.output}
        for c in manifest.cuts[1:]:
            if c.tensor not in existing:
                elem = helper.np_dtype_to_tensor_dtype(np.dtype(c.dtype))
                probe.graph.output.append(helper.make_tensor_value_info(c.tensor, elem, list(c.shape)))
        sess = ort.InferenceSession(
            probe.SerializeToString(), sess_options=session_options(threads), providers=["CPUExecutionProvider"]
        )
        feeds = {t.name: numpy_helper.to_array(t) for t in moved}
        feeds[manifest.input.name] = x
        refs = sess.run(names, feeds)
        del feeds, sess
    runner = SegmentRunner(manifest, threads=threads)
    errs = []
    t = x
    for i, ref in enumerate(refs):
        t = runner.run_segment(t, i)
        ref = np.asarray(ref)
        if t.shape != ref.shape:
            raise SplitrtError(f"parity: cut {i + 1} of {manifest.model} has shape {t.shape}, whole model {ref.shape}")
        scale = float(np.max(np.abs(ref))) if ref.size else 0.0
        diff = float(np.max(np.abs(t.astype(np.float64) - ref.astype(np.float64)))) if ref.size else 0.0
        errs.append(diff / scale if scale > 0 else diff)
    worst = max(errs) if errs else 0.0
    if worst > PARITY_RTOL:
        bad = int(np.argmax(errs)) + 1
        raise SplitrtError(
            f"parity check failed for {manifest.model}: cut {bad} differs from the whole model by "
            f"{worst:.2e} of the output scale (tolerance {PARITY_RTOL:.0e})"
        )
    return ParityReport(worst, tuple(errs))
