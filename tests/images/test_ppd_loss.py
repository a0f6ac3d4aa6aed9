"""Diffusion-DPO with user conditioning: log 2 at initialisation, real gradients, a decreasing
loss on a toy batch, the formula itself, and beta defaults."""

from __future__ import annotations

import math

import pytest
import torch
from persona_engine_ppd.config import BETA_LATENT_SD, BETA_TINY_PIXEL, DPOConfig
from persona_engine_ppd.loss import (
    denoising_loss,
    denoising_target,
    diffusion_dpo_loss,
    per_sample_mse,
)
from ppd_support import USER_DIM, build_tiny


def test_the_formula_matches_a_hand_computation():
    mw, ml, rw, rl = (
        torch.tensor([0.30, 0.10]),
        torch.tensor([0.20, 0.40]),
        torch.tensor([0.25, 0.20]),
        torch.tensor([0.25, 0.30]),
    )
    terms = diffusion_dpo_loss(mw, ml, rw, rl, beta=10.0)
    inside = [-5.0 * ((0.30 - 0.20) - 0.0), -5.0 * ((0.10 - 0.40) - (0.20 - 0.30))]
    expected = sum(math.log1p(math.exp(-v)) for v in inside) / 2
    assert terms.loss.item() == pytest.approx(expected, rel=1e-5)
    assert terms.inside.tolist() == pytest.approx(inside, rel=1e-5)
    assert terms.implicit_accuracy == 0.5


@pytest.mark.parametrize("beta", [1.0, 500.0, 5000.0])
def test_loss_is_log_two_when_the_policy_equals_the_reference(beta):
    err = torch.rand(8)
    terms = diffusion_dpo_loss(err, err.flip(0), err, err.flip(0), beta)
    assert terms.loss.item() == pytest.approx(math.log(2), abs=1e-7)
    assert terms.implicit_accuracy == 0.5  # ties count half


def test_bad_arguments_are_errors():
    with pytest.raises(ValueError, match="beta"):
        diffusion_dpo_loss(torch.zeros(2), torch.zeros(2), torch.zeros(2), torch.zeros(2), beta=0)
    with pytest.raises(ValueError, match="shape"):
        diffusion_dpo_loss(torch.zeros(2), torch.zeros(3), torch.zeros(2), torch.zeros(2), beta=1)


def test_the_target_follows_the_prediction_type():
    from diffusers import DDPMScheduler

    x0, noise, t = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4), torch.tensor([10, 500])
    eps = DDPMScheduler(num_train_timesteps=1000, prediction_type="epsilon")
    v = DDPMScheduler(num_train_timesteps=1000, prediction_type="v_prediction")
    assert torch.equal(denoising_target(eps, x0, noise, t), noise)
    a = v.alphas_cumprod[t].view(-1, 1, 1, 1)
    assert torch.allclose(
        denoising_target(v, x0, noise, t), a.sqrt() * noise - (1 - a).sqrt() * x0, atol=1e-6
    )


def test_plain_denoising_loss_is_the_mean_squared_error():
    a, b = torch.randn(3, 3, 4, 4), torch.randn(3, 3, 4, 4)
    assert per_sample_mse(a, b).shape == (3,)
    assert denoising_loss(a, b).item() == pytest.approx(((a - b) ** 2).mean().item(), rel=1e-6)


def _toy_batch(model, seed=0):
    gen = torch.Generator().manual_seed(seed)
    b = 6
    winners = torch.rand((b, 3, 8, 8), generator=gen) * 2 - 1
    winners[:, 0] = 0.9  # preferred images are red
    losers = torch.rand((b, 3, 8, 8), generator=gen) * 2 - 1
    losers[:, 0] = -0.9
    noise = torch.randn((b, 3, 8, 8), generator=gen)
    t = torch.randint(0, 100, (b,), generator=gen)
    from diffusers import DDPMScheduler

    sched = DDPMScheduler.from_config(model.scheduler_config)
    x0, noise2, t2 = torch.cat([winners, losers]), torch.cat([noise, noise]), torch.cat([t, t])
    text = model.backbone.encode_prompts(["square"] * b).detach()
    users = torch.randn((b, USER_DIM), generator=gen)
    return (
        sched.add_noise(x0, noise2, t2),
        t2,
        torch.cat([text, text]),
        denoising_target(sched, x0, noise2, t2),
        users,
    )


def _dpo(model, batch, beta):
    x, t, text, target, users = batch
    b = users.shape[0]
    with torch.no_grad():
        ref = per_sample_mse(model.predict(x, t, text, None), target)
    tokens = model.adapter.tokens(users)
    err = per_sample_mse(model.predict(x, t, text, torch.cat([tokens, tokens])), target)
    return diffusion_dpo_loss(err[:b], err[b:], ref[:b], ref[b:], beta)


def test_at_init_the_loss_is_log_two_with_a_real_gradient():
    model = build_tiny()
    model.freeze_backbone()
    terms = _dpo(model, _toy_batch(model), beta=1000.0)
    assert terms.loss.item() == pytest.approx(
        math.log(2), abs=1e-6
    )  # zero-init: policy == reference
    terms.loss.backward()
    v_grads = [b.to_v.weight.grad for b in model.adapter.branches.values()]
    assert all(g is not None for g in v_grads)
    assert sum(g.abs().sum().item() for g in v_grads) > 0  # not a zero-gradient start
    assert all(p.grad is None for p in model.backbone.parameters())  # the base stays frozen


def test_a_few_steps_lower_the_loss_on_a_toy_batch():
    model = build_tiny()
    model.freeze_backbone()
    batch = _toy_batch(model)
    opt = torch.optim.Adam([p for p in model.adapter.parameters() if p.requires_grad], lr=1e-2)
    first = None
    for _ in range(15):
        terms = _dpo(model, batch, beta=1000.0)
        first = terms.loss.item() if first is None else first
        opt.zero_grad()
        terms.loss.backward()
        opt.step()
    final = _dpo(model, batch, beta=1000.0)
    assert first == pytest.approx(math.log(2), abs=1e-6)
    assert final.loss.item() < 0.6
    assert final.implicit_accuracy > 0.5


def test_default_beta_depends_on_the_backbone():
    assert DPOConfig().beta_for("tiny") == BETA_TINY_PIXEL
    assert DPOConfig().beta_for("pipeline") == BETA_LATENT_SD == 5000.0
    assert DPOConfig(beta=42.0).beta_for("pipeline") == 42.0
