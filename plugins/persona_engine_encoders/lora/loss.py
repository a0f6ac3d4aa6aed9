"""The fine-tuning objective: Bradley-Terry on the adapted backbone's reward.

With ``phi(x, y)`` the last-token hidden state of the LoRA-adapted backbone over the rendered
pair (at the encoder's layer), layer-normalised without affine parameters, the reward of user u is

    r_u(x, y) = w_u . (V phi(x, y))

with a shared basis ``V`` (B x H) and per-user weights ``w_u`` (B), the low-rank form of LoRe
(Bose et al. 2025); the population form (``bt``) has one shared ``w`` and B = 1, i.e. a single
linear head. The loss is the Bradley-Terry negative log-likelihood (Bradley & Terry 1952)

    L = -mean_i [ t_i log sigma(d_i) + (1 - t_i) log sigma(-d_i) ],
    d_i = r_{u_i}(x_i, y_i^chosen) - r_{u_i}(x_i, y_i^rejected),

with target ``t_i = 0.5 + strength_i / 2`` (0.5 for a tie), minimised jointly over the LoRA
weights (Hu et al. 2022), V and every w_u.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from persona_engine.losses import bradley_terry_loss

if TYPE_CHECKING:
    import torch


def finetune_loss(
    reward_chosen: torch.Tensor, reward_rejected: torch.Tensor, target: torch.Tensor
) -> torch.Tensor:
    """Bradley-Terry loss of rewards ``r_u(x, y_c)`` and ``r_u(x, y_r)`` (shape (n,))."""
    return bradley_terry_loss(reward_chosen - reward_rejected, target)
