"""The personalized reward head of PAD's token-level reward model.

PAD (Chen et al., ICLR 2025, "PAD: Personalized Alignment of LLMs at Decoding-Time",
arXiv 2410.04070) writes the personalized reward of next token ``a`` in state ``s`` for preference
``p`` as ``R(p, s, a) = w_p^T phi(s, a)`` and reads it as a DPO implicit reward
``log pi_PRM(a | s) - log pi_ref(a | s)``. The official reward model is the frozen base backbone with
an identity-initialised ``H x H`` head before the LM head; one head shared by all preferences
learned the union of the training preferences in small trials (preference leakage).

Here ``phi`` has one channel per attribute of the vocabulary. Channel ``j`` is a low-rank residual
``h -> h + B_j A_j h`` on the frozen backbone's final hidden state ``h`` (``B_j`` starts at zero,
so an untrained channel is the base model and its reward is exactly 0), followed by the frozen
LM head. Over the base model's top-k candidates ``c``::

    phi_j(s, c) = log_softmax_k(W_c (h + B_j A_j h)) - log_softmax_k(W_c h)
    R(p, s, c)  = sum_j p_j phi_j(s, c)

Because the output head is linear, ``W_c (h + B_j A_j h) = z_base(c) + W_c B_j A_j h``: the reward
needs no second backbone pass, only ``k`` rows of the output matrix.

Training (:mod:`.dpo`) reads the same channels over the full vocabulary, as the DPO implicit
reward of the taken token ``a`` (:meth:`PersonalizedRewardHead.vocab_rewards`)::

    phi_j(s, a) = log_softmax_V(W (h + B_j A_j h))_a - log_softmax_V(W h)_a

A pair labelled with ``p`` moves only the channels ``p`` weights, so a user's reward moves only
the attributes their profile weights.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class PersonalizedRewardHead(nn.Module):
    """``K`` low-rank residual channels (rank ``r``) on hidden states of size ``H``."""

    def __init__(self, hidden_size: int, attributes: list[str], rank: int = 8, seed: int = 0):
        super().__init__()
        # the same head for the same seed, whatever ran before
        gen = torch.Generator().manual_seed(seed)
        self.attributes = list(attributes)
        self.hidden_size, self.rank = int(hidden_size), int(rank)
        # one parameter pair per channel, so a channel can be trained (and decayed) on its own
        self.down = nn.ParameterList(
            nn.Parameter(torch.randn(rank, hidden_size, generator=gen) / hidden_size**0.5)
            for _ in self.attributes
        )
        self.up = nn.ParameterList(
            nn.Parameter(torch.zeros(hidden_size, rank)) for _ in self.attributes
        )  # B_j = 0

    def channel_index(self, names: list[str]) -> list[int]:
        missing = [n for n in names if n not in self.attributes]
        if missing:
            raise KeyError(missing)
        return [self.attributes.index(n) for n in names]

    def shift(self, hidden: torch.Tensor, channels: list[int] | None = None) -> torch.Tensor:
        """``B_j A_j h`` for each channel: ``(N, H) -> (N, K', H)``."""
        idx = range(len(self.attributes)) if channels is None else channels
        down = torch.stack([self.down[j] for j in idx])
        up = torch.stack([self.up[j] for j in idx])
        return torch.einsum("khr,krd,nd->nkh", up, down, hidden)

    def token_rewards(
        self,
        hidden: torch.Tensor,
        candidate_rows: torch.Tensor,
        base_logits: torch.Tensor,
        channels: list[int] | None = None,
    ) -> torch.Tensor:
        """``phi (N, K', k)`` over ``k`` candidates, from hidden ``(N, H)``, the output-matrix rows of
        the candidates ``(N, k, H)`` and the base logits of the candidates ``(N, k)``."""
        shift = self.shift(hidden, channels)  # (N, K', H)
        prm_logits = base_logits[:, None, :] + torch.einsum("nkh,nch->nkc", shift, candidate_rows)
        return (
            torch.log_softmax(prm_logits, dim=-1)
            - torch.log_softmax(base_logits, dim=-1)[:, None, :]
        )

    def vocab_rewards(
        self,
        hidden: torch.Tensor,
        out_weight: torch.Tensor,
        tokens: torch.Tensor,
        channels: list[int],
    ) -> torch.Tensor:
        """``phi (N, K')`` of the taken tokens over the full vocabulary: hidden states ``(N, H)``
        before the output matrix ``out_weight (V, H)``, and the token each state chose ``(N,)``."""
        base = hidden @ out_weight.T  # (N, V)
        taken = tokens[:, None]
        base_lp = base.gather(-1, taken) - torch.logsumexp(base, -1, keepdim=True)  # (N, 1)
        shift = self.shift(hidden, channels)  # (N, K', H)
        prm = base[:, None, :] + shift @ out_weight.T  # (N, K', V)
        idx = taken[:, None, :].expand(-1, len(channels), 1)
        prm_lp = prm.gather(-1, idx).squeeze(-1) - torch.logsumexp(prm, -1)  # (N, K')
        return prm_lp - base_lp

    def config_dict(self) -> dict[str, Any]:
        return {"hidden_size": self.hidden_size, "attributes": self.attributes, "rank": self.rank}
