"""MAD2RL / P-QMIX training, top to bottom: set-up -> rollout -> replay buffer -> TD update.

Eqs 53-62 of the paper (SYSTEM_MODEL.md "MARL formulation", "Diffusion actor"): every CV is an
agent acting on its own observation (eq 53) with a shared diffusion actor (or, for P-QMIX, an
MLP); a QMIX mixer (eq 58) combines the chosen actions' values with the global state (eq 54) into
Q_tot, trained on the TD loss (eqs 59-60) against soft-updated target networks (eqs 61-62). The
reward is the common r(t) = -P2(t) (eq 57) of the batched simulator (splitrt.policy.sim.env.VecEnv).

Since the "policy worth deploying" issue the default training is the imitation of a
full-information planner (DAgger, splitrt.policy.learn.demonstrate); `--episodes N` adds the TD
phase below after it, with the imitation loss kept beside the TD loss (`--demo-weight`). Plain TD
after the imitation made the actor 6-11% slower at T = 300 (docs/training.md, "Imitation"), so
the default has none. The paper's training is `--expert none --objective-v 0 --decision-noise
sampled --episodes 2000` (the reproduction row of docs/results).

What the paper leaves open (or what did not work here), and our choice:
| item | choice | why |
|---|---|---|
| objective | reward -(queue pressure + V' sum_i d_i), V' = 150 (`--objective-v`; 0: the paper's -P2(t) at V) | -P2 at V = 10 caps a perfect per-slot learner at the P2 optimum, which is 1.26-1.38x best-known's mean completion; V' = 150 is best-known's objective, the best of V' = 10..2000 for a GA (docs/results/2026-12-03-references.md) |
| imitation | DAgger from `ga:budget=2550;objective_v=150` (`--expert`), 6 rounds of 8 episodes of 60 slots per CV count, 1000 steps per round (1500 took 16 min) | TD alone reached 1.38x / 1.48x of best-known at 3 / 5 CVs; imitation reached 1.04x / 1.11x (docs/training.md, "Imitation"); 2000 steps per round instead of 400 took 5 CVs from 0.770 to 0.711 s |
| CV counts | imitation episodes cycle through 3..7 CVs (`--demo-cvs`) | the actor is shared and sees its own observation only; trained at 5 CVs alone it let queues grow at 7 CVs (21.4 s vs best-known 5.5 s); with 3, 5, 7 mixed, 5.5 s (docs/training.md) |
| noise | zero (`--decision-noise`): x_M = 0 and no posterior noise, in training and on the vehicle | one deterministic pass decides (0.49 ms median at M = 7 on one core, `splitrt bench --only decision`) where the sampled policy needed 16 draws (3.9-7.5 ms in the same benchmark) to decide well |
| discount gamma | 0 (the paper: 0.99; `--gamma 0.99` reproduces it) | P2(t) is already the Lyapunov drift-plus-penalty bound: minimising it slot by slot is what the theory asks for. Measured at the paper's 5 CVs / 5 SVs, 1000 episodes: with 0.99 both MAD2RL and P-QMIX collapse to full offload (~11.4-12.0 s mean completion vs 12.1 s for offload-all); with 0.5, P-QMIX 6.3 s; with ~0, P-QMIX 1.20 s, MAD2RL 2.4 s (docs/results/2026-11-29-paper-t30.md) |
| replay buffer | 50,000 transitions, uniform | ~100 parallel iterations of 16 envs x 30 slots: decorrelated, recent enough to follow the policy |
| batch, updates | 64 transitions, 2 gradient steps per parallel slot (7,500 for the default 2000 episodes) | what 2 CPU cores train in minutes; more updates helped MAD2RL more than larger batches, and 2000 episodes more than 1000 (docs/results/2026-11-29-paper-t30.md) |
| exploration | epsilon-greedy over valid actions, 1.0 -> 0.05 linearly over the first 30% of episodes, on top of the diffusion's own sampling noise | the paper gives none; QMIX's standard |
| parallel rollouts | 16 environments stepped together | vectorised simulator; 2000 episodes = 125 iterations |
| reward scale | rewards divided by the mean |r| of a random warm-up batch of episodes (stored in the checkpoint) | -P2 is O(1e3) under random actions; the optimum is unchanged by a constant factor |
| normalisers | queues through log1p(Q / 1 GFLOP), then mean/std of a random warm-up, frozen, saved in the artifact (splitrt.policy.learn.networks.Normaliser) | queues that outgrow the warm-up cannot blow up the inputs |
| time limit | the episode end is a truncation (bootstrapped when gamma > 0), not a terminal state | queues persist past slot T |
| policy exported | the snapshot with the shortest validation mean completion time: every `validate_every` (10) iterations and at the end the deployed decision (the values averaged over the runtime's noise draws, no exploration) plays the same n_envs validation episodes | late training is not monotonic: at 3 CVs, 2000 -> 4000 episodes took seed 0 from 1.09 to 1.04 s mean completion but seed 1 from 1.16 to 2.91 s. Not the validation return: sum(-P2) over an episode telescopes the drift into the final backlog, and the snapshots it picked were 1.3-2.1x slower than the last one (docs/results/2026-11-29-paper-t30.md) |
| target | double Q: argmax by the online actor, value by the target actor and mixer (skipped at gamma = 0, where it is multiplied by 0) | reduces over-estimation |
| loss | Huber (smooth L1) on the TD error, gradient norm clipped at 10 | robust to the heavy-tailed P2 |
| x0 bound | tanh instead of the D2SAC code's hard clip | a clip ties saturated entries at exactly 1.0: argmax then returns action 0 (full offload) and the gradient is zero (splitrt.policy.learn.networks.DiffusionActor) |
"""

from __future__ import annotations

import copy
import csv
import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from splitrt.edge_runtime.errors import SplitrtError
from splitrt.edge_runtime.sysmodel.observation import sample_valid
from splitrt.policy.learn.config import (  # torch-free, so the CLI builds its flags without torch
    TrainConfig,
    train_command,
)
from splitrt.policy.learn.networks import DiffusionActor, MLPAgent, QMixer

log = logging.getLogger(__name__)

#: Penalty on the diffusion actor's unbounded x0 prediction beyond |x| = RANGE_LIMIT (tanh(2) = 0.96):
#: without it, pushed entries saturate tanh, tie and stop learning (splitrt.policy.learn.networks.DiffusionActor).
RANGE_LIMIT = 2.0
RANGE_PENALTY = 0.01
#: Offset of the validation episodes' seed from the run's (no training or evaluation seed is this large).
VALIDATION_SEED = 1_000_003


def make_scenario(cfg: TrainConfig, slots: int | None = None):
    from splitrt.policy.sim.scenario import preset

    extra = {} if slots is None else {"slots": slots}
    model = {"sim_model": cfg.sim_model, "calibration_file": cfg.calibration}
    return preset(cfg.preset, n_cvs=cfg.cvs, n_svs=cfg.svs, v=cfg.v, **model, **extra)


def make_env(cfg: TrainConfig, n_envs: int, seed: int, slots: int | None = None):
    """The episodes' env: the paper's equations or the as-run model (``--sim-model``)."""
    from splitrt.policy.sim.asrun import make_env as env_of

    return env_of(make_scenario(cfg, slots), n_envs, seed)


def imitation_envs(cfg: TrainConfig) -> list:
    """The imitation phase's environments: one per CV count of --demo-cvs, --dagger-envs episodes
    of --dagger-slots slots each, seeded per count."""
    from dataclasses import replace

    return [
        make_env(replace(cfg, cvs=c), cfg.dagger_envs, seed=cfg.seed + 7919 * c, slots=cfg.dagger_slots)
        for c in cfg.demo_counts()
    ]


def training_reward(cfg: TrainConfig, reward: np.ndarray, info: dict[str, Any]) -> np.ndarray:
    """(E,) the reward the learner sees: minus best-known's slot objective
    (`splitrt.policy.methods.baselines.slot_objective`) at V' = --objective-v, which is the
    environment's -P2(t) (eq 57) with --objective-v 0."""
    from types import SimpleNamespace

    from splitrt.policy.methods.baselines import slot_objective

    return -slot_objective(SimpleNamespace(**info), cfg.objective_v)


def build_agent(cfg: TrainConfig, obs_dim: int, n_types: int, n_actions: int) -> torch.nn.Module:
    if cfg.method == "mad2rl":
        return DiffusionActor(
            obs_dim, n_types, n_actions, steps=cfg.steps, hidden=cfg.hidden, temperature=cfg.temperature
        )
    return MLPAgent(obs_dim, n_types, n_actions, hidden=cfg.hidden)


def range_penalty(actor) -> torch.Tensor | float:
    """Keeps the diffusion actor's x0 prediction of its last forward pass where tanh still
    responds (`RANGE_LIMIT`); 0 for an actor without one (the MLP)."""
    pre = getattr(actor, "last_pre", None)
    if pre is None:
        return 0.0
    return RANGE_PENALTY * torch.relu(pre.abs() - RANGE_LIMIT).pow(2).mean()


class Replay:
    """Uniform replay of joint transitions, stored as preallocated numpy arrays."""

    def __init__(self, capacity: int, n_agents: int, obs_dim: int, state_dim: int, n_actions: int) -> None:
        self.capacity, self.size, self.pos = capacity, 0, 0
        self.obs = np.zeros((capacity, n_agents, obs_dim), np.float32)
        self.state = np.zeros((capacity, state_dim), np.float32)
        self.mask = np.zeros((capacity, n_agents, n_actions), bool)
        self.action = np.zeros((capacity, n_agents), np.int64)
        self.reward = np.zeros(capacity, np.float32)
        self.next_obs = np.zeros_like(self.obs)
        self.next_state = np.zeros_like(self.state)
        self.next_mask = np.zeros_like(self.mask)

    def add(self, obs, state, mask, action, reward, next_obs, next_state, next_mask) -> None:
        n = len(reward)
        idx = (self.pos + np.arange(n)) % self.capacity
        for name, value in (
            ("obs", obs),
            ("state", state),
            ("mask", mask),
            ("action", action),
            ("reward", reward),
            ("next_obs", next_obs),
            ("next_state", next_state),
            ("next_mask", next_mask),
        ):
            getattr(self, name)[idx] = value
        self.pos = (self.pos + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(
        self, batch: int, rng: np.random.Generator, device: torch.device | str = "cpu"
    ) -> dict[str, torch.Tensor]:
        idx = rng.integers(0, self.size, batch)
        names = ("obs", "state", "mask", "action", "reward", "next_obs", "next_state", "next_mask")
        return {n: torch.as_tensor(getattr(self, n)[idx], device=device) for n in names}

    def state_dict(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items()}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        vars(self).update(d)


class Learner:
    """Actor + mixer, their targets and the optimiser; `act` for rollouts, `update` for TD."""

    def __init__(self, cfg: TrainConfig, env) -> None:
        self.cfg = cfg
        self.n_agents = env.n_agents
        self.n_nodes, self.n_actions = env.n_nodes, env.max_actions
        self.types = list(env.scenario.types)
        self.device = torch.device(cfg.device)
        self.type_onehot = torch.as_tensor(self.onehot_for(env.agent_model), device=self.device)
        self.actor = build_agent(cfg, env.obs_dim, len(self.types), env.max_actions).to(self.device)
        self.mixer = QMixer(env.n_agents, env.state_dim).to(self.device)
        self.target_actor = copy.deepcopy(self.actor)
        self.target_mixer = copy.deepcopy(self.mixer)
        self.params = list(self.actor.parameters()) + list(self.mixer.parameters())
        self.opt = torch.optim.Adam(self.params, lr=cfg.lr)
        self.generator = torch.Generator(device=self.device).manual_seed(cfg.seed + 1)
        self.selected: dict[str, Any] | None = None  # which snapshot the actor is (load_run)

    def onehot_for(self, models) -> np.ndarray:
        """(N, K) float32 type one-hot of CVs running ``models``."""
        onehot = np.zeros((len(models), len(self.types)), np.float32)
        onehot[np.arange(len(models)), [self.types.index(m) for m in models]] = 1.0
        return onehot

    def noise(self, actor, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """The actor's noise input: zeros with --decision-noise zero (one deterministic denoising
        path, trained and deployed), else fresh Gaussian draws."""
        if self.cfg.decision_noise == "zero":
            return torch.zeros(batch, max(actor.steps, 1), actor.n_actions, device=self.device)
        return actor.sample_noise(batch, generator or self.generator)

    def q_all(
        self,
        actor,
        obs: torch.Tensor,
        mask: torch.Tensor,
        generator: torch.Generator | None = None,
        onehot: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(q, score), each (B, N, A): per-agent values of every action and the score whose argmax
        is the agent's choice (`noise`: zeros, or fresh draws from ``generator`` or the learner's)."""
        b, n, d = obs.shape
        oh = self.type_onehot if onehot is None else onehot
        oh = oh.expand(b, n, -1).reshape(b * n, -1)
        q, score = actor(obs.reshape(b * n, d), oh, mask.reshape(b * n, -1), self.noise(actor, b * n, generator))
        return q.view(b, n, -1), score.view(b, n, -1)

    def imitate(self, batch: dict[str, torch.Tensor]) -> float:
        """One Adam step of the imitation loss (splitrt.policy.learn.demonstrate) on the actor."""
        loss = self.imitation_term(batch)
        self.opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 10.0)
        self.opt.step()
        return float(loss.detach())

    def imitation_term(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        from splitrt.policy.learn.demonstrate import imitation_loss

        actor = self.actor
        _, score = actor(batch["obs"], batch["onehot"], batch["mask"], self.noise(actor, len(batch["obs"])))
        loss = imitation_loss(score, batch["target"])
        return loss + range_penalty(actor)

    def fit_actor_normaliser(self, obs: np.ndarray) -> None:
        """Refit the actor's observation normaliser on ``obs`` (rows x D), e.g. the expert's states."""
        scale, log_mask = self._obs_scaling(obs.shape[-1])
        for actor in (self.actor, self.target_actor):
            actor.normaliser.fit(obs.reshape(-1, obs.shape[-1]), scale, log_mask)

    @torch.no_grad()
    def act(self, obs: np.ndarray, mask: np.ndarray, epsilon: float, rng: np.random.Generator) -> np.ndarray:
        """(E, N) actions: argmax of the actor's values, uniform over valid actions w.p. epsilon."""
        _, score = self.q_all(
            self.actor, torch.as_tensor(obs, device=self.device), torch.as_tensor(mask, device=self.device)
        )
        greedy = score.argmax(-1).cpu().numpy()
        explore = rng.random(greedy.shape) < epsilon
        random_valid = sample_valid(rng, mask)
        return np.where(explore, random_valid, greedy)

    @torch.no_grad()
    def decide(
        self,
        obs: np.ndarray,
        mask: np.ndarray,
        samples: int,
        generator: torch.Generator,
        onehot: np.ndarray | None = None,
    ) -> np.ndarray:
        """(E, N) the deployed decision (splitrt.edge_runtime.decide.onnx_policy.OnDevicePolicy.run): one draw decides by
        the graph's score, S > 1 draws by the argmax of the values averaged over them (one
        deterministic pass with --decision-noise zero). ``onehot`` (N, K): the CVs' types when they
        are not the learner's own scenario's (the imitation episodes of other CV counts)."""
        sampled = isinstance(self.actor, DiffusionActor) and self.cfg.decision_noise == "sampled"
        s = samples if sampled else 1
        o = torch.as_tensor(obs, device=self.device).repeat(s, 1, 1)
        m = torch.as_tensor(mask, device=self.device).repeat(s, 1, 1)
        oh = None if onehot is None else torch.as_tensor(onehot, device=self.device)
        q, score = self.q_all(self.actor, o, m, generator, oh)
        if s == 1:
            return score.argmax(-1).cpu().numpy()
        return q.view(s, *obs.shape[:2], -1).mean(0).argmax(-1).cpu().numpy()

    def update(
        self, batch: dict[str, torch.Tensor], reward_scale: float, demo: dict[str, torch.Tensor] | None = None
    ) -> float:
        """One TD step (eqs 59-60) and the soft target update (eqs 61-62); returns the loss. With
        ``demo`` (a batch of demonstrations) the imitation loss, weighted by --demo-weight, is added."""
        cfg = self.cfg
        q, _ = self.q_all(self.actor, batch["obs"], batch["mask"])
        q_taken = q.gather(-1, batch["action"].unsqueeze(-1)).squeeze(-1)  # (B, N)
        q_tot = self.mixer(q_taken, batch["state"])
        y = batch["reward"] / reward_scale
        if cfg.gamma > 0:  # with gamma = 0 the bootstrap term vanishes: skip two forward passes
            with torch.no_grad():
                _, next_score = self.q_all(self.actor, batch["next_obs"], batch["next_mask"])
                best = next_score.argmax(-1, keepdim=True)
                next_target, _ = self.q_all(self.target_actor, batch["next_obs"], batch["next_mask"])
                target_tot = self.target_mixer(next_target.gather(-1, best).squeeze(-1), batch["next_state"])
                y = y + cfg.gamma * target_tot
        loss = F.smooth_l1_loss(q_tot, y)
        loss = loss + range_penalty(self.actor)
        if demo is not None and cfg.demo_weight > 0:
            loss = loss + cfg.demo_weight * self.imitation_term(demo)
        self.opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 10.0)
        self.opt.step()
        with torch.no_grad():
            for net, target in ((self.actor, self.target_actor), (self.mixer, self.target_mixer)):
                for p, tp in zip(net.parameters(), target.parameters(), strict=True):
                    tp.mul_(1.0 - cfg.tau_soft).add_(cfg.tau_soft * p)
        return float(loss.detach())

    def set_normalisers(self, obs: np.ndarray, state: np.ndarray, n_nodes: int) -> None:
        """Queues (FLOPs) through log1p(Q / 1 GFLOP), positions in metres as they are; then
        standardised with the warm-up statistics (see `Normaliser`)."""
        d = obs.shape[-1]
        scale, log_mask = self._obs_scaling(d)
        for actor in (self.actor, self.target_actor):
            actor.normaliser.fit(obs.reshape(-1, d), scale, log_mask)
        n = state.shape[-1] // d
        for mixer in (self.mixer, self.target_mixer):
            mixer.state_norm.fit(state.reshape(-1, n * d), np.tile(scale, n), np.tile(log_mask, n))

    def _obs_scaling(self, d: int) -> tuple[np.ndarray, np.ndarray]:
        from splitrt.edge_runtime.sysmodel.allocation import QUEUE_UNIT_FLOPS
        from splitrt.edge_runtime.sysmodel.observation import own_position_index

        log_mask = np.zeros(d)
        log_mask[: own_position_index(self.n_nodes)] = 1.0  # Q_loc, Q_rsu(type), SV queues
        return np.where(log_mask > 0, QUEUE_UNIT_FLOPS, 1.0), log_mask

    def state_dict(self) -> dict[str, Any]:
        return {
            "actor": self.actor.state_dict(),
            "mixer": self.mixer.state_dict(),
            "target_actor": self.target_actor.state_dict(),
            "target_mixer": self.target_mixer.state_dict(),
            "opt": self.opt.state_dict(),
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, d: dict[str, Any]) -> None:
        self.actor.load_state_dict(d["actor"])
        self.mixer.load_state_dict(d["mixer"])
        self.target_actor.load_state_dict(d["target_actor"])
        self.target_mixer.load_state_dict(d["target_mixer"])
        self.opt.load_state_dict(d["opt"])
        try:
            self.generator.set_state(d["generator"])
        except RuntimeError:  # a CUDA generator's state loaded on the CPU (export, evaluation): unused
            log.debug("noise generator state not restored (other device)")


def epsilon_at(cfg: TrainConfig, episodes_done: int) -> float:
    frac = min(1.0, episodes_done / max(1.0, cfg.eps_fraction * cfg.episodes))
    return cfg.eps_start + frac * (cfg.eps_end - cfg.eps_start)


def warmup_return(env, choose, rng: np.random.Generator, reward_of=None) -> np.ndarray:
    """(E,) the return of one batch of warm-up episodes (every env, T slots) played with
    ``choose(obs, state, mask) -> (E, N)`` (evaluation is `splitrt.policy.evaluate.run_episodes`);
    ``reward_of(reward, info)`` maps the environment's reward to the one summed (default: as is)."""
    obs, state, mask = env.reset(seed=int(rng.integers(2**31)))
    rewards = []
    while True:
        actions = choose(obs, state, mask)
        obs, state, mask, reward, done, info = env.step(actions)
        rewards.append(reward if reward_of is None else reward_of(reward, info))
        if done.all():
            break
    return np.sum(rewards, 0)


# ======================================================================================
# training loop
# ======================================================================================
def train(cfg: TrainConfig, out: str | Path, *, resume: bool = False, progress: bool = True) -> Path:
    """Train into ``out`` (config.json, metrics.csv, checkpoint.pt, learning_curve.png, policy/)."""
    from tqdm import tqdm

    cfg.check_model()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    env = make_env(cfg, cfg.n_envs, seed=cfg.seed)
    learner = Learner(cfg, env)
    replay = Replay(cfg.buffer_size, env.n_agents, env.obs_dim, env.state_dim, env.max_actions)
    ckpt_path = out / "checkpoint.pt"
    metrics_path = out / "metrics.csv"
    start_iter = 0
    iterations = -(-cfg.episodes // cfg.n_envs)  # TD iterations (0: imitation only)
    best: dict[str, Any] | None = None  # the best validated snapshot (see `validate`)
    demos = None  # the imitation phase's demonstrations (splitrt.policy.learn.demonstrate)

    if resume and ckpt_path.exists():
        ckpt = torch.load(ckpt_path, weights_only=False, map_location=cfg.device)
        if ckpt["config"] != asdict(cfg):
            raise SplitrtError(f"{ckpt_path} was written with another configuration; use a new --out")
        learner.load_state_dict(ckpt["learner"])
        replay.load_state_dict(ckpt["replay"])
        rng = ckpt["rng"]
        reward_scale = ckpt["reward_scale"]
        start_iter = ckpt["iteration"]
        best = ckpt.get("best")
        demos = ckpt.get("demos")
        env = make_env(cfg, cfg.n_envs, seed=cfg.seed)  # episodes are reseeded from rng every batch
    else:
        (out / "config.json").write_text(json.dumps({**asdict(cfg), "scenario": _scenario_dict(env)}, indent=1) + "\n")
        # ---- warm-up: random actions give the normalisers and the reward scale ---------------
        obs_seen, state_seen, rew_seen = [], [], []

        def random_choice(obs, state, mask):
            obs_seen.append(obs)
            state_seen.append(state)
            return sample_valid(rng, mask)

        rew_seen.append(
            warmup_return(env, random_choice, rng, lambda r, i: training_reward(cfg, r, i)) / max(1, len(obs_seen))
        )
        learner.set_normalisers(np.concatenate(obs_seen), np.concatenate(state_seen), env.n_nodes)
        seen = np.concatenate(rew_seen)
        seen = seen[np.isfinite(seen)]  # the as-run model has no per-slot reward (imitation only)
        reward_scale = float(max(np.mean(np.abs(seen)), 1e-6)) if seen.size else 1.0
        with open(metrics_path, "w", newline="") as f:
            csv.writer(f).writerow(
                [
                    "iteration",
                    "episodes",
                    "epsilon",
                    "return",
                    "completion_s",
                    "loss",
                    "wall_s",
                    "val_return",
                    "val_completion_s",
                ]
            )
        if cfg.imitates:  # ---- imitation: DAgger from the expert planner ----------------------
            from splitrt.policy.learn.demonstrate import dagger

            def after_round(r: int) -> dict[str, float]:
                # every round's actor is a snapshot: validated as the TD phase's are (iteration 0)
                nonlocal best
                if not cfg.validate_every:
                    return {}
                val = validate(cfg, learner)
                if best is None or val["completion_s"] < best["completion_s"]:
                    best = {"iteration": 0, "round": r, **val, "actor": copy.deepcopy(learner.actor.state_dict())}
                return {"val_completion_s": val["completion_s"]}

            demos, rows = dagger(cfg, learner, imitation_envs(cfg), rng, progress=progress, after_round=after_round)
            learner.target_actor.load_state_dict(learner.actor.state_dict())  # TD starts from the imitated actor
            with open(out / "imitation.csv", "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)
            keep = demos if cfg.demo_weight > 0 and iterations > 0 else None
            _checkpoint(ckpt_path, cfg, learner, replay, rng, reward_scale, 0, best, keep)
            demos = keep

    t0 = time.perf_counter()
    bar = tqdm(
        range(start_iter, iterations),
        desc=f"train {cfg.method}",
        unit="it",
        disable=not progress,
        initial=start_iter,
        total=iterations,
    )
    for it in bar:
        # ---- rollout: E episodes in parallel, every slot goes to the replay buffer -------------
        epsilon = epsilon_at(cfg, it * cfg.n_envs)
        obs, state, mask = env.reset(seed=int(rng.integers(2**31)))
        returns = np.zeros(cfg.n_envs)
        completion, losses = [], []
        while True:
            actions = learner.act(obs, mask, epsilon, rng)
            next_obs, next_state, next_mask, reward, done, info = env.step(actions)
            reward = training_reward(cfg, reward, info)
            replay.add(obs, state, mask, actions, reward, next_obs, next_state, next_mask)
            returns += reward
            completion.append(float(info["completion_s"].mean()))
            # ---- update: TD through the mixer ---------------------------------------------
            if replay.size >= cfg.batch_size:
                for _ in range(cfg.updates_per_step):
                    demo = demos.sample(cfg.batch_size, rng, learner.device) if demos is not None else None
                    batch = replay.sample(cfg.batch_size, rng, learner.device)
                    losses.append(learner.update(batch, reward_scale, demo))
            obs, state, mask = next_obs, next_state, next_mask
            if done.all():
                break
        val: dict[str, float] = {}
        if cfg.validate_every and ((it + 1) % cfg.validate_every == 0 or it + 1 == iterations):
            val = validate(cfg, learner)
            if best is None or val["completion_s"] < best["completion_s"]:
                best = {"iteration": it + 1, **val, "actor": copy.deepcopy(learner.actor.state_dict())}
        row = [
            it + 1,
            (it + 1) * cfg.n_envs,
            round(epsilon, 4),
            float(returns.mean()),
            float(np.mean(completion)),
            float(np.mean(losses)) if losses else float("nan"),
            round(time.perf_counter() - t0, 2),
            val.get("return", ""),
            val.get("completion_s", ""),
        ]
        with open(metrics_path, "a", newline="") as f:
            csv.writer(f).writerow(row)
        bar.set_postfix(ret=f"{row[3]:.1f}", comp=f"{row[4]:.3f}s", eps=f"{epsilon:.2f}")
        if (it + 1) % cfg.checkpoint_every == 0 or it + 1 == iterations:
            _checkpoint(ckpt_path, cfg, learner, replay, rng, reward_scale, it + 1, best, demos)
    bar.close()
    export_run(out)
    plot_learning_curve(out)
    return out


def _scenario_dict(env) -> dict[str, Any]:
    return env.scenario.to_dict()


class _Deployed:
    """The learner's deployed decision as a `splitrt.policy.methods.registry.Method` (for `validate`)."""

    name = "validation"

    def __init__(self, learner: Learner, generator: torch.Generator) -> None:
        from splitrt.edge_runtime.decide.onnx_policy import DEFAULT_SAMPLES

        self.learner, self.generator, self.samples = learner, generator, DEFAULT_SAMPLES

    def reset(self, env, seed: int | None) -> None:
        pass

    def act(self, obs: np.ndarray, state: np.ndarray, mask: np.ndarray, view) -> np.ndarray:
        return self.learner.decide(obs, mask, self.samples, self.generator)


def validate(cfg: TrainConfig, learner: Learner) -> dict[str, float]:
    """Return (sum of the rewards -P2, eq 57) and mean task completion time of the deployed
    decision on n_envs fixed validation episodes, run and summarised as `splitrt evaluate` does
    (their own seed, never a training or evaluation episode; own noise generator, so validating
    does not change the training run)."""
    from splitrt.policy.evaluate import Setting, run_episodes, summarize

    generator = torch.Generator(device=learner.device).manual_seed(cfg.seed + VALIDATION_SEED)
    episodes_seed = int(np.random.default_rng(cfg.seed + VALIDATION_SEED).integers(2**31))
    ep = run_episodes(make_scenario(cfg), _Deployed(learner, generator), cfg.n_envs, episodes_seed)
    summary = summarize("validation", Setting(cfg.cvs, cfg.svs, cfg.v), ep)
    return {"return": float(-ep.lyapunov["p2"].sum(axis=1).mean()), "completion_s": summary["mean_completion_s"]}


def _checkpoint(path: Path, cfg, learner, replay, rng, reward_scale, iteration, best=None, demos=None) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "config": asdict(cfg),
            "learner": learner.state_dict(),
            "replay": replay.state_dict(),
            "rng": rng,
            "reward_scale": reward_scale,
            "iteration": iteration,
            "best": best,
            "demos": demos,
        },
        tmp,
    )
    tmp.replace(path)  # atomic: a crash never leaves a half-written checkpoint


def load_run(run_dir: str | Path, snapshot: str = "last"):
    """(config, env, learner) of a finished or checkpointed run; ``snapshot="best"`` puts the best
    validated actor in place of the last one (when the run validated)."""
    run_dir = Path(run_dir)
    ckpt_path = run_dir / "checkpoint.pt"
    if not ckpt_path.is_file():
        raise SplitrtError(f"no checkpoint in {run_dir} (train with `splitrt train --out {run_dir}` first)")
    ckpt = torch.load(ckpt_path, weights_only=False, map_location="cpu")
    cfg = TrainConfig(**{**ckpt["config"], "device": "cpu"})
    env = make_env(cfg, 1, seed=cfg.seed)
    learner = Learner(cfg, env)
    learner.load_state_dict(ckpt["learner"])
    learner.selected = {"iteration": ckpt["iteration"], "by": "last iteration"}
    best = ckpt.get("best")
    if snapshot == "best" and best is not None:
        learner.actor.load_state_dict(best["actor"])
        learner.selected = {
            "iteration": best["iteration"],
            **({"imitation_round": best["round"]} if "round" in best else {}),
            "by": "shortest validation completion time",
            "val_return": best["return"],
            "val_completion_s": best["completion_s"],
        }
    return cfg, env, learner


def export_run(run_dir: str | Path, out: str | Path | None = None, snapshot: str = "best") -> Path:
    """Export the run's best validated actor (the last one without validation, or with
    ``snapshot="last"``) as the on-device policy (default RUN/policy/)."""
    from splitrt.policy.learn.export import export_actor

    run_dir = Path(run_dir)
    cfg, env, learner = load_run(run_dir, snapshot=snapshot)
    from splitrt.policy.sim.workloads import load_manifest

    types = [
        {
            "model": model,
            "n_cuts": env.workloads[model].n_cuts,
            "manifest_sha256": load_manifest(model, env.scenario.manifest_dir).digest,
        }
        for model in learner.types
    ]
    command = train_command(cfg, run_dir)  # every field: the run's exact command
    meta = {
        "method": cfg.method,
        "n_nodes": env.n_nodes,
        "n_agents": env.n_agents,
        "types": types,
        "scenario": env.scenario.to_dict(),
        "train_config": asdict(cfg),
        "command": command,
        "selected": learner.selected,
        # the CV counts the actor was trained on (imitation episodes and the TD phase's scenario)
        "train_cvs": sorted({cfg.cvs, *(cfg.demo_counts() if cfg.imitates else [])}),
    }
    if cfg.method == "mad2rl" and cfg.decision_noise == "zero":
        meta["noise"] = "zero"  # one deterministic pass (splitrt.edge_runtime.decide.onnx_policy, "Samples")
    return export_actor(learner.actor, Path(out) if out else run_dir / "policy", meta)


def plot_learning_curve(run_dir: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    with open(run_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    ep = [float(r["episodes"]) for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.5))
    a.plot(ep, [float(r["return"]) for r in rows])
    a.set_xlabel("episodes")
    a.set_ylabel("mean episode return (-sum P2)")
    b.plot(ep, [float(r["completion_s"]) for r in rows], label="rollouts (one draw, epsilon)")
    val = [(e, float(r["val_completion_s"])) for e, r in zip(ep, rows, strict=True) if r.get("val_completion_s")]
    if val:
        b.plot(*zip(*val, strict=True), "o-", ms=3, label="validation (deployed decision)")
        b.legend()
    b.set_xlabel("episodes")
    b.set_ylabel("mean completion time (s)")
    fig.suptitle(run_dir.name)
    fig.tight_layout()
    path = run_dir / "learning_curve.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
