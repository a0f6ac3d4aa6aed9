"""PAL objectives: the preference losses, the prototype-diversity term, and the onboarding loss.

Chen et al. (ICLR 2025), PAL: Sample-Efficient Personalized Reward Modeling for Pluralistic
Alignment, arXiv 2406.08469.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from persona_engine.losses import bradley_terry_loss

if TYPE_CHECKING:
    import torch


def preference_loss(
    logits: torch.Tensor, target: torch.Tensor, kind: str, margin: float
) -> torch.Tensor:
    """Loss on ``logits = r_u(y_c) - r_u(y_r)``.

    - ``bt``: PAL-B's 2-way cross-entropy over [r(y_c), r(y_r)], i.e. Bradley-Terry
      ``-[t log sigma(x) + (1 - t) log sigma(-x)]``;
    - ``hinge``: PAL-A's ``max(0, margin - x)`` (official margin 1), weighted by the strength
      ``2t - 1`` of each preference (a tie has weight 0).

    The official code sums these over token positions ("cumulative" weighting); on one frozen
    feature vector per text there is a single position, as in its text-to-image variant.
    """
    if kind == "bt":
        return bradley_terry_loss(logits, target)
    weight = 2.0 * target - 1.0
    return ((margin - logits).clamp_min(0.0) * weight).sum() / weight.sum().clamp_min(1e-8)


def prototype_diversity_penalty(points: torch.Tensor) -> torch.Tensor:
    """Penalty that keeps prototypes apart (our addition; the official code has none).

    For prototypes ``q_1..q_K`` (the last two axes of ``points``, any leading batch axes)::

        D(q) = mean_{k < l} relu(cos(q_k, q_l))^2

    Prototypes may point in opposite directions (two groups that disagree) or be orthogonal at
    no cost; only prototypes that come to point the same way are pushed apart. Without it,
    prototypes that receive the same gradient (every user starts as a near-uniform mixture)
    drift together and the mixture degenerates towards one population model: the "prototype
    collapse" the official code leaves unguarded.
    """
    import torch

    k = points.shape[-2]
    if k < 2:
        return points.new_zeros(())
    unit = torch.nn.functional.normalize(points, dim=-1)
    cos = unit @ unit.transpose(-1, -2)
    iu = torch.triu_indices(k, k, offset=1)
    return cos[..., iu[0], iu[1]].clamp_min(0.0).pow(2).mean()


def onboarding_objective(
    logits: np.ndarray,
    jacobian: np.ndarray,
    theta: np.ndarray,
    target: np.ndarray,
    *,
    kind: str,
    prior_mean: np.ndarray,
    prior_precision: np.ndarray,
    margin: float,
    sharpness: float,
) -> tuple[float, np.ndarray, np.ndarray]:
    """A new user's loss in their mixture logits theta, its gradient and Gauss-Newton Hessian.

    ``logits`` s_i(theta) (n,) and ``jacobian`` ds/dtheta (n, K) come from the frozen networks;
    with a Gaussian penalty ``N(m, P^-1)`` on theta::

        f(theta) = mean_i l(s_i) + 1/2 (theta - m)^T P (theta - m)
        grad     = J^T l'(s) / n + P (theta - m),     G = J^T diag(l''(s) / n) J + P

    with ``l`` the Bradley-Terry loss, or for the hinge its smooth version
    ``(2t - 1) softplus(a (m - s)) / a`` (a = ``sharpness``; the hinge itself has no curvature).
    The published procedure's penalty is a tiny L2 (``m = 0``, ``P = l2 I``); MAP onboarding uses
    the population's Gaussian over user logits (``user_prior.LogitPrior``) with its precision
    divided by ``n``, so ``n f`` is the negative log posterior of the shots.
    """
    n = max(len(logits), 1)
    if kind == "bt":
        sig = 0.5 * (1.0 + np.tanh(0.5 * logits))
        values = np.logaddexp(0.0, -logits) + (1.0 - target) * logits
        d1, d2 = sig - target, sig * (1.0 - sig)
    else:
        weight = 2.0 * target - 1.0
        u = sharpness * (margin - logits)
        sig = 0.5 * (1.0 + np.tanh(0.5 * u))
        values = weight * np.logaddexp(0.0, u) / sharpness
        d1, d2 = -weight * sig, weight * sharpness * sig * (1.0 - sig)
    off = theta - prior_mean
    pull = prior_precision @ off
    value = float(values.sum()) / n + 0.5 * float(off @ pull)
    grad = jacobian.T @ (d1 / n) + pull
    hess = (jacobian * (d2 / n)[:, None]).T @ jacobian + prior_precision
    return value, grad, hess
