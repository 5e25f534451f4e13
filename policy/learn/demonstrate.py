"""The imitation phase of `splitrt train`: DAgger from a full-information planner into the shared actor.

Why. Trained by TD alone on the paper's reward, the actor reached 1.38x / 1.48x of best-known's
mean completion at 3 / 5 CVs (docs/results/2026-12-03-references.md): the reward -P2(t) at V = 10
caps it at the P2 optimum (itself 1.26-1.38x), and 7,500 Adam steps of batch 64 are few for a
signal that weak. A planner that knows every CV's queues, links and speeds (the GA on best-known's
objective, `--expert`) labels every slot with a joint action at ~30 ms per environment and slot;
the actor learns to predict each CV's part of it from that CV's own observation (eq 53), which is
supervised learning with a dense signal. Measured probes and the defaults' figures are in
docs/training.md ("Imitation").

How (Ross et al.'s DAgger). Round 0 plays the expert; round r >= 1 plays, per environment, the
expert with probability 0.5^r and the actor's deployed decision otherwise, so the data covers
the states the actor itself leads to. Every slot of every round is labelled with the expert's
action and kept; after each round the actor takes ``bc_steps`` Adam steps of a cross-entropy on
the aggregated data. Episodes cycle through the CV counts of ``--demo-cvs``: the actor is shared
and sees only its own observation, so one policy learns the queue levels of every count.

The loss. The actor's score (the unbounded x0 prediction, `DiffusionActor.forward`) is read as
logits at temperature `DEMO_TEMPERATURE`; the target is the set of actions equivalent to the
expert's (every node index of the fully local cut is the same action, eq 55), so the loss is
-log sum_{a in target} softmax(score / T)_a over the valid actions.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from splitrt.edge_runtime.decide.onnx_policy import DEFAULT_SAMPLES

#: Score temperature of the imitation loss: the range penalty keeps |score| near <= 2
#: (policy/learn/train.py), so logits score / 0.25 span about +-8.
DEMO_TEMPERATURE = 0.25
#: Demonstrations per imitation gradient step.
DEMO_BATCH = 256


def make_expert(spec: str):
    """The `splitrt.policy.methods.registry.Method` of ``spec`` (METHOD[:KEY=VALUE[;...]])."""
    from splitrt.policy.methods.registry import make_method, parse_variants

    name, options = parse_variants([f"expert={spec}"])["expert"]
    return make_method(name, options)


def target_sets(actions: np.ndarray, n_cuts: np.ndarray, n_nodes: int, n_actions: int) -> np.ndarray:
    """(E, N, A) bool: the actions equivalent to ``actions`` (E, N) (the fully local cut of CV i,
    cut n_cuts[i] - 1, is the same action whatever the node index, eq 55)."""
    e, n = actions.shape
    out = np.zeros((e, n, n_actions), dtype=bool)
    np.put_along_axis(out, actions[..., None], True, axis=-1)
    local_cut = (n_cuts - 1)[None, :]  # (1, N)
    is_local = actions // n_nodes == local_cut
    cut_of = np.arange(n_actions) // n_nodes  # (A,)
    out |= is_local[..., None] & (cut_of[None, None, :] == local_cut[..., None])
    return out


def imitation_loss(score: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean -log P(target set) under softmax(score / T) over the valid actions (score = -inf elsewhere)."""
    logits = score / DEMO_TEMPERATURE
    picked = torch.logsumexp(logits.masked_fill(~target, float("-inf")), dim=-1)
    return (torch.logsumexp(logits, dim=-1) - picked).mean()


@dataclass
class Demonstrations:
    """Every labelled agent-slot of the imitation phase: per row an observation, the type one-hot,
    the valid-action mask and the expert's target set."""

    obs: list[np.ndarray] = field(default_factory=list)
    onehot: list[np.ndarray] = field(default_factory=list)
    mask: list[np.ndarray] = field(default_factory=list)
    target: list[np.ndarray] = field(default_factory=list)
    _cat: dict[str, torch.Tensor] | None = None

    def add(self, obs: np.ndarray, onehot: np.ndarray, mask: np.ndarray, target: np.ndarray) -> None:
        d = obs.shape[-1]
        self.obs.append(obs.reshape(-1, d))
        self.onehot.append(np.broadcast_to(onehot, (*obs.shape[:-1], onehot.shape[-1])).reshape(-1, onehot.shape[-1]))
        self.mask.append(mask.reshape(-1, mask.shape[-1]))
        self.target.append(target.reshape(-1, target.shape[-1]))
        self._cat = None

    def __getstate__(self) -> dict:
        return {**vars(self), "_cat": None}  # checkpoints keep the arrays, not their tensor copies

    def __len__(self) -> int:
        return sum(len(o) for o in self.obs)

    def tensors(self, device) -> dict[str, torch.Tensor]:
        if self._cat is None:
            self._cat = {
                name: torch.as_tensor(np.concatenate(getattr(self, name)), device=device)
                for name in ("obs", "onehot", "mask", "target")
            }
        return self._cat

    def sample(self, batch: int, rng: np.random.Generator, device) -> dict[str, torch.Tensor]:
        t = self.tensors(device)
        idx = torch.as_tensor(rng.integers(0, len(t["obs"]), batch), device=device)
        return {k: v[idx] for k, v in t.items()}


def dagger(
    cfg, learner, envs, rng: np.random.Generator, *, progress: bool = True, after_round=None
) -> tuple[Demonstrations, list[dict]]:
    """Run the imitation phase (module docstring) on ``learner.actor`` over ``envs`` (one VecEnv
    per CV count, `splitrt.policy.learn.train.imitation_envs`); returns the demonstrations (kept
    for the TD phase's imitation term) and one metrics row per round. ``after_round(r)``, called
    after each round's refit, may return more columns for its row (the validation)."""
    expert = make_expert(cfg.expert)
    for env in envs:
        if env.n_nodes != learner.n_nodes or env.max_actions > learner.n_actions:
            raise ValueError("every imitation scenario must have the learner's nodes and at most its actions")

    def pad(x: np.ndarray) -> np.ndarray:  # fewer CVs may mean fewer DNN types, so fewer actions
        extra = learner.n_actions - x.shape[-1]
        return np.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, extra)]) if extra else x

    data = Demonstrations()
    rows: list[dict] = []
    t0 = time.perf_counter()
    for r in range(cfg.dagger_rounds):
        beta = 1.0 if r == 0 else 0.5**r
        agree = []
        for env in envs:
            onehot = learner.onehot_for(env.agent_model)
            expert.reset(env, int(rng.integers(2**31)))
            obs, state, mask = env.reset(seed=int(rng.integers(2**31)))
            while True:
                a_exp = expert.act(obs, state, mask, env.view())
                target = pad(target_sets(a_exp, env.tables.n_cuts, env.n_nodes, env.max_actions))
                data.add(obs, onehot, pad(mask), target)
                if r == 0:
                    act = a_exp
                else:
                    a_pol = learner.decide(obs, pad(mask), DEFAULT_SAMPLES, learner.generator, onehot)
                    agree.append(np.take_along_axis(target, a_pol[..., None], -1).mean())
                    act = np.where(rng.random((env.n_envs, 1)) < beta, a_exp, a_pol)
                obs, state, mask, _, done, _ = env.step(act)
                if done.all():
                    break
        if r == 0:
            learner.fit_actor_normaliser(np.concatenate(data.obs))
        losses = [learner.imitate(data.sample(DEMO_BATCH, rng, learner.device)) for _ in range(cfg.bc_steps)]
        row = {
            "round": r,
            "beta": beta,
            "demonstrations": len(data),
            "loss": float(np.mean(losses[-50:])),
            "agreement_before": float(np.mean(agree)) if agree else float("nan"),
            "wall_s": round(time.perf_counter() - t0, 2),
        }
        if after_round is not None:
            row.update(after_round(r) or {})
        rows.append(row)
        if progress:
            print(
                f"imitation round {r + 1}/{cfg.dagger_rounds}: " + ", ".join(f"{k} {v:.4g}" for k, v in row.items()),
                file=sys.stderr,
            )
    return data, rows
