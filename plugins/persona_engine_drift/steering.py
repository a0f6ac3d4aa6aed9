"""Drift decoding over the full vocabulary (Kim et al. 2025, arXiv 2502.14289):

    pi~(w | ctx) = softmax( h_LLM(w) + (1/beta) * sum_i p_i * (h_i(w) - h_base(w)) )

``h_i`` are the small LM's next-token log-probabilities under attribute prompt ``s_i`` and
``h_base`` under the neutral prompt: per token, exactly the differential rewards the user's
weights were fitted on. Using log-softmax (not raw logits) makes each difference a log-ratio
whatever offset each row's logits carry.

Two ways to run it:

- **shared** (the small LM *is* the base LM, the default here): the base row under the neutral
  prompt and the ``m`` attribute rows run as one batch of ``1 + m`` rows per step;
  ``h_LLM = h_base`` comes from row 0. :func:`drift_combine` is the ``combine`` of
  :func:`persona_engine.lm.decode_tokens`.
- **separate** small LM (``small_lm=PATH``, Drift's design: a small LM steering a large frozen
  one): :class:`DriftLogitsProcessor`, a transformers ``LogitsProcessor`` with its own batched KV
  cache over the ``1 + m`` small-LM rows on the small LM's own device, added to any base model's
  logits (only the ``(B, V)`` steering term crosses devices). The two LMs must share a tokenizer
  (:func:`check_same_vocabulary`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from transformers import LogitsProcessor

from persona_engine.errors import InvalidInputError


def steering_delta(rows: Any, weights: Any, beta: float) -> Any:
    """``(1/beta) * sum_i p_i (log_softmax(h_i) - log_softmax(h_base))`` for rows ``(B, 1+m, V)``
    (row 0 neutral) and weights ``(B, m)``."""
    import torch

    lsm = torch.log_softmax(rows.float(), dim=-1)
    delta = lsm[:, 1:] - lsm[:, :1]
    return (weights[:, :, None].to(delta.dtype) * delta).sum(1) / beta


def drift_combine(weights: Any, beta: float) -> Callable[[Any], Any]:
    """The shared-model ``combine``: row 0 is both the base LM and the small LM's neutral row."""

    def combine(logits: Any) -> Any:
        return logits[:, 0] + steering_delta(logits, weights, beta)

    return combine


def check_same_vocabulary(lm: Any, slm: Any) -> None:
    """Drift adds logits token by token: the two tokenizers must map the same strings to the same
    ids (a padded embedding matrix beyond the tokenizer is fine)."""
    if lm is slm:
        return
    a, b = lm.tokenizer.get_vocab(), slm.tokenizer.get_vocab()
    if a != b:
        differ = sorted({t for t in a.keys() | b.keys() if a.get(t) != b.get(t)})
        raise InvalidInputError(
            f"Drift needs the base LM ({lm.name}, {len(a)} tokens) and the small LM "
            f"({slm.name}, {len(b)} tokens) to share one tokenizer: {len(differ)} tokens are "
            f"missing from one or have other ids (e.g. {differ[:3]}); pick a small LM of the "
            "same family"
        )


def extend_mask(mask: Any) -> Any:
    """``mask`` with one more column of ones (on its own device)."""
    import torch

    return torch.cat([mask, mask.new_ones((len(mask), 1))], dim=1)


class DriftLogitsProcessor(LogitsProcessor):
    """Adds Drift's steering term from a separate small LM to the base model's scores.

    Import this module lazily (it imports transformers). ``contexts[b]`` holds prompt ``b``'s ``1 + m`` small-LM rows (neutral first); the processor
    prefills them on its first call and then feeds each newly chosen token to all of them, so the
    small LM runs once per step as one batch with a KV cache. Works inside
    :func:`persona_engine.lm.decode_tokens` and ``model.generate(logits_processor=[...])``.
    """

    def __init__(
        self, slm: Any, contexts: Sequence[Sequence[Sequence[int]]], weights: Any, beta: float
    ):
        import torch

        self.slm, self.beta = slm, float(beta)
        self.weights = torch.as_tensor(weights, dtype=torch.float32)
        self._weights = self.weights  # a copy on the small LM's device once it is known
        self.contexts = [[list(r) for r in group] for group in contexts]
        self.rows = len(self.contexts[0])
        self._cache: Any = None
        self._mask: Any = None
        self._positions: Any = None
        self._seen = 0
        self._extra = 0

    @property
    def device(self) -> Any:
        """The small LM's device: its inputs are moved there, whatever device the base LM is on."""
        return next(self.slm.model.parameters()).device

    def _prefill(self) -> Any:
        from persona_engine.lm import cache_of, padded_batch

        rows = [r for g in self.contexts for r in g]
        device = self.device
        ids, mask, self._extra = padded_batch(rows, self.slm.pad_id, device)
        self._mask = mask.to(device)
        self._positions = (self._mask.cumsum(-1) - 1).clamp(min=0)
        out = self.slm.model(
            input_ids=ids.to(device),
            attention_mask=self._mask,
            position_ids=self._positions,
            use_cache=True,
            logits_to_keep=1,
        )
        self._cache = cache_of(out)
        return out.logits[: len(rows), -1]

    def _advance(self, tokens: Any) -> Any:
        from persona_engine.lm import cache_kwargs, cache_of, step_inputs

        self._mask = extend_mask(self._mask)
        self._positions = self._positions[:, -1:] + 1
        out = self.slm.model(
            input_ids=step_inputs(tokens.to(self.device), self.rows, self._extra),
            attention_mask=self._mask,
            position_ids=self._positions,
            **cache_kwargs(self.slm.model, self._cache),
            use_cache=True,
        )
        self._cache = cache_of(out)
        return out.logits[: len(self.contexts) * self.rows, -1]

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        with torch.inference_mode():
            if self._cache is None:
                logits = self._prefill()
            else:
                if input_ids.shape[1] != self._seen + 1:
                    raise RuntimeError(
                        "DriftLogitsProcessor must see every generated token, one step at a time"
                    )
                logits = self._advance(input_ids[:, -1])
            self._seen = input_ids.shape[1]
            if self._weights.device != logits.device:
                self._weights = self.weights.to(logits.device)
            # on the small LM's device; only the (B, V) steering term moves to the base LM's
            delta = steering_delta(
                logits.view(len(self.contexts), self.rows, -1), self._weights, self.beta
            )
        vocab = min(scores.shape[-1], delta.shape[-1])
        out = scores.clone()
        out[:, :vocab] += delta[:, :vocab].to(out.device, out.dtype)
        return out
