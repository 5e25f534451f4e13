"""`splitrt train`'s configuration, torch-free so the CLI can build its flags without torch.

Every field is a flag; its docstring (read from this source) is the --help text. The choices
the paper leaves open are explained in policy/learn/train.py's module docstring.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from splitrt.edge_runtime.errors import SplitrtError

METHODS = ("mad2rl", "pqmix")


@dataclass(frozen=True)
class TrainConfig:
    """One training run; every field is a `splitrt train` flag (its docstring is the help)."""

    method: str = "mad2rl"
    """mad2rl (diffusion actors) or pqmix (MLP agents)"""
    preset: str = "paper"
    """scenario preset of the simulator"""
    cvs: int = 5
    """client vehicles (agents)"""
    svs: int = 5
    """service vehicles"""
    v: float = 10.0
    """Lyapunov trade-off V"""
    steps: int = 7
    """denoising steps M of the diffusion actor"""
    temperature: float = 1.0
    """softmax temperature of the diffusion actor's values softmax(x0 / T) (eq 42 has T = 1)"""
    episodes: int = 2000
    """episodes of T slots (2000 by default: MAD2RL learns clearly better than with 1000; README, Results)"""
    seed: int = 0
    """seed of everything (torch, numpy, environments)"""
    n_envs: int = 16
    """environments stepped in parallel"""
    lr: float = 5e-4
    """Adam learning rate (paper)"""
    gamma: float = 0.0
    """discount; the paper's 0.99 makes both methods collapse to full offload here (policy/learn/train.py), 0 learns P2(t)"""
    tau_soft: float = 0.001
    """soft target update rate (paper, eqs 61-62)"""
    buffer_size: int = 50_000
    """replay capacity in transitions"""
    batch_size: int = 64
    """transitions per gradient step"""
    updates_per_step: int = 2
    """gradient steps per parallel environment step"""
    eps_start: float = 1.0
    """initial epsilon of epsilon-greedy exploration"""
    eps_end: float = 0.05
    """final epsilon"""
    eps_fraction: float = 0.3
    """fraction of episodes over which epsilon decays linearly"""
    hidden: int = 256
    """actor hidden width (paper: 3 x 256, Mish)"""
    checkpoint_every: int = 25
    """iterations between checkpoints"""
    validate_every: int = 10
    """iterations between validations (and the last one): the deployed decision (mean values over the runtime's noise draws, no exploration) on n_envs fixed episodes; the policy exported is the snapshot with the shortest validation mean completion time (0: the last one)"""
    threads: int = 1
    """torch CPU threads (1: bit-reproducible, and 2 threads starve each other on a busy 2-core machine)"""
    device: str = "cpu"
    """torch device for the networks (cpu, or cuda where available; results differ in the last bits)"""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise SplitrtError(f"--method {self.method!r} is not one of {', '.join(METHODS)}")
        if self.validate_every < 0:
            raise SplitrtError(f"--validate-every must be >= 0 (0: no validation), got {self.validate_every}")
        for name in ("cvs", "svs", "episodes", "n_envs", "batch_size", "buffer_size", "updates_per_step", "threads"):
            if getattr(self, name) < 1:
                raise SplitrtError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.method == "mad2rl" and self.steps < 1:
            raise SplitrtError(f"--steps (denoising steps M) must be >= 1, got {self.steps}")
        if not 0 <= self.gamma < 1 or not 0 < self.tau_soft <= 1 or self.lr <= 0:
            raise SplitrtError("--gamma must be in [0, 1), --tau-soft in (0, 1], --lr > 0")

    @classmethod
    def help(cls) -> dict[str, str]:
        """Field docstrings (read from the source, since dataclasses drop them)."""
        import inspect

        src = inspect.getsource(cls).splitlines()
        out, last = {}, None
        for line in src:
            s = line.strip()
            if ":" in s and not s.startswith(('"', "def", "@", "class", "#", "for", "if", "raise", "return")):
                last = s.split(":")[0]
            elif s.startswith('"""') and last and last not in out:
                out[last] = s.strip('"')
        return {f.name: out.get(f.name, "") for f in fields(cls)}
