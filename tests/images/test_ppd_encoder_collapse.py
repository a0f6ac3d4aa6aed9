"""VICReg's variance and covariance terms in the tiny-image encoder's self-supervised objective:
the losses themselves, and that training with them keeps the embedding from collapsing onto one
direction."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from persona_engine_ppd.loss import covariance_loss, variance_loss
from persona_engine_ppd.synthetic import render_shapes
from ppd_support import toy_recipe


def _decorrelated(n: int = 256, d: int = 8) -> torch.Tensor:
    """A batch whose sample covariance is exactly the identity (unit std, no correlation)."""
    z = torch.randn((n, d), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    z = z - z.mean(dim=0)
    chol = torch.linalg.cholesky(z.T @ z / (n - 1))
    return torch.linalg.solve_triangular(chol, z.T, upper=False).T.float()


def test_the_terms_vanish_on_a_decorrelated_unit_std_batch():
    z = _decorrelated()
    assert float(variance_loss(z)) == 0.0  # every std is 1 >= gamma: the hinge is off
    assert float(covariance_loss(z)) < 1e-8


def test_the_terms_are_high_on_a_collapsed_batch():
    n, d = 256, 8
    s = torch.randn((n, 1), generator=torch.Generator().manual_seed(1))
    s = (s - s.mean()) / s.std()
    one_direction = s.repeat(1, d)  # every dimension the same unit-std signal
    assert float(covariance_loss(one_direction)) == pytest.approx(d - 1, rel=1e-4)  # d(d-1) / d
    assert float(variance_loss(one_direction)) == 0.0  # the variance term alone misses this
    constant = torch.full((n, d), 3.0)  # no variation at all
    assert float(variance_loss(constant)) == pytest.approx(1.0 - 1e-2, abs=1e-6)  # 1 - sqrt(eps)
    assert float(variance_loss(0.1 * _decorrelated())) == pytest.approx(0.9, abs=1e-3)


def test_the_terms_match_their_formulas():
    z = torch.randn((32, 5), generator=torch.Generator().manual_seed(2)) * torch.arange(1, 6) * 0.3
    x = z.double().numpy()
    std = np.sqrt(x.var(axis=0, ddof=1) + 1e-4)
    assert float(variance_loss(z)) == pytest.approx(np.maximum(0.0, 1.0 - std).mean(), rel=1e-5)
    cov = np.cov(x, rowvar=False)
    off = (cov**2).sum() - (np.diag(cov) ** 2).sum()
    assert float(covariance_loss(z)) == pytest.approx(off / 5, rel=1e-5)


def test_training_with_the_terms_spreads_the_embedding():
    """On a tiny pool the encoder trained with reconstruction and invariance alone puts nearly all
    its variance on one direction (effective rank 1.0 of 8 measured); the variance and covariance
    terms keep several (3.9 measured)."""
    from persona_engine_ppd.config import StepTrainingConfig
    from persona_engine_ppd.recipe import embed_with
    from persona_engine_ppd.trainer import (
        COVARIANCE_WEIGHT,
        VARIANCE_WEIGHT,
        embedding_spectrum,
        train_image_encoder,
    )

    torch.set_num_threads(1)
    pool = render_shapes(256, size=8, rng=np.random.default_rng(0))
    cfg = StepTrainingConfig(steps=60, batch_size=64, lr=1e-2, warmup_steps=5)

    def rank(**weights: float) -> float:
        state = train_image_encoder(pool.images, image_size=8, dim=8, cfg=cfg, **weights)
        return embedding_spectrum(embed_with(state, pool.images, 8, 8))["effective_rank"]

    without = rank()
    with_terms = rank(variance_weight=VARIANCE_WEIGHT, covariance_weight=COVARIANCE_WEIGHT)
    assert with_terms > 2.0 * without, (with_terms, without)


def test_the_terms_belong_to_the_self_supervised_objective():
    from persona_engine_ppd.config import StepTrainingConfig
    from persona_engine_ppd.trainer import train_image_encoder

    pool = render_shapes(32, size=8, rng=np.random.default_rng(0))
    cfg = StepTrainingConfig(steps=1, batch_size=8, warmup_steps=0)
    with pytest.raises(ValueError, match="self-supervised"):
        train_image_encoder(
            pool.images, image_size=8, dim=4, cfg=cfg, objective="reconstruction", variance_weight=1
        )
    with pytest.raises(ValueError, match="negative"):
        train_image_encoder(pool.images, image_size=8, dim=4, cfg=cfg, covariance_weight=-1)


def test_the_recipe_adds_the_terms_when_asked():
    """``encoder_variance_covariance`` (off by default: BENCHMARKS.md) trains a different encoder
    and says so in the model's metrics, with the embedding's spectrum as trained."""
    from persona_engine_ppd.recipe import SyntheticRecipeConfig, train_synthetic

    from persona_engine.config import make_config

    toy = toy_recipe(train_users=4, encoder_steps=3, steps=1)
    assert SyntheticRecipeConfig().encoder_variance_covariance is False
    plain = train_synthetic(make_config(SyntheticRecipeConfig, toy))
    regularised = train_synthetic(
        make_config(SyntheticRecipeConfig, {**toy, "encoder_variance_covariance": True})
    )
    assert plain.metrics["encoder_variance_covariance"] is None
    assert regularised.metrics["encoder_variance_covariance"] == [25.0, 1.0]
    assert not torch.equal(
        plain.encoder_state["head.weight"], regularised.encoder_state["head.weight"]
    )
    for run in (plain, regularised):
        assert 1.0 <= run.metrics["encoder_spectrum"]["effective_rank"] <= 32.0


pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
