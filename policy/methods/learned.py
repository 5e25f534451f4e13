"""Trained policies (MAD2RL, P-QMIX) as `splitrt.policy.methods.registry.Method`s, run exactly as on a vehicle:
through the exported ONNX graph and `splitrt.edge_runtime.decide.onnx_policy.OnDevicePolicy`, without torch.

A policy is found under ``policy`` (a policy directory, or a folder searched recursively for
``policy.json``, default: the shipped ``policy/trained/``) by matching the scenario:
``match="exact"`` needs the same #CVs, #SVs, V and DNN types it was trained on; ``match="shape"``
the same #SVs (node count J), V and DNN types, with any number of CVs (the actor is shared by all
agents and sees only its own observation, so it runs with any number of CVs), a policy trained
for exactly the scenario's #CVs first. V is not compared for a policy trained on a reward
without it (`v_free`: ``objective_v`` > 0). No match is `MethodNotApplicable`, reported by
`splitrt evaluate` with the command that trains one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from splitrt.edge_runtime.decide.onnx_policy import POLICY_META, OnDevicePolicy
from splitrt.edge_runtime.errors import SplitrtError
from splitrt.policy.methods.baselines import BEST_KNOWN_V
from splitrt.policy.methods.registry import MethodNotApplicable, parse_variants

if TYPE_CHECKING:
    from splitrt.policy.sim.env import SlotView, VecEnv

TRAINED_DIR = Path(__file__).resolve().parents[1] / "trained"
MATCHES = ("exact", "shape")


def find_policy(root: str | Path, method: str, scenario, match: str = "exact") -> Path:
    """The directory of the first policy under ``root`` (sorted) that fits ``scenario``; with
    ``match="shape"``, one trained for the scenario's own #CVs comes before the others."""
    if match not in MATCHES:
        raise MethodNotApplicable(f"{method}: match={match!r} is not one of {', '.join(MATCHES)}")
    root = Path(root)
    metas = [root / POLICY_META] if (root / POLICY_META).is_file() else sorted(root.rglob(POLICY_META))
    shaped: list[Path] = []
    for meta_path in metas:
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise SplitrtError(f"cannot read policy metadata {meta_path}: {exc}") from None
        if not isinstance(meta, dict):
            raise SplitrtError(f"policy metadata {meta_path} is not a JSON object")
        sc = meta.get("scenario", {})
        if meta.get("method") != method or meta.get("n_nodes") != scenario.n_nodes:
            continue
        if {t["model"] for t in meta.get("types", [])} != set(scenario.types):
            continue
        if sc.get("n_svs") != scenario.n_svs:
            continue
        if not v_free(meta) and float(sc.get("v", -1)) != float(scenario.v):
            continue
        if sc.get("name") not in (None, scenario.name):
            continue
        if sc.get("n_cvs") == scenario.n_cvs:
            return meta_path.parent
        shaped.append(meta_path.parent)
    if match == "shape" and shaped:
        return shaped[0]
    raise MethodNotApplicable(
        f"no trained {method} policy for {scenario.name} with {scenario.n_cvs} CVs, {scenario.n_svs} SVs, "
        f"V={scenario.v:g} under {root} (train one: splitrt train --method {method} --preset {scenario.name} "
        f"--cvs {scenario.n_cvs} --svs {scenario.n_svs} --v {scenario.v:g} --out runs/...)"
    )


def v_free(meta: dict) -> bool:
    """True for a policy whose training never used the scenario's V, so it serves every V: its TD
    phase (if any) had the reward -(queue pressure + V' sum d) (``objective_v`` > 0,
    policy/learn/train.py) and its expert (if any) planned on that objective too."""
    tc = meta.get("train_config") or {}
    if "objective_v" not in tc:
        return False  # trained before the reward had a V' of its own: on -P2 at the scenario's V
    td_free = int(tc.get("episodes", 1)) == 0 or float(tc["objective_v"]) > 0
    expert = str(tc.get("expert", "none")).strip()
    if expert.lower() in ("", "none"):
        return td_free
    name, options = parse_variants([f"expert={expert}"])["expert"]
    planned_v = float(options.get("objective_v", BEST_KNOWN_V if name == "best-known" else 0.0))
    return td_free and planned_v > 0


class LearnedPolicy:
    """Decides with the policy's ONNX graph; argmax of the masked values (eq 55)."""

    def __init__(self, method: str, policy: str = "", match: str = "exact", seed: int = 0, samples: int = 0) -> None:
        self.name = method
        self.samples = samples or None  # 0: the policy's default (splitrt.edge_runtime.decide.onnx_policy, "Samples")
        self.root = Path(policy) if policy else TRAINED_DIR
        self.match = match
        self.seed = seed
        self.policy: OnDevicePolicy | None = None
        self.directory: Path | None = None

    def reset(self, env: VecEnv, seed: int | None) -> None:
        self.directory = find_policy(self.root, self.name, env.scenario, self.match)
        self.policy = OnDevicePolicy(self.directory, seed=self.seed if seed is None else seed, samples=self.samples)
        for model, workload in env.workloads.items():
            if self.policy.n_cuts.get(model) != workload.n_cuts:
                raise MethodNotApplicable(
                    f"{self.directory}: {model} has {workload.n_cuts} cuts here, "
                    f"the policy was trained with {self.policy.n_cuts.get(model)}"
                )
        self.onehot = self.policy.type_onehot(list(env.agent_model))  # refuses a type it never decided for
        if env.max_actions > self.policy.max_actions:
            raise MethodNotApplicable(
                f"{self.directory}: {env.max_actions} actions here, policy {self.policy.max_actions}"
            )

    def act(self, obs: np.ndarray, state: np.ndarray, mask: np.ndarray, view: SlotView) -> np.ndarray:
        assert self.policy is not None, "reset() first"
        e, n, d = obs.shape
        mask = mask.reshape(e * n, -1)
        if mask.shape[1] < self.policy.max_actions:  # fewer CVs than trained may mean fewer DNN types
            mask = np.pad(mask, [(0, 0), (0, self.policy.max_actions - mask.shape[1])])
        _, action = self.policy.run(obs.reshape(e * n, d), np.tile(self.onehot, (e, 1)), mask)
        return action.reshape(e, n).astype(np.int64)


def mad2rl(policy: str = "", match: str = "exact", seed: int = 0, samples: int = 0) -> LearnedPolicy:
    """``samples``: diffusion noise draws averaged per decision (0: the policy's default)."""
    return LearnedPolicy("mad2rl", policy, match, seed, samples)


def pqmix(policy: str = "", match: str = "exact", seed: int = 0) -> LearnedPolicy:
    return LearnedPolicy("pqmix", policy, match, seed)
