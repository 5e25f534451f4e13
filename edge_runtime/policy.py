"""The on-device policy: a trained MAD2RL (or P-QMIX) actor as ONNX, run torch-free.

A policy directory holds ``policy.onnx`` and ``policy.json``. The ONNX graph contains the
observation normaliser, the M-step reverse diffusion and the action mask:

    inputs   obs (B, 2J+1) float32 in the units of edge_runtime.observation (FLOPs, metres)
             type_onehot (B, K) float32, mask (B, A) bool, noise (B, M, A) float32
    outputs  q (B, A) float32 (softmax(x0) on valid actions, -1e9 elsewhere), action (B,) int64

``policy.json`` (format_version 1): method, steps (M), n_nodes (J), obs_dim, max_actions (A),
types [{model, n_cuts, manifest_sha256}] in one-hot order, n_agents and the scenario it was
trained on, onnx file + sha256, and the exact command that produced it.

`OnDevicePolicy.decide(ctx)` implements the `edge_runtime.decision.Decider` protocol: it refuses
a vehicle whose node count or DNN type the policy was not trained for, builds the mask (own
action range, SVs beyond the V2V radius), draws the noise from its own seeded generator and
returns (cut, node) = (a // J, a % J) (eq 55).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime import observation as obs_layout
from edge_runtime.decision import DecisionContext
from edge_runtime.errors import SplitrtError
from edge_runtime.jsonfile import read_versioned
from edge_runtime.manifest import sha256_file
from edge_runtime.segments import open_session

POLICY_VERSION = 1
POLICY_ONNX = "policy.onnx"
POLICY_META = "policy.json"


class OnDevicePolicy:
    """A loaded policy artifact (see the module docstring)."""

    def __init__(self, path: str | Path, *, seed: int = 0, threads: int = 1) -> None:
        path = Path(path)
        directory = path if path.is_dir() else path.parent
        meta_path = directory / POLICY_META
        self.meta: dict[str, Any] = read_versioned(
            meta_path,
            "policy metadata",
            POLICY_VERSION,
            required=("method", "steps", "n_nodes", "obs_dim", "max_actions", "types", "onnx"),
        )
        onnx_path = directory / self.meta["onnx"]
        if not onnx_path.is_file():
            raise SplitrtError(f"policy file {onnx_path} is missing")
        if self.meta.get("onnx_sha256") and sha256_file(onnx_path) != self.meta["onnx_sha256"]:
            raise SplitrtError(f"policy file {onnx_path} does not match the sha256 in {meta_path}")
        self.directory = directory
        self.name = str(self.meta["method"])
        self.steps = int(self.meta["steps"])
        self.n_nodes = int(self.meta["n_nodes"])
        self.max_actions = int(self.meta["max_actions"])
        self.types = [t["model"] for t in self.meta["types"]]
        self.n_cuts = {t["model"]: int(t["n_cuts"]) for t in self.meta["types"]}
        self.digests = {t["model"]: t.get("manifest_sha256") for t in self.meta["types"]}
        self.session = open_session(onnx_path, threads=threads)
        # An MLP (P-QMIX) actor has no noise input: the exporter drops unused inputs.
        self.input_names = {i.name for i in self.session.get_inputs()}
        self.rng = np.random.default_rng(seed)

    # ---- checks -------------------------------------------------------------------------
    def check_model(self, model: str, manifest_sha256: str | None = None) -> None:
        if model not in self.n_cuts:
            raise SplitrtError(f"policy {self.directory} was trained for {', '.join(self.types)}, not {model!r}")
        want = self.digests.get(model)
        if manifest_sha256 and want and manifest_sha256 != want:
            raise SplitrtError(
                f"policy {self.directory} was trained on {model} manifest {want[:12]}, "
                f"this vehicle has manifest {manifest_sha256[:12]}"
            )

    def check_nodes(self, n_nodes: int) -> None:
        if n_nodes != self.n_nodes:
            raise SplitrtError(
                f"policy {self.directory} was trained for {self.n_nodes} edge nodes (RSU + "
                f"{self.n_nodes - 1} SVs), this vehicle has {n_nodes}"
            )

    # ---- inference ----------------------------------------------------------------------
    def masks(self, models: list[str], node_ok: np.ndarray) -> np.ndarray:
        """(B, A) valid actions: each agent's own range, offloads only to available nodes."""
        node_ok = np.asarray(node_ok, dtype=bool).reshape(len(models), self.n_nodes)
        out = np.zeros((len(models), self.max_actions), dtype=bool)
        for b, model in enumerate(models):
            own = obs_layout.action_mask(self.n_cuts[model], node_ok[b])
            out[b, : own.size] = own
        return out

    def type_onehot(self, models: list[str]) -> np.ndarray:
        for m in models:
            self.check_model(m)
        onehot = np.zeros((len(models), len(self.types)), dtype=np.float32)
        onehot[np.arange(len(models)), [self.types.index(m) for m in models]] = 1.0
        return onehot

    def run(
        self, obs: np.ndarray, type_onehot: np.ndarray, mask: np.ndarray, noise: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The raw graph: (q (B, A), action (B,)) from prepared inputs (noise drawn if None)."""
        b = obs.shape[0]
        if noise is None and "noise" in self.input_names:
            noise = self.rng.standard_normal((b, max(self.steps, 1), self.max_actions)).astype(np.float32)
        feeds = {
            "obs": np.asarray(obs, np.float32),
            "type_onehot": np.asarray(type_onehot, np.float32),
            "mask": np.asarray(mask, bool),
            "noise": noise,
        }
        q, action = self.session.run(["q", "action"], {k: v for k, v in feeds.items() if k in self.input_names})
        return q, action

    def q_values(
        self, obs: np.ndarray, models: list[str], node_ok: np.ndarray, noise: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(q (B, A), action (B,)) for a batch of observations."""
        obs = np.asarray(obs, dtype=np.float32).reshape(len(models), -1)
        if obs.shape[1] != obs_layout.obs_size(self.n_nodes):
            raise SplitrtError(
                f"observation has {obs.shape[1]} values, policy expects {obs_layout.obs_size(self.n_nodes)}"
            )
        return self.run(obs, self.type_onehot(models), self.masks(models, node_ok), noise)

    def decide(self, ctx: DecisionContext) -> tuple[int, int]:
        self.check_nodes(ctx.n_nodes)
        self.check_model(ctx.model)
        if ctx.n_cuts != self.n_cuts[ctx.model]:
            raise SplitrtError(
                f"{ctx.model} has {ctx.n_cuts} cuts here, the policy was trained with {self.n_cuts[ctx.model]}"
            )
        _, action = self.q_values(ctx.observation[None], [ctx.model], ctx.node_ok[None])
        cut, node = obs_layout.decode_action(int(action[0]), self.n_nodes)
        return int(cut), int(node)
