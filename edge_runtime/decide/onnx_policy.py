"""The on-device policy: a trained MAD2RL (or P-QMIX) actor as ONNX, run torch-free.

A policy directory holds ``policy.onnx`` and ``policy.json``. The ONNX graph contains the
observation normaliser, the M-step reverse diffusion and the action mask:

    inputs   obs (B, 2J+1) float32 in the units of splitrt.edge_runtime.sysmodel.observation (FLOPs, metres)
             type_onehot (B, K) float32, mask (B, A) bool, noise (B, M, A) float32
    outputs  q (B, A) float32 (softmax(x0) on valid actions, -1e9 elsewhere), action (B,) int64

``policy.json`` (format_version 1): method, steps (M), n_nodes (J), obs_dim, max_actions (A),
types [{model, n_cuts, manifest_sha256}] in one-hot order, n_agents and the scenario it was
trained on, onnx file + sha256, and the exact command that produced it; optionally samples (the
noise draws per decision, below), noise ("sampled" or "zero", below) and train_cvs (the CV
counts it was trained on).

`OnDevicePolicy.decide(ctx)` implements the `splitrt.edge_runtime.decide.deciders.Decider` protocol: it refuses
a vehicle whose node count or DNN type the policy was not trained for, builds the mask (own
action range, SVs beyond the V2V radius), draws the noise from its own seeded generator and
returns (cut, node) = (a // J, a % J) (eq 55).

Samples. The diffusion actor's values softmax(x0) (eq 42) are random through the noise x_M and
the posterior noise of eq 41; the mixer was trained on them with fresh noise on every pass
(policy/learn/train.py), so what it rates is their mean over the noise. A diffusion policy therefore
decides by the argmax of the mean q over ``samples`` independent noise draws (one ONNX call on
a batch of samples x B). A policy whose policy.json has ``"noise": "zero"`` was trained to
denoise from x_M = 0 without posterior noise (`splitrt train --decision-noise zero`, the default
since the imitation phase): it decides in one deterministic pass, and ``samples`` does not apply. With one draw, a single noisy x0 often ranks a poor action first:
measured at 3 CVs / 5 SVs / V = 10 (docs/results/2026-11-29-paper-t30.md), 1 / 4 / 16 draws gave 1.27 / 1.06 /
1.04 s mean completion against p2-optimal's 1.05 s (the exhaustive per-slot
minimiser of P2(t), not an optimum of completion time). The cost grows about linearly with
the draws (docs/results/2026-12-03-references.md: decision time per draw count). P-QMIX has no noise: one pass, samples = 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from splitrt.edge_runtime.compute.segments import open_session
from splitrt.edge_runtime.decide.context import DecisionContext
from splitrt.edge_runtime.errors import SplitrtError
from splitrt.edge_runtime.formats.jsonfile import read_versioned
from splitrt.edge_runtime.formats.manifest import sha256_file
from splitrt.edge_runtime.sysmodel import observation as obs_layout

POLICY_VERSION = 1
POLICY_ONNX = "policy.onnx"
POLICY_META = "policy.json"
#: Noise draws averaged per decision of a diffusion policy (module docstring, "Samples").
DEFAULT_SAMPLES = 16
#: ``noise`` in policy.json: sampled (Gaussian draws, averaged over ``samples``) or zero (below).
NOISE_KINDS = ("sampled", "zero")


class OnDevicePolicy:
    """A loaded policy artifact (see the module docstring)."""

    def __init__(self, path: str | Path, *, seed: int = 0, threads: int = 1, samples: int | None = None) -> None:
        """``samples``: noise draws averaged per decision (default: ``samples`` in policy.json, else
        `DEFAULT_SAMPLES`; always 1 for a policy without noise, i.e. P-QMIX)."""
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
        if samples is None:
            samples = self.meta.get("samples", DEFAULT_SAMPLES)
            where = f"'samples' in {meta_path}"
        else:
            where = "policy samples"
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
            raise SplitrtError(f"{where} (noise draws per decision) must be an integer >= 1, got {samples!r}")
        noise_kind = self.meta.get("noise", "sampled")
        if noise_kind not in NOISE_KINDS:
            raise SplitrtError(f"'noise' in {meta_path} must be one of {', '.join(NOISE_KINDS)}, got {noise_kind!r}")
        #: zero: the policy was trained to denoise from x_M = 0 without posterior noise (one pass)
        self.zero_noise = noise_kind == "zero"
        self.samples = samples if "noise" in self.input_names and not self.zero_noise else 1

    # ---- checks -------------------------------------------------------------------------
    def check_model(self, model: str, manifest_sha256: str | None = None) -> None:
        if model not in self.n_cuts:
            raise SplitrtError(f"policy {self.directory} was trained for {', '.join(self.types)}, not {model!r}")
        if self.n_cuts[model] * self.n_nodes > self.max_actions:
            raise SplitrtError(
                f"policy {self.directory} never decided for {model}: no CV it was trained with ran it "
                f"({self.n_cuts[model] * self.n_nodes} actions, the policy's widest range is {self.max_actions})"
            )
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
        """(q (B, A), action (B,)) from prepared inputs: q is the mean of the graph's values over
        the noise draws and action its argmax (module docstring, "Samples").

        ``noise``: None draws ``self.samples`` draws from the policy's generator; (B, M, A) is one
        given draw (the graph's own action, as in the parity checks); (S, B, M, A) is S given draws.
        """
        obs = np.asarray(obs, np.float32)
        b = obs.shape[0]
        feeds = {"obs": obs, "type_onehot": np.asarray(type_onehot, np.float32), "mask": np.asarray(mask, bool)}
        if "noise" not in self.input_names:
            return tuple(self.session.run(["q", "action"], feeds))  # type: ignore[return-value]
        shape = (b, max(self.steps, 1), self.max_actions)
        if noise is None and self.zero_noise:
            noise = np.zeros(shape, np.float32)
        if noise is None:
            noise = self.rng.standard_normal((self.samples, *shape)).astype(np.float32)
        noise = np.asarray(noise, np.float32)
        if noise.shape == (1, *shape):
            noise = noise[0]  # one draw: the graph's own action (argmax of the score, without tanh ties)
        if noise.shape == shape:
            return tuple(self.session.run(["q", "action"], {**feeds, "noise": noise}))  # type: ignore[return-value]
        if noise.ndim != 4 or noise.shape[1:] != shape or noise.shape[0] < 1:
            raise SplitrtError(
                f"policy noise must have shape {shape} or (S, {', '.join(map(str, shape))}), got {noise.shape}"
            )
        s = noise.shape[0]
        tiled = {k: np.concatenate([v] * s) for k, v in feeds.items()}
        (q,) = self.session.run(["q"], {**tiled, "noise": noise.reshape(s * b, *shape[1:])})
        q = q.reshape(s, b, -1).mean(axis=0)
        return q, q.argmax(axis=-1).astype(np.int64)

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
