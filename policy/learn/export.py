"""Export a trained actor (with normaliser, mask handling and the unrolled M-step reverse
diffusion) to ONNX plus the ``policy.json`` metadata that splitrt.edge_runtime.decide.onnx_policy reads.

The graph takes the noise as an input, so torch and ONNX Runtime can be fed the same noise and
must pick the same action (the parity test).
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn

from splitrt.edge_runtime.decide.onnx_policy import POLICY_META, POLICY_ONNX, POLICY_VERSION
from splitrt.edge_runtime.formats.manifest import sha256_file

OPSET = 17


class _ActorGraph(nn.Module):
    def __init__(self, actor: nn.Module) -> None:
        super().__init__()
        self.actor = actor

    def forward(self, obs, type_onehot, mask, noise):
        q, score = self.actor(obs, type_onehot, mask, noise)
        return q, torch.argmax(score, dim=-1)


def export_actor(actor: nn.Module, out_dir: str | Path, meta: dict[str, Any]) -> Path:
    """Write ``policy.onnx`` and ``policy.json`` into ``out_dir``; returns the directory.

    ``meta`` carries method, n_nodes, types [{model, n_cuts, manifest_sha256}], n_agents,
    scenario and command; shapes and the step count come from the actor itself.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    actor = actor.eval()
    b, steps = 1, max(actor.steps, 1)
    dummy = (
        torch.zeros(b, actor.obs_dim),
        torch.zeros(b, actor.n_types),
        torch.ones(b, actor.n_actions, dtype=torch.bool),
        torch.zeros(b, steps, actor.n_actions),
    )
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _ActorGraph(actor),
            dummy,
            buf,
            dynamo=False,
            opset_version=OPSET,
            input_names=["obs", "type_onehot", "mask", "noise"],
            output_names=["q", "action"],
            dynamic_axes={n: {0: "batch"} for n in ("obs", "type_onehot", "mask", "noise", "q", "action")},
        )
    model = onnx.load_from_string(buf.getvalue())
    model.doc_string = ""
    for node in model.graph.node:
        node.doc_string = ""
    onnx.checker.check_model(model)
    onnx.save(model, str(out / POLICY_ONNX))
    full = {
        "format_version": POLICY_VERSION,
        **meta,
        "steps": int(actor.steps),
        "obs_dim": int(actor.obs_dim),
        "max_actions": int(actor.n_actions),
        "onnx": POLICY_ONNX,
        "onnx_sha256": sha256_file(out / POLICY_ONNX),
        "normaliser": {k: getattr(actor.normaliser, k).tolist() for k in ("scale", "log_mask", "mean", "std")},
    }
    (out / POLICY_META).write_text(json.dumps(full, indent=1, sort_keys=True) + "\n")
    return out
