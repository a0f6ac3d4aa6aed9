"""Losses of PPD: the plain denoising loss (base pre-training) and user-conditioned Diffusion-DPO.

Diffusion-DPO (Wallace, Dang, Rafailov, Zhou, Lou, Purushwalkam, Ermon, Xiong, Joty, Naik,
"Diffusion Model Alignment Using Direct Preference Optimization", CVPR 2024), eq. 14:

    L(theta) = - E log sigmoid( -beta T w(lambda_t) [ (||eps - eps_theta(x^w_t, t)||^2 - ||eps - eps_ref(x^w_t, t)||^2)
                                                   - (||eps - eps_theta(x^l_t, t)||^2 - ||eps - eps_ref(x^l_t, t)||^2) ] )

with one timestep ``t`` and one noise ``eps`` shared by the preferred image ``x^w`` and the rejected
``x^l`` of a pair, and the frozen pre-trained model as reference. As in the authors' code
(SalesforceAIResearch/DiffusionDPO, train.py) the squared errors are means over the latent's
elements, measured on the model's own target (epsilon, or v for v-prediction models), and ``T w(lambda_t)`` is folded into beta with a factor 1/2:
``inside = -beta/2 ((m_w - m_l) - (r_w - r_l))``, ``loss = -log sigmoid(inside)``.

PPD (Dang et al., "Personalized Preference Fine-tuning of Diffusion Models", CVPR 2025) conditions
``eps_theta`` on the labeller's user embedding ``u``: ``eps_theta(x_t, c, u, t)``; the reference
stays the unconditioned base. At initialisation the policy equals the reference (zero-initialised
adapter), so ``inside = 0`` and the loss is exactly ``log 2`` whatever beta is.

Whatever precision the model runs in (:mod:`.precision`), the squared errors and the loss are
computed in float32: with beta in the thousands, half-precision differences of errors would round
the sigmoid's argument to a few steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F


def per_sample_mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over every dimension but the first, in float32: (B, ...) -> (B,)."""
    return (prediction.float() - target.float()).pow(2).flatten(1).mean(dim=1)


def denoising_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The denoising loss of DDPM (Ho et al., NeurIPS 2020), ``E ||eps - eps_theta(x_t, t)||^2``, or
    its v-prediction form ``E ||v - v_theta(x_t, t)||^2`` (see :func:`denoising_target`)."""
    return per_sample_mse(prediction, target).mean()


def denoising_target(
    scheduler: Any, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
) -> torch.Tensor:
    """What the UNet is trained to predict: the noise ``eps`` (epsilon-prediction) or the velocity
    ``v = sqrt(a_t) eps - sqrt(1 - a_t) x_0`` (v-prediction, Salimans & Ho, ICLR 2022), as in the
    Diffusion-DPO code. With v the squared error is ``(1 + SNR_t) / SNR_t`` times the epsilon one, a
    different ``w(lambda_t)`` of the Diffusion-DPO bound."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    raise ValueError(f"unsupported prediction_type {kind!r}")


@dataclass
class DPOTerms:
    """What one Diffusion-DPO batch measured (monitor ``implicit_accuracy``: the loss alone can
    look flat while the model improves, DiffusionDPO issues #1/#23)."""

    loss: torch.Tensor
    inside: torch.Tensor  # (B,) the argument of the sigmoid
    implicit_accuracy: float  # share of pairs with inside > 0 (ties count half)
    model_mse: float  # mean policy error over both images
    reference_mse: float


def diffusion_dpo_loss(
    model_err_w: torch.Tensor,
    model_err_l: torch.Tensor,
    ref_err_w: torch.Tensor,
    ref_err_l: torch.Tensor,
    beta: float,
) -> DPOTerms:
    """Diffusion-DPO on per-pair denoising errors (each (B,), see the module docstring)."""
    if beta <= 0:
        raise ValueError("beta must be positive")
    shapes = {tuple(t.shape) for t in (model_err_w, model_err_l, ref_err_w, ref_err_l)}
    if len(shapes) != 1 or len(next(iter(shapes))) != 1:
        raise ValueError(f"the four error vectors must share one (B,) shape, got {sorted(shapes)}")
    model_err_w, model_err_l = model_err_w.float(), model_err_l.float()
    ref_err_w, ref_err_l = ref_err_w.float(), ref_err_l.float()
    model_diff = model_err_w - model_err_l
    ref_diff = (ref_err_w - ref_err_l).detach()
    inside = -0.5 * beta * (model_diff - ref_diff)
    loss = -F.logsigmoid(inside).mean()
    with torch.no_grad():
        acc = float(((inside > 0).float() + 0.5 * (inside == 0).float()).mean())
        model_mse = float(0.5 * (model_err_w.mean() + model_err_l.mean()))
        ref_mse = float(0.5 * (ref_err_w.mean() + ref_err_l.mean()))
    return DPOTerms(loss, inside.detach(), acc, model_mse, ref_mse)


# -- the tiny-image encoder's self-supervised objective ----------------------------------------


def ink_weighted_reconstruction(
    reconstruction: torch.Tensor, images: torch.Tensor, ink_weight: float = 10.0
) -> torch.Tensor:
    """``mean w (x_hat - x)^2`` with ``w = 1 + (ink_weight - 1) [max_c x > 0.05]``.

    The synthetic images are mostly black; an unweighted autoencoder spends its capacity on the
    background and encodes the shape's colour weakly. Weighting the inked pixels is a property of
    the pixels alone (no attribute, reward or preference enters)."""
    ink = (images.amax(dim=1, keepdim=True) > 0.05).to(images.dtype)
    weight = 1.0 + (ink_weight - 1.0) * ink
    return (weight * (reconstruction - images).pow(2)).mean()


def invariance_loss(z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
    """``mean 1 - cos(z_a, z_b)``: two augmented views of an image embed alike (the invariance
    term of BYOL/SimSiam, Grill et al. 2020, Chen & He 2021, without their predictor). The
    reconstruction term alone does not rule out collapse: on the images bench's pools the
    embedding went to one direction and the reconstruction stalled in 3 seeds of 5, hence
    :func:`variance_loss` and :func:`covariance_loss`."""
    return (1.0 - F.cosine_similarity(z_a, z_b, dim=1)).mean()


def variance_loss(z: torch.Tensor, gamma: float = 1.0, eps: float = 1e-4) -> torch.Tensor:
    """VICReg's variance term (Bardes, Ponce, LeCun, "VICReg: Variance-Invariance-Covariance
    Regularization for Self-Supervised Learning", ICLR 2022, eq. 1) on a batch ``z`` (n, d):

        v(z) = 1/d sum_j max(0, gamma - sqrt(Var(z_j) + eps))

    a hinge on each dimension's standard deviation over the batch: zero once every dimension
    varies by at least ``gamma``, so no dimension can go constant (collapse)."""
    std = torch.sqrt(z.float().var(dim=0) + eps)
    return F.relu(gamma - std).mean()


def covariance_loss(z: torch.Tensor) -> torch.Tensor:
    """VICReg's covariance term (Bardes et al. 2022, eq. 3) on a batch ``z`` (n, d):

        c(z) = 1/d sum_{i != j} C(z)_ij^2,   C(z) = 1/(n-1) sum_k (z_k - mean z)(z_k - mean z)^T

    the squared off-diagonal covariances: it decorrelates the dimensions, so they cannot all
    carry the same direction (dimensional collapse, which the variance term alone allows)."""
    z = z.float()
    n, d = z.shape
    centred = z - z.mean(dim=0)
    cov = centred.T @ centred / (n - 1)
    off_diagonal = cov - torch.diag(torch.diagonal(cov))
    return off_diagonal.pow(2).sum() / d
