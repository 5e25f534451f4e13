"""Diffusion actor, MLP agent and QMIX mixer: formulas by hand, monotonicity, masking."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from splitrt.policy.learn.networks import MASKED_Q, DiffusionActor, MLPAgent, QMixer, vp_beta_schedule


def test_vp_schedule_matches_the_formula():
    m_steps, b_min, b_max = 7, 0.1, 10.0
    betas = vp_beta_schedule(m_steps, b_min, b_max)
    for m in range(1, m_steps + 1):
        expected = 1 - np.exp(-b_min / m_steps - (2 * m - 1) / (2 * m_steps**2) * (b_max - b_min))
        assert betas[m - 1] == pytest.approx(expected, rel=1e-12)
    assert np.all(np.diff(betas) > 0) and 0 < betas[0] < betas[-1] < 1
    actor = DiffusionActor(5, 2, 4, steps=m_steps)
    np.testing.assert_allclose(actor.betas.numpy(), betas, rtol=1e-6)
    np.testing.assert_allclose(actor.alphas_cumprod.numpy(), np.cumprod(1 - betas), rtol=1e-6)


def test_one_reverse_step_by_hand():
    torch.manual_seed(0)
    actor = DiffusionActor(obs_dim=3, n_types=1, n_actions=4, steps=3).double()
    x = torch.tensor([[0.3, -0.2, 0.5, 0.1]], dtype=torch.float64)
    cond = torch.tensor([[0.1, 0.2, 0.3, 1.0]], dtype=torch.float64)
    z = torch.tensor([[0.5, -1.0, 0.25, 0.0]], dtype=torch.float64)
    m = 3
    betas = vp_beta_schedule(3)
    abar = np.cumprod(1 - betas)
    abar_prev = abar[m - 2]
    with torch.no_grad():
        emb = actor.embed(torch.tensor([float(m)], dtype=torch.float64))
        eps = actor.eps(torch.cat([x, emb, cond], -1)).numpy()
        got, pre = actor.reverse_step(x, m, cond, z)
        got = got.numpy()
    xn = x.numpy()
    x0_pred = np.sqrt(1 / abar[m - 1]) * xn - np.sqrt(1 / abar[m - 1] - 1) * eps
    np.testing.assert_allclose(pre.numpy(), x0_pred, rtol=1e-6, atol=1e-8)
    x0 = np.tanh(x0_pred)
    beta, alpha = betas[m - 1], 1 - betas[m - 1]
    mean = (
        beta * np.sqrt(abar_prev) / (1 - abar[m - 1]) * x0 + (1 - abar_prev) * np.sqrt(alpha) / (1 - abar[m - 1]) * xn
    )
    var = beta * (1 - abar_prev) / (1 - abar[m - 1])
    # schedule buffers are stored in float32, hence the tolerance
    np.testing.assert_allclose(got, mean + np.sqrt(var) * z.numpy(), rtol=1e-6, atol=1e-8)


def test_actor_values_are_a_softmax_over_valid_actions_only():
    torch.manual_seed(1)
    for agent in (DiffusionActor(5, 2, 6, steps=5), MLPAgent(5, 2, 6)):
        obs = torch.randn(8, 5)
        onehot = torch.eye(2)[torch.randint(0, 2, (8,))]
        mask = torch.rand(8, 6) > 0.4
        mask[:, 0] = True
        q, score = agent(obs, onehot, mask, agent.sample_noise(8))
        assert torch.all(q[~mask] == MASKED_Q)
        assert torch.all(mask.gather(1, score.argmax(-1, keepdim=True)))  # never an invalid argmax
        # the score ranks valid actions exactly as q does
        assert torch.equal(q.argmax(-1), score.argmax(-1)) or isinstance(agent, DiffusionActor)
        if isinstance(agent, DiffusionActor):
            torch.testing.assert_close(q.masked_fill(~mask, 0).sum(-1), torch.ones(8))


def test_same_noise_same_output_different_noise_different_output():
    torch.manual_seed(2)
    actor = DiffusionActor(5, 1, 6, steps=7)
    obs, onehot, mask = torch.randn(4, 5), torch.ones(4, 1), torch.ones(4, 6, dtype=torch.bool)
    noise = actor.sample_noise(4)
    torch.testing.assert_close(actor(obs, onehot, mask, noise)[0], actor(obs, onehot, mask, noise.clone())[0])
    assert not torch.allclose(actor(obs, onehot, mask, noise)[0], actor(obs, onehot, mask, actor.sample_noise(4))[0])


def test_saturated_values_do_not_tie_the_choice():
    """Where tanh rounds to exactly 1.0 the values tie, but the score still ranks them."""
    actor = DiffusionActor(2, 1, 4, steps=1)
    with torch.no_grad():
        for p in actor.eps.parameters():
            p.zero_()
        actor.eps[-1].bias.copy_(torch.tensor([0.0, 0.0, 0.0, 0.0]))
    noise = torch.tensor([[[20.0, 30.0, 25.0, -5.0]]])  # x_1 large: x0 prediction = x_1 / sqrt(abar)
    q, score = actor(torch.zeros(1, 2), torch.ones(1, 1), torch.ones(1, 4, dtype=torch.bool), noise)
    assert q[0, 0] == q[0, 1] == q[0, 2]  # float32 tanh saturated: tied values
    assert int(score.argmax()) == 1  # the choice follows the unbounded prediction


def test_mixer_is_monotonic_in_every_agent_value():
    torch.manual_seed(3)
    mixer = QMixer(n_agents=4, state_dim=7)
    for p in mixer.parameters():  # random, non-trivial weights
        torch.nn.init.normal_(p, std=0.5)
    q = torch.randn(64, 4, requires_grad=True)
    state = torch.randn(64, 7)
    q_tot = mixer(q, state)
    (grad,) = torch.autograd.grad(q_tot.sum(), q)
    assert q_tot.shape == (64,)
    assert torch.all(grad >= 0)
