"""LoRe objectives: the joint population loss (torch) and a new user's onboarding loss (numpy).

Bose et al. 2025, "LoRe: Personalizing LLMs via Low-Rank Reward Modeling", arXiv 2504.14439.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from persona_engine.losses import bradley_terry_loss

if TYPE_CHECKING:
    import torch


def joint_loss(
    logits: torch.Tensor, target: torch.Tensor, row_weight: torch.Tensor
) -> torch.Tensor:
    """Population objective of LoRe, joint in V and every user's theta::

        L(V, theta) = sum_u (1/n_u) sum_{i in u} -log sigma(delta_e_i^T V softmax(theta_u) / tau)

    ``row_weight`` is ``1/n_u`` for each row (users count equally, as in the official ``LoRe``
    class) or 1 (comparisons count equally). Soft targets ``t`` replace the hard label by the
    cross-entropy ``-[t log sigma + (1 - t) log sigma(-.)]`` (a tie is t = 1/2). The official
    alpha-regulariser towards a reference head is 0 in the Reddit and PersonalLLM runs and is left out.
    """
    return bradley_terry_loss(logits, target, row_weight)


def onboarding_objective(
    theta: np.ndarray,
    projected: np.ndarray,
    target: np.ndarray,
    prior_mean: np.ndarray,
    prior_precision: np.ndarray,
) -> tuple[float, np.ndarray, np.ndarray]:
    """A new user's loss, gradient and Hessian in theta, with the basis frozen.

    ``projected[i] = delta_e_i^T V / tau`` (n x B) is fixed, so with ``w = softmax(theta)`` and
    ``s_i = projected_i . w``, and a Gaussian penalty ``N(m, P^-1)`` on theta::

        f(theta) = mean_i [softplus(-s_i) + (1 - t_i) s_i] + 1/2 (theta - m)^T P (theta - m)
        grad     = J g + P (theta - m),          g = projected^T (sigma(s) - t) / n
        Hessian  = J H_w J + D - c w^T - w c^T + P,
                   H_w = projected^T diag(sigma(s)(1 - sigma(s)) / n) projected,
                   J = diag(w) - w w^T (the softmax Jacobian), c = w * (g - w.g), D = diag(c).

    Two penalties are used (``onboarding.py``): the published procedure's L2, ``m = 0`` and
    ``P = l2 I``; and MAP under the population's distribution of user logits
    (``user_prior.LogitPrior``), ``m`` its mean and ``P`` its precision divided by ``n``, so that
    ``n f`` is the negative log posterior ``sum_i nll_i + 1/2 (theta - m)^T S^-1 (theta - m)``
    and the shots outweigh the prior as they grow. The loss is convex in w, so this is a small,
    nearly convex problem: Newton's method reaches the optimum in a few iterations (the official
    code runs 500 Adam steps at lr 0.1 instead).
    """
    z = np.exp(theta - theta.max())
    w = z / z.sum()
    s = projected @ w
    n = max(len(s), 1)
    off = theta - prior_mean
    pull = prior_precision @ off
    value = float(np.logaddexp(0.0, -s).sum() + ((1.0 - target) * s).sum()) / n + 0.5 * float(
        off @ pull
    )
    sig = 0.5 * (1.0 + np.tanh(0.5 * s))
    g = projected.T @ ((sig - target) / n)
    c = w * (g - w @ g)
    grad = c + pull
    jac = np.diag(w) - np.outer(w, w)
    hess_w = (projected * (sig * (1.0 - sig) / n)[:, None]).T @ projected
    hess = jac @ hess_w @ jac + np.diag(c) - np.outer(c, w) - np.outer(w, c) + prior_precision
    return value, grad, hess
