"""The LoRA-adapted backbone and the low-rank reward head trained with it (formula: ``loss.py``).
No I/O and no hard-coded device."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F


class AdaptedReward(nn.Module):
    """``r_u(x, y) = w_u . (V layer_norm(phi(x, y)))`` over a backbone holding LoRA layers.

    ``backbone`` is the Hugging Face model (causal LM or reward model) whose ``base_model``
    computes the hidden states, as the ``hf`` encoder reads them; ``layer`` indexes them.
    """

    def __init__(self, backbone: Any, hidden: int, rank: int, n_users: int, layer: int):
        super().__init__()
        self.backbone = backbone
        self.hidden = hidden
        self.layer = layer
        self.basis = nn.Linear(hidden, rank, bias=False)
        self.user_weights = nn.Embedding(n_users, rank)
        nn.init.normal_(self.basis.weight, std=hidden**-0.5)
        nn.init.normal_(self.user_weights.weight, std=rank**-0.5)

    def head_parameters(self) -> list[nn.Parameter]:
        return [*self.basis.parameters(), *self.user_weights.parameters()]

    def features(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """phi: the hidden state at ``layer`` of each sequence's last real token (right padding),
        float32, (n, hidden): what the ``hf`` encoder's first ``hidden`` features are."""
        out = self.backbone.base_model(
            input_ids=ids,
            attention_mask=mask,
            use_cache=False,
            output_hidden_states=True,
            return_dict=True,
        )
        last = mask.sum(dim=1) - 1
        return out.hidden_states[self.layer][torch.arange(ids.shape[0]), last].float()

    def forward(self, ids: torch.Tensor, mask: torch.Tensor, users: torch.Tensor) -> torch.Tensor:
        phi = F.layer_norm(self.features(ids, mask), (self.hidden,))
        return (self.basis(phi) * self.user_weights(users)).sum(dim=-1)
