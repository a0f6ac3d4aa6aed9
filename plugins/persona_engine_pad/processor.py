"""PAD decoding as a transformers ``LogitsProcessor`` (Chen et al., ICLR 2025, arXiv 2410.04070).

Per step, over the base model's top-k tokens ``c`` (official code: k = 10)::

    score(c) = z_base(c) + w * R(p, s, c),    R(p, s, c) = sum_j p_j phi_j(s, c)

and every other token gets ``-inf`` (PAD only re-ranks what the base model proposes). ``w`` is
the reward weight (``rm_weight`` in the official configs, 0.5-1.5; fluency fell apart at w = 2 in
small trials, so values above 1 draw a warning).

The reward model shares the frozen backbone with the base model, so the final hidden state it
needs comes from the base model's own forward pass: PAD costs a few small matrix products per
token, not a second LM pass. Inside :func:`persona_engine.lm.decode_tokens` the loop hands each
step's hidden states to :meth:`PADLogitsProcessor.observe_hidden` (from that call's own
``output_hidden_states``): no state on the model, so any number of requests can decode on one
shared model at once. With ``model.generate(logits_processor=[...])``, use the processor as a
context manager: it then reads the hidden state through a forward pre-hook on the output
embedding, holding the model's own lock (one per model) until exit, so two hooked decodes never
see each other's states.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

import torch
from transformers import LogitsProcessor

#: one lock per model object, held while a hook of a PAD processor sits on it
_HOOK_LOCKS: weakref.WeakKeyDictionary[Any, threading.Lock] = weakref.WeakKeyDictionary()
_HOOK_LOCKS_GUARD = threading.Lock()


def hook_lock(model: Any) -> threading.Lock:
    """The lock of ``model`` that hooked PAD decodes hold (created on first use)."""
    with _HOOK_LOCKS_GUARD:
        lock = _HOOK_LOCKS.get(model)
        if lock is None:
            lock = _HOOK_LOCKS[model] = threading.Lock()
        return lock


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
        self._lock: threading.Lock | None = None

    def observe_hidden(self, hidden: Any) -> None:
        """This step's final hidden states ``(B, H)``, given by :func:`persona_engine.lm.decode_tokens`."""
        self._hidden = hidden

    def __enter__(self) -> PADLogitsProcessor:
        self._lock = hook_lock(self.lm.model)
        self._lock.acquire()
        out = self.lm.model.get_output_embeddings()
        self._hook = out.register_forward_pre_hook(self._capture)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None

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
                "PADLogitsProcessor saw no hidden state: run it in decode_tokens, or as "
                "`with processor:` around model.generate"
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
