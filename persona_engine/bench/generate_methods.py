"""The methods of ``persona bench generate``, decoded on batches of (user, prompt) rows with the
same decoding settings (greedy, one repetition penalty), and their per-token latency.

- ``plain``: the base LM under the neutral system prompt.
- ``prompt``: prompt-only, the user's preference written into the system prompt.
- ``guidance@g``: classifier-free guidance on that system prompt against the neutral one
  (Sanchez et al. 2023, "Stay on topic with Classifier-Free Guidance", arXiv 2306.17806), the
  baseline PAD and Drift must beat: with both prompts' next-token log-probabilities ``l_p`` and
  ``l_0`` it decodes ``softmax(l_0 + g (l_p - l_0))``; ``g = 1`` is prompt-only.
- ``pad@w``: PAD with reward weight ``w`` (its head trained by DPO on the users' pairs).
- ``drift@beta``: Drift with the user's fitted weights and strength ``1/beta``.
- ``bestofn``: ``N`` answers sampled from the base LM under the neutral prompt, the one the user's
  reward model scores highest kept. The reward model is the one fitted on the user's own
  comparisons, Drift's closed form: ``r_u(x, y) = sum_i p_i (log p(y | s_i, x) - log p(y | s_0, x))``
  over the user's active attributes (mean per-token log-probabilities of the first
  ``max_tokens`` tokens, as the weights were fitted).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np


def method_key(family: str, strength: float | None = None) -> str:
    """``pad@1``, ``guidance@2.5``, ``plain``: the name of a method at a strength."""
    return family if strength is None else f"{family}@{strength:g}"


def split_key(key: str) -> tuple[str, float | None]:
    family, _, strength = key.partition("@")
    return family, float(strength) if strength else None


def guidance_combine(scale: float) -> Callable[[Any], Any]:
    """The ``combine`` of :func:`persona_engine.lm.decode_tokens` for guidance on rows ``(B, 2, V)``
    (row 0 under the preference prompt, row 1 under the neutral one): the preference row's logits
    plus ``(g - 1)`` times the two rows' log-ratio, whose softmax is ``softmax(l_0 + g (l_p - l_0))``
    and which is exactly prompt-only decoding at ``g = 1``."""

    def combine(logits: Any) -> Any:
        import torch

        lsm = torch.log_softmax(logits.float(), dim=-1)
        return logits[:, 0] + (scale - 1.0) * (lsm[:, 0] - lsm[:, 1])

    return combine


class MethodDecoders:
    """Every method's texts for rows ``(prompt, profile, drift weights)``."""

    def __init__(self, lm: Any, vocab: Any, dec: Any, drift: Any, pad: Any) -> None:
        self.lm, self.vocab, self.dec, self.drift, self.pad = lm, vocab, dec, drift, pad

    def _texts(self, steps: Iterator[list[int]]) -> list[str]:
        from persona_engine.lm import collect_texts

        return collect_texts(self.lm, steps)

    def plain_steps(self, prompts: Sequence[str], dec: Any = None) -> Iterator[list[int]]:
        from persona_engine.lm import decode_tokens

        neutral = self.vocab.neutral_prompt
        return decode_tokens(
            self.lm, [[self.lm.chat_ids(p, neutral)] for p in prompts], dec or self.dec
        )

    def guidance_steps(
        self,
        prompts: Sequence[str],
        profiles: Sequence[Mapping[str, float]],
        scale: float,
        dec: Any = None,
    ) -> Iterator[list[int]]:
        from persona_engine.lm import decode_tokens

        neutral = self.vocab.neutral_prompt
        if scale == 1.0:  # prompt-only: one row per prompt
            contexts = [
                [self.lm.chat_ids(p, self.vocab.preference_prompt(u))]
                for p, u in zip(prompts, profiles)
            ]
            return decode_tokens(self.lm, contexts, dec or self.dec)
        contexts = [
            [self.lm.chat_ids(p, self.vocab.preference_prompt(u)), self.lm.chat_ids(p, neutral)]
            for p, u in zip(prompts, profiles)
        ]
        return decode_tokens(self.lm, contexts, dec or self.dec, combine=guidance_combine(scale))

    def drift_steps(
        self,
        prompts: Sequence[str],
        weights: Sequence[Mapping[str, float]],
        beta: float,
        dec: Any = None,
    ) -> Iterator[list[int]]:
        update = {"beta": beta, **(dec.model_dump() if dec is not None else {})}
        return self.drift.token_steps(prompts, weights, self.drift.config.model_copy(update=update))

    def pad_steps(
        self,
        prompts: Sequence[str],
        profiles: Sequence[Mapping[str, float]],
        rm_weight: float,
        dec: Any = None,
    ) -> Iterator[list[int]]:
        update = {"rm_weight": rm_weight, **(dec.model_dump() if dec is not None else {})}
        return self.pad.token_steps(prompts, profiles, self.pad.config.model_copy(update=update))

    def plain(self, prompts: Sequence[str]) -> list[str]:
        return self._texts(self.plain_steps(prompts))

    def guidance(
        self, prompts: Sequence[str], profiles: Sequence[Mapping[str, float]], scale: float
    ) -> list[str]:
        return self._texts(self.guidance_steps(prompts, profiles, scale))

    def drift_texts(
        self, prompts: Sequence[str], weights: Sequence[Mapping[str, float]], beta: float
    ) -> list[str]:
        return self._texts(self.drift_steps(prompts, weights, beta))

    def pad_texts(
        self, prompts: Sequence[str], profiles: Sequence[Mapping[str, float]], rm_weight: float
    ) -> list[str]:
        with warnings.catch_warnings():  # the sweep may pass w > 1 on purpose
            warnings.filterwarnings("ignore", message="PAD rm_weight")
            return self._texts(self.pad_steps(prompts, profiles, rm_weight))


def bestofn_candidates(
    lm_spec: str,
    neutral_prompt: str,
    prompts: Sequence[str],
    dec: Any,
    *,
    n: int,
    seed: int,
    on: dict[str, str] | None = None,
) -> list[list[str]]:
    """``n`` sampled answers per prompt from the ``bestofn`` generator (distinct, non-empty);
    ``on``: its ``device`` and ``dtype``."""
    from persona_engine_bestofn.generator import BestOfNGenerator

    gen = BestOfNGenerator(
        {
            "lm": lm_spec,
            "n": n,
            "max_new_tokens": dec.max_new_tokens,
            "repetition_penalty": dec.repetition_penalty,
            "system_prompt": neutral_prompt,
            **(on or {}),
        }
    )
    return [
        gen.candidates(p, gen.config.model_copy(update={"seed": seed * 1000 + i}))
        for i, p in enumerate(prompts)
    ]


def bestofn_pick(
    lm: Any,
    vocab: Any,
    prompts: Sequence[str],
    candidates: Sequence[Sequence[str]],
    user_weights: Mapping[str, Mapping[str, float]],
    *,
    max_tokens: int,
) -> dict[str, list[str]]:
    """Per user, the candidate their reward ``sum_i p_i r_i`` scores highest for each prompt; the
    candidates are scored once under the neutral prompt and every attribute some user weights."""
    from persona_engine_drift.rewards import score_answers

    attrs = sorted({a for w in user_weights.values() for a, x in w.items() if x != 0})
    systems = [vocab.neutral_prompt, *(vocab.get(a).system_prompt for a in attrs)]
    flat_p = [p for p, cands in zip(prompts, candidates) for _ in cands]
    flat_a = [a for cands in candidates for a in cands]
    if flat_a:
        lp, _, _ = score_answers(lm, systems, flat_p, flat_a, max_tokens=max_tokens)
        rewards = lp[1:] - lp[:1]  # (attributes, answers)
    else:
        rewards = np.zeros((len(attrs), 0))
    out: dict[str, list[str]] = {}
    for user, weights in user_weights.items():
        w = np.array([weights.get(a, 0.0) for a in attrs], dtype=np.float64)
        score = w @ rewards if len(attrs) else np.zeros(rewards.shape[1])
        picked, start = [], 0
        for cands in candidates:
            part = score[start : start + len(cands)]
            picked.append(cands[int(np.argmax(part))] if len(cands) else "")
            start += len(cands)
        out[user] = picked
    return out


def _timed_steps(steps: Iterator[list[int]]) -> tuple[list[float], int]:
    times, last, n = [], time.perf_counter(), 0
    for _ in steps:
        now = time.perf_counter()
        times.append(now - last)
        last, n = now, n + 1
    return times, n


def latency(
    decoders: MethodDecoders,
    prompt: str,
    profile: Mapping[str, float],
    weights: Mapping[str, float],
    *,
    tokens: int,
    reps: int,
    beta: float,
    rm_weight: float,
    scale: float,
) -> dict[str, Any]:
    """Per-token latency at batch 1 of each method through the same decoding loop, ``reps`` runs
    interleaved across methods; the figure is the median of the runs (the fastest beside it)."""
    dec = decoders.dec.model_copy(update={"max_new_tokens": tokens})
    runs: dict[str, Callable[[], Iterator[list[int]]]] = {
        "plain": lambda: decoders.plain_steps([prompt], dec),
        "guidance": lambda: decoders.guidance_steps([prompt], [profile], scale, dec),
        "drift": lambda: decoders.drift_steps([prompt], [weights], beta, dec),
        "pad": lambda: decoders.pad_steps([prompt], [profile], rm_weight, dec),
    }
    per: dict[str, list[tuple[float, float, int]]] = {m: [] for m in runs}
    for _ in range(reps):
        for name, make in runs.items():
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="PAD rm_weight")
                times, n = _timed_steps(make())
            per[name].append(
                (
                    sum(times) / n * 1000,
                    float(np.mean(times[1:])) * 1000 if n > 1 else float("nan"),
                    n,
                )
            )
    out: dict[str, Any] = {}
    for name, rows in per.items():
        out[name] = {
            "decode_ms_per_token": round(float(np.median([r[1] for r in rows])), 2),
            "decode_ms_per_token_best": round(float(min(r[1] for r in rows)), 2),
            "ms_per_token": round(float(np.median([r[0] for r in rows])), 2),
            "runs_decode_ms_per_token": [round(r[1], 2) for r in rows],
            "tokens": rows[0][2],
        }
    for name in ("guidance", "drift", "pad"):
        out[name]["overhead_vs_plain"] = round(
            out[name]["decode_ms_per_token"] / out["plain"]["decode_ms_per_token"], 2
        )
    out["drift"]["rows_per_step"] = 1 + len(decoders.drift.active(weights, decoders.drift.config))
    out["settings"] = {"beta": beta, "rm_weight": rm_weight, "guidance": scale, "reps": reps}
    return out
