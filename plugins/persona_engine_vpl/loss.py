"""VPL's objective: Bradley-Terry likelihood under a sampled latent plus an annealed KL term.

Poddar et al. (NeurIPS 2024), Personalizing RLHF with Variational Preference Learning,
arXiv 2408.10075. The swap term is ours, in the spirit of swap-guided preference learning (SPL,
arXiv 2603.12595).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from persona_engine.losses import bradley_terry_loss

if TYPE_CHECKING:
    import torch


def gaussian_kl(mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """``KL(N(mu, diag sigma^2) || N(0, I)) = 1/2 sum_d (mu_d^2 + sigma_d^2 - 1 - log sigma_d^2)``, per row.

    (The official code omits the 1/2 and sums over the batch; both only rescale beta.)
    """
    return 0.5 * (mean.pow(2) + log_var.exp() - 1.0 - log_var).sum(-1)


def kl_anneal_factor(step: int, period: int, floor: float) -> float:
    """The official cyclical cosine annealing: within each cycle of ``period`` steps the factor
    rises from ``floor`` to 1 as ``floor + (1 - floor) (cos(pi (t / period - 1)) + 1) / 2``."""
    t = step % period
    return floor + (1.0 - floor) * 0.5 * (math.cos(math.pi * (t / period - 1.0)) + 1.0)


def elbo_loss(
    logits: torch.Tensor, target: torch.Tensor, kl: torch.Tensor, beta: float
) -> torch.Tensor:
    """Negative ELBO of VPL, averaged over comparisons::

        L = -E_{z ~ q(z | C_u)} [log sigma(r(x, y_c, z) - r(x, y_r, z))] + beta * KL(q(z | C_u) || p(z))

    with one reparameterised sample of z per comparison (``logits`` are its reward differences;
    soft targets as in :func:`persona_engine.losses.bradley_terry_loss`).
    """
    loss = bradley_terry_loss(logits, target)
    return loss + beta * kl.mean() if beta > 0 else loss


def comparison_nll(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-comparison Bradley-Terry NLL ``-[t log sigma(m) + (1 - t) log sigma(-m)] = softplus(-m) + (1 - t) m``."""
    import torch.nn.functional as F

    return F.softplus(-logits) + (1.0 - target) * logits


def swap_loss(own_nll: torch.Tensor, swapped_nll: torch.Tensor) -> torch.Tensor:
    """The context-swap regulariser against posterior collapse (not in the published objective)::

        L_swap = mean_i softplus(nll_i(z_u) - nll_i(z_v)) = mean_i -log sigma(nll_i(z_v) - nll_i(z_u))

    for comparison ``i`` of user ``u`` decoded under its own latent ``z_u`` and under the latent
    ``z_v`` of another user ``v`` of the batch: the log-odds that the user's own context explains
    their label better than someone else's. A decoder that ignores z pays ``log 2`` on every
    comparison and gets a gradient towards using it. The swap is symmetric (``z_v`` is also
    decoded on ``v``'s rows), so a z that carries no information about the user cannot lower it.
    """
    import torch.nn.functional as F

    return F.softplus(own_nll - swapped_nll).mean()
