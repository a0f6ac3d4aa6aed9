"""PAD decoding as a transformers ``LogitsProcessor`` (Chen et al., ICLR 2025, arXiv 2410.04070).

Per step, over the base model's top-k tokens ``c`` (official code: k = 10)::

    score(c) = z_base(c) + w * R(p, s, c),    R(p, s, c) = sum_j p_j phi_j(s, c)

and every other token gets ``-inf`` (PAD only re-ranks what the base model proposes). ``w`` is
the reward weight (``rm_weight`` in the official configs, 0.5-1.5; fluency fell apart at w = 2 in
small trials, so values above 1 draw a warning).

The reward model shares the frozen backbone with the base model, so the final hidden state it
needs is captured from the base model's own forward pass (a forward pre-hook on the output
embedding): PAD costs a few small matrix products per token, not a second LM pass. Use the
processor as a context manager (the hook is removed on exit); it works with
:func:`persona_engine.lm.decode_tokens` and with ``model.generate(logits_processor=[...])``.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import LogitsProcessor


class PADLogitsProcessor(LogitsProcessor):
    """Reward-guided top-k re-ranking with per-prompt preference weights ``(B, K)``."""

    def __init__(self, lm: Any, head: Any, weights: Any, *, rm_weight: float, top_k: int = 10):
        self.lm, self.head = lm, head
        self.weights = torch.as_tensor(weights, dtype=torch.float32)
        if self.weights.ndim != 2 or self.weights.shape[1] != len(head.attributes):
            raise ValueError("weights must be (batch, number of head attributes)")
        self.channels = [
            j for j in range(self.weights.shape[1]) if bool((self.weights[:, j] != 0).any())
        ]
        self.rm_weight, self.top_k = float(rm_weight), int(top_k)
        self._hidden: Any = None
        self._hook: Any = None

    def __enter__(self) -> PADLogitsProcessor:
        out = self.lm.model.get_output_embeddings()
        self._hook = out.register_forward_pre_hook(self._capture)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def _capture(self, _module: Any, args: Any) -> None:
        self._hidden = args[0][:, -1].detach()

    def rewards(self, hidden: Any, candidates: Any, base: Any) -> Any:
        """``R(p, s, c)`` for candidates ``(B, k)`` with base logits ``base (B, k)``."""
        if not self.channels:
            return torch.zeros_like(base)
        rows = self.lm.model.get_output_embeddings().weight[candidates].float()  # (B, k, H)
        phi = self.head.token_rewards(
            hidden.float(), rows, base.float(), self.channels
        )  # (B, K', k)
        w = self.weights[:, self.channels].to(phi.device)
        return (w[:, :, None] * phi).sum(1)

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        if self._hidden is None:
            raise RuntimeError(
                "PADLogitsProcessor is not attached: use it as `with processor:` around decoding"
            )
        from persona_engine.lm import batch_padding

        hidden, n = self._hidden, scores.shape[0]
        if hidden.shape[0] not in (n, n + batch_padding(n, hidden.device)):
            raise RuntimeError("PADLogitsProcessor: one context row per prompt expected")
        hidden = hidden[:n]  # decode_tokens' dummy padding rows come last
        with torch.inference_mode():
            base, candidates = scores.float().topk(self.top_k, dim=-1)
            dev = hidden.device
            reward = self.rewards(hidden, candidates.to(dev), base.to(dev)).to(base.device)
            guided = base + self.rm_weight * reward
            out = torch.full_like(scores, float("-inf"))
            out.scatter_(-1, candidates, guided.to(scores.dtype))
        return out
