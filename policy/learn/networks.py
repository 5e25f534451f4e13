"""MAD2RL's networks: the diffusion actor (eqs 34-42), the P-QMIX MLP agent, the QMIX mixer (eq 58).

Shapes: B = batch (environments x agents for actors, environments for the mixer), D = observation
size 2J + 1 (eq 53), K = DNN types, A = padded action count (max over types of (L_k + 1) * J),
N = agents, S = state size (eq 54).

Every agent shares one actor (parameter sharing, as in pymarl); the actor's input is the
normalised observation plus a one-hot of the agent's DNN type, so a vehicle needs only its own
observation and model name to decide, whatever the number of other vehicles. Actions beyond an
agent's own (L_k + 1) * J, and offloads to SVs outside the V2V radius (eq 25), are masked.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

MASKED_Q = -1e9  # value of an invalid action: never the argmax, exp() underflows to 0


def vp_beta_schedule(steps: int, b_min: float = 0.1, b_max: float = 10.0) -> np.ndarray:
    """The "vp" schedule: beta_m = 1 - exp(-b_min/M - (2m - 1)/(2 M^2) (b_max - b_min)), m = 1..M.

    (The paper cites it through GDMOPT/D2SAC without values; b_min, b_max are from that code.)
    """
    m = np.arange(1, steps + 1, dtype=np.float64)
    return 1.0 - np.exp(-b_min / steps - (2 * m - 1) / (2 * steps**2) * (b_max - b_min))


class Normaliser(nn.Module):
    """Observation normaliser stored as buffers inside the policy artifact, so a deployed policy
    can never be paired with the wrong statistics.

    y = log1p(max(x, 0) / scale) for queue features (FLOPs; ``log_mask`` = 1) and x / scale for
    the others, then (y - mean) / std with mean/std measured on warm-up episodes. The log keeps a
    queue that grows far beyond anything seen in the warm-up from blowing up the networks' inputs.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("scale", torch.ones(dim))
        self.register_buffer("log_mask", torch.zeros(dim))
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def transform(self, obs: torch.Tensor) -> torch.Tensor:
        scaled = obs / self.scale
        return self.log_mask * torch.log1p(torch.relu(scaled)) + (1.0 - self.log_mask) * scaled

    def fit(self, samples: np.ndarray, scale: np.ndarray, log_mask: np.ndarray) -> None:
        """Set scale/log_mask, then mean/std of the transformed ``samples`` (rows x dim)."""
        self.scale.copy_(torch.as_tensor(scale, dtype=torch.float32))
        self.log_mask.copy_(torch.as_tensor(log_mask, dtype=torch.float32))
        with torch.no_grad():
            y = self.transform(torch.as_tensor(samples, dtype=torch.float32, device=self.scale.device))
        self.mean.copy_(y.mean(0))
        self.std.copy_(y.std(0).clamp_min(1e-3))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return (self.transform(obs) - self.mean) / self.std


class SinusoidalEmbedding(nn.Module):
    """Transformer-style embedding of the denoising step m (eq 38)."""

    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, m: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        freqs = torch.exp(torch.arange(half, dtype=torch.float32, device=m.device) * -(math.log(10000.0) / (half - 1)))
        angles = m.float()[:, None] * freqs[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=-1)


def _mlp(inp: int, hidden: int, out: int, layers: int = 3) -> nn.Sequential:
    mods: list[nn.Module] = []
    width = inp
    for _ in range(layers):
        mods += [nn.Linear(width, hidden), nn.Mish()]
        width = hidden
    mods.append(nn.Linear(width, out))
    return nn.Sequential(*mods)


class DiffusionActor(nn.Module):
    """Reverse DDPM over M steps from Gaussian noise to x0 in R^A; Q-values = softmax(x0) (eq 42).

    eps_theta(x_m, m, s) is an MLP with 3 hidden layers x 256 (Mish) over [x_m, emb(m), s], where s
    is the normalised observation plus the type one-hot (eqs 36-40). Each reverse step predicts x0
    from the noise estimate, bounds it to (-1, 1) and moves to the posterior mean of
    q(x_{m-1} | x_m, x0), adding posterior noise except at the last step (eq 41).

    The bound is tanh, not the hard clip of the D2SAC code: with a clip, saturated entries of x0
    are exactly 1.0, tie, get no gradient, and argmax returns the first of them (cut 0 at the
    RSU): every run we trained that way collapsed to full offload. tanh still rounds to exactly
    1.0 in float32 beyond |x| ~ 9, so actions are chosen by the unbounded prediction (`forward`
    returns it as the score) and the trainer adds a small penalty that keeps it where tanh
    responds (policy/learn/train.py).
    """

    def __init__(
        self,
        obs_dim: int,
        n_types: int,
        n_actions: int,
        steps: int = 7,
        hidden: int = 256,
        b_min: float = 0.1,
        b_max: float = 10.0,
        t_dim: int = 16,
        temperature: float = 1.0,
    ) -> None:
        super().__init__()
        self.temperature = temperature
        self.obs_dim, self.n_types, self.n_actions, self.steps = obs_dim, n_types, n_actions, steps
        self.normaliser = Normaliser(obs_dim)
        self.embed = SinusoidalEmbedding(t_dim)
        self.eps = _mlp(n_actions + t_dim + obs_dim + n_types, hidden, n_actions)
        betas = vp_beta_schedule(steps, b_min, b_max)
        alphas = 1.0 - betas
        abar = np.cumprod(alphas)
        abar_prev = np.concatenate([[1.0], abar[:-1]])
        post_var = betas * (1.0 - abar_prev) / (1.0 - abar)
        for name, value in {
            "betas": betas,
            "alphas_cumprod": abar,
            "sqrt_recip_abar": np.sqrt(1.0 / abar),
            "sqrt_recipm1_abar": np.sqrt(1.0 / abar - 1.0),
            "post_coef1": betas * np.sqrt(abar_prev) / (1.0 - abar),
            "post_coef2": (1.0 - abar_prev) * np.sqrt(alphas) / (1.0 - abar),
            "post_std": np.sqrt(np.maximum(post_var, 1e-20)),
        }.items():
            self.register_buffer(name, torch.tensor(value, dtype=torch.float32))

    def condition(self, obs: torch.Tensor, type_onehot: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.normaliser(obs), type_onehot], dim=-1)

    def reverse_step(
        self, x: torch.Tensor, m: int, cond: torch.Tensor, z: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x_m -> (x_{m-1}, the unbounded x0 prediction), m = M..1 (index m - 1 into the buffers)."""
        i = m - 1
        step = torch.full((x.shape[0],), float(m), device=x.device)
        eps = self.eps(torch.cat([x, self.embed(step), cond], dim=-1))
        pre = self.sqrt_recip_abar[i] * x - self.sqrt_recipm1_abar[i] * eps
        mean = self.post_coef1[i] * torch.tanh(pre) + self.post_coef2[i] * x
        if m > 1 and z is not None:
            return mean + self.post_std[i] * z, pre
        return mean, pre

    def forward(
        self, obs: torch.Tensor, type_onehot: torch.Tensor, mask: torch.Tensor, noise: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(q, score), both (B, A). q: softmax over the valid actions of x0 = tanh(x0 prediction of
        the last step), MASKED_Q elsewhere (eq 42). score: that prediction before tanh, -inf on
        invalid actions; argmax(score) = argmax(q) exactly (tanh and softmax are strictly monotonic),
        without the ties float32 creates where tanh saturates.

        ``noise`` (B, M, A): noise[:, 0] is x_M, noise[:, k] (k >= 1) the posterior noise of step
        M - k. Passing the noise in makes the policy a deterministic function (ONNX parity).
        """
        cond = self.condition(obs, type_onehot)
        x = noise[:, 0]
        pre = x
        for k, m in enumerate(range(self.steps, 0, -1)):
            z = noise[:, k + 1] if m > 1 else None
            x, pre = self.reverse_step(x, m, cond, z)
        self.last_pre = pre  # for the trainer's range penalty
        logits = (torch.tanh(pre) / self.temperature).masked_fill(~mask, float("-inf"))
        q = torch.softmax(logits, dim=-1).masked_fill(~mask, MASKED_Q)
        return q, pre.masked_fill(~mask, float("-inf"))

    def sample_noise(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        device = generator.device if generator is not None else self.betas.device
        return torch.randn(batch, self.steps, self.n_actions, generator=generator, device=device)


class MLPAgent(nn.Module):
    """P-QMIX's agent: the same input, an MLP (3 x 256, Mish) straight to per-action Q-values."""

    def __init__(self, obs_dim: int, n_types: int, n_actions: int, hidden: int = 256) -> None:
        super().__init__()
        self.obs_dim, self.n_types, self.n_actions, self.steps = obs_dim, n_types, n_actions, 0
        self.normaliser = Normaliser(obs_dim)
        self.q = _mlp(obs_dim + n_types, hidden, n_actions)

    def forward(
        self, obs: torch.Tensor, type_onehot: torch.Tensor, mask: torch.Tensor, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(q, score): masked Q-values; the score to argmax is q itself."""
        q = self.q(torch.cat([self.normaliser(obs), type_onehot], dim=-1)).masked_fill(~mask, MASKED_Q)
        return q, q

    def sample_noise(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.zeros(batch, 1, self.n_actions, device=self.normaliser.mean.device)


class QMixer(nn.Module):
    """QMIX (eq 58): Q_tot = W2^T elu(W1^T Q + b1) + V(s), W1, W2 = |hypernet(s)| (monotonic).

    Hypernetworks for W1 and W2 have 2 layers with 64 hidden units; the mixing layer has
    ``embed`` units; b1 is one linear layer of s and V(s) two (as in pymarl).
    Shapes: q (B, N), state (B, S) -> (B,).
    """

    def __init__(self, n_agents: int, state_dim: int, embed: int = 32, hyper_hidden: int = 64) -> None:
        super().__init__()
        self.n_agents, self.embed = n_agents, embed
        self.state_norm = Normaliser(state_dim)
        self.hyper_w1 = nn.Sequential(
            nn.Linear(state_dim, hyper_hidden), nn.ReLU(), nn.Linear(hyper_hidden, n_agents * embed)
        )
        self.hyper_w2 = nn.Sequential(nn.Linear(state_dim, hyper_hidden), nn.ReLU(), nn.Linear(hyper_hidden, embed))
        self.hyper_b1 = nn.Linear(state_dim, embed)
        self.value = nn.Sequential(nn.Linear(state_dim, embed), nn.ReLU(), nn.Linear(embed, 1))

    def forward(self, q: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        s = self.state_norm(state)
        w1 = self.hyper_w1(s).abs().view(-1, self.n_agents, self.embed)
        b1 = self.hyper_b1(s).view(-1, 1, self.embed)
        hidden = F.elu(torch.bmm(q.view(-1, 1, self.n_agents), w1) + b1)  # (B, 1, embed)
        w2 = self.hyper_w2(s).abs().view(-1, self.embed, 1)
        return torch.bmm(hidden, w2).view(-1) + self.value(s).view(-1)
