"""`splitrt train`'s configuration, torch-free so the CLI can build its flags without torch.

Every field is a flag made from its metadata (`setting`: help, unit; splitrt.edge_runtime.configfields),
and `train_command` writes the complete `splitrt train` command of a configuration. The choices the
paper leaves open are explained in policy/learn/train.py's module docstring.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from splitrt.edge_runtime.configfields import helps, setting, to_argv
from splitrt.edge_runtime.errors import SplitrtError
from splitrt.policy.sim.scenario import SIM_MODELS

METHODS = ("mad2rl", "pqmix")
NOISE = ("zero", "sampled")


@dataclass(frozen=True)
class TrainConfig:
    """One training run; every field is a `splitrt train` flag (its `setting` holds the help)."""

    method: str = setting("mad2rl", help="mad2rl (diffusion actors) or pqmix (MLP agents)")
    preset: str = setting("paper", help="scenario preset of the simulator")
    cvs: int = setting(5, help="client vehicles (agents)")
    svs: int = setting(5, help="service vehicles")
    v: float = setting(10.0, help="Lyapunov trade-off V")
    objective_v: float = setting(
        150.0,
        help="V' of the training reward -(queue pressure + V' sum_i d_i), the slot objective of best-known "
        "(policy/methods/baselines.py); 0: the paper's -P2(t) at --v (eq 57)",
    )
    expert: str = setting(
        "ga:budget=2550;objective_v=150",
        help="planner whose decisions the actor imitates before the TD phase (DAgger), as "
        "METHOD[:KEY=VALUE[;KEY=VALUE]] of `splitrt evaluate --variant`; none: no imitation (the paper's training)",
    )
    dagger_rounds: int = setting(6, help="imitation rounds: roll out, label every slot with the expert, refit")
    dagger_slots: int = setting(60, help="slots per imitation episode")
    dagger_envs: int = setting(8, help="imitation episodes per round and CV count (played in parallel)")
    bc_steps: int = setting(1000, help="gradient steps on the aggregated demonstrations after each round")
    demo_cvs: str = setting(
        "3,4,5,6,7",
        help="CV counts the imitation episodes cycle through (the actor is shared, so one policy serves them); "
        "empty: --cvs only",
    )
    demo_weight: float = setting(
        1.0, help="weight of the imitation loss kept beside the TD loss in the TD phase (0: plain TD)"
    )
    decision_noise: str = setting(
        "zero",
        choices=NOISE,
        help="zero: the diffusion actor denoises from x_M = 0 without posterior noise, one deterministic "
        "pass per decision (trained and deployed so); sampled: fresh Gaussian noise, values averaged over draws",
    )
    steps: int = setting(7, help="denoising steps M of the diffusion actor")
    temperature: float = setting(
        1.0, help="softmax temperature of the diffusion actor's values softmax(x0 / T) (eq 42 has T = 1)"
    )
    episodes: int = setting(
        0,
        help="episodes of T slots in the TD phase after the imitation (0: none; the paper's training, "
        "--expert none, needs some: 2000 before the imitation phase existed)",
    )
    sim_model: str = setting(
        "paper",
        help="slot model the episodes run in: paper (eqs 3-17) or as-run (the runtime's queues, policy/sim/asrun.py; "
        "imitation only: its completions exist after the queues serve them, so there is no per-slot TD reward)",
    )
    calibration: str = setting("", help="the as-run model's overheads (OUT/calibration.json of a splitrt hil run)")
    seed: int = setting(0, help="seed of everything (torch, numpy, environments)")
    n_envs: int = setting(16, help="environments stepped in parallel")
    lr: float = setting(5e-4, help="Adam learning rate (paper)")
    gamma: float = setting(
        0.0,
        help="discount; the paper's 0.99 makes both methods collapse to full offload here "
        "(policy/learn/train.py), 0 learns P2(t)",
    )
    tau_soft: float = setting(0.001, help="soft target update rate (paper, eqs 61-62)")
    buffer_size: int = setting(50_000, help="replay capacity in transitions")
    batch_size: int = setting(64, help="transitions per gradient step")
    updates_per_step: int = setting(2, help="gradient steps per parallel environment step")
    eps_start: float = setting(1.0, help="initial epsilon of epsilon-greedy exploration")
    eps_end: float = setting(0.05, help="final epsilon")
    eps_fraction: float = setting(0.3, help="fraction of episodes over which epsilon decays linearly")
    hidden: int = setting(256, help="actor hidden width (paper: 3 x 256, Mish)")
    checkpoint_every: int = setting(25, help="iterations between checkpoints")
    validate_every: int = setting(
        10,
        help="iterations between validations (and the last one): the deployed decision (mean values over the "
        "runtime's noise draws, no exploration) on n_envs fixed episodes; the policy exported is the snapshot "
        "with the shortest validation mean completion time (0: the last one)",
    )
    threads: int = setting(
        1, help="torch CPU threads (1: bit-reproducible, and 2 threads starve each other on a busy 2-core machine)"
    )
    device: str = setting(
        "cpu", help="torch device for the networks (cpu, or cuda where available; results differ in the last bits)"
    )

    def check_model(self) -> None:
        """Refuse a TD phase in the as-run model (`splitrt train` calls this before it starts)."""
        if self.sim_model == "as-run" and (self.episodes > 0 or not self.imitates):
            raise SplitrtError(
                "--sim-model as-run trains by imitation only (an --expert and --episodes 0): a task's as-run "
                "completion exists only once the queues have served it, so there is no per-slot TD reward"
            )

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise SplitrtError(f"--method {self.method!r} is not one of {', '.join(METHODS)}")
        if self.validate_every < 0:
            raise SplitrtError(f"--validate-every must be >= 0 (0: no validation), got {self.validate_every}")
        if self.decision_noise not in NOISE:
            raise SplitrtError(f"--decision-noise {self.decision_noise!r} is not one of {', '.join(NOISE)}")
        if self.objective_v < 0 or self.demo_weight < 0:
            raise SplitrtError("--objective-v and --demo-weight must be >= 0")
        self.demo_counts()  # refuses a malformed --demo-cvs now
        if self.sim_model not in SIM_MODELS:
            raise SplitrtError(f"--sim-model {self.sim_model!r} is not one of {', '.join(SIM_MODELS)}")

        if self.episodes < 0 or self.dagger_rounds < 0 or self.bc_steps < 0:
            raise SplitrtError("--episodes, --dagger-rounds and --bc-steps must be >= 0")
        if self.imitates and (self.dagger_rounds < 1 or self.bc_steps < 1):
            raise SplitrtError("imitation (--expert) needs --dagger-rounds >= 1 and --bc-steps >= 1")
        if not self.imitates and self.episodes < 1:
            raise SplitrtError("--expert none and --episodes 0 leave nothing to train")
        for name in (
            "cvs",
            "svs",
            "n_envs",
            "dagger_slots",
            "batch_size",
            "buffer_size",
            "updates_per_step",
            "threads",
        ):
            if getattr(self, name) < 1:
                raise SplitrtError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.method == "mad2rl" and self.steps < 1:
            raise SplitrtError(f"--steps (denoising steps M) must be >= 1, got {self.steps}")
        if not 0 <= self.gamma < 1 or not 0 < self.tau_soft <= 1 or self.lr <= 0:
            raise SplitrtError("--gamma must be in [0, 1), --tau-soft in (0, 1], --lr > 0")

    @property
    def imitates(self) -> bool:
        return self.expert.strip().lower() not in ("", "none")

    def demo_counts(self) -> list[int]:
        """The CV counts of the imitation episodes (--demo-cvs), --cvs when empty."""
        text = self.demo_cvs.strip()
        if not text:
            return [self.cvs]
        try:
            counts = [int(x) for x in text.split(",")]
        except ValueError:
            raise SplitrtError(f"--demo-cvs {self.demo_cvs!r} must be comma-separated CV counts, e.g. 3,5,7") from None
        if any(c < 1 for c in counts):
            raise SplitrtError(f"--demo-cvs {self.demo_cvs!r}: every count must be >= 1")
        return counts

    @classmethod
    def help(cls) -> dict[str, str]:
        """field name -> its --help text (the fields' metadata)."""
        return helps(cls)


def train_command(cfg: TrainConfig, out: str | Path) -> str:
    """The `splitrt train` command that trains ``cfg`` into ``out``: every field as a flag, so it
    parses back to an equal configuration (what a run records as its exact command)."""
    return shlex.join(["splitrt", "train", *to_argv(cfg), "--out", str(out)])
