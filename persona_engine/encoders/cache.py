"""The feature cache: every text, and every (prompt, response) pair of an encoder that reads the
prompt, is encoded once per encoder, ever, and kept in the store.

Keys are ``(encoder id, prompt hash, response hash)``. An encoder that does not read the prompt
caches a response under ``("", response hash)`` however many prompts it answers; one that reads
the prompt caches each pair under ``(prompt hash, response hash)`` and a prompt alone under
``(prompt hash, "")``. Every path that turns comparisons or candidates into features (training,
onboarding, scoring, ranking, the service, the benchmarks, the generators) goes through
:func:`comparison_arrays` or :func:`candidate_features`.

What is encoded is committed chunk by chunk, so an interrupted run keeps what it finished. What
was read or encoded recently is also kept in memory (:mod:`persona_engine.store.memo`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from ..progress import progress_bar
from ..schemas import content_hash
from ..store import StoreBase
from .base import Encoder

DEFAULT_CHUNK = 256


def _cached(
    store: StoreBase,
    encoder: Encoder,
    keys: Sequence[tuple[str, str]],
    encode: Callable[[Sequence[tuple[str, str]]], np.ndarray],
    *,
    width: int,
    chunk: int,
    unit: str,
    progress: bool,
    group_by_prompt: bool = False,
) -> np.ndarray:
    """Features of ``keys`` in order, (len(keys), width): read from the cache, and the missing
    ones encoded chunk by chunk, each chunk committed before the next (so an interrupted run
    keeps what it finished). With ``group_by_prompt`` the missing keys are encoded in prompt
    order, so an encoder that reuses a prompt's computation sees its candidates together."""
    memo = store.feature_memo
    remembered = memo.stack(encoder.id, width, keys) if keys else None
    if remembered is not None:
        return remembered
    distinct = list(dict.fromkeys(keys))
    cached = memo.get_many(encoder.id, width, distinct)
    if len(cached) < len(distinct):
        found = store.get_pair_features(encoder.id, [k for k in distinct if k not in cached])
        memo.put_many(encoder.id, width, found)
        cached.update(found)
    missing = [k for k in distinct if k not in cached]
    if group_by_prompt:
        missing.sort(key=lambda k: k[0])
    if missing:
        bar = progress_bar(
            total=len(missing),
            desc=f"encoding with {encoder.name}",
            unit=unit,
            disable=not progress,
        )
        for i in range(0, len(missing), chunk):
            part = missing[i : i + chunk]
            vecs = encode(part)
            new = {k: vecs[j] for j, k in enumerate(part)}
            store.put_pair_features(encoder.id, new)
            memo.put_many(encoder.id, width, new)
            cached.update(new)
            bar.update(len(part))
        bar.close()
    if not keys:
        return np.zeros((0, width), dtype=np.float32)
    return np.stack([cached[k] for k in keys]).astype(np.float32, copy=False)


def encode_cached(
    store: StoreBase,
    encoder: Encoder,
    texts: Sequence[str],
    *,
    hashes: Sequence[str] | None = None,
    progress: bool = False,
    chunk: int = DEFAULT_CHUNK,
) -> np.ndarray:
    """Features of ``texts`` on their own (n, encoder.dim), encoding only what is not cached."""
    if hashes is None:
        hashes = [content_hash(t) for t in texts]
    text_of = dict(zip(hashes, texts))
    return _cached(
        store,
        encoder,
        [("", h) for h in hashes],
        lambda part: encoder.encode([text_of[h] for _, h in part]),
        width=encoder.dim,
        chunk=chunk,
        unit="text",
        progress=progress,
    )


def pair_features(
    store: StoreBase,
    encoder: Encoder,
    pairs: Sequence[tuple[str, str]],
    texts: Mapping[str, str],
    *,
    progress: bool = False,
    chunk: int | None = None,
) -> np.ndarray:
    """Features of (prompt hash, response hash) pairs, (n, encoder.dim); ``texts`` maps every hash
    to its text. A prompt-free encoder reads the response alone (one cache row per response)."""
    if not encoder.reads_prompt:
        responses = [r for _, r in pairs]
        return encode_cached(
            store,
            encoder,
            [texts[h] for h in responses],
            hashes=responses,
            progress=progress,
            chunk=chunk or DEFAULT_CHUNK,
        )
    return _cached(
        store,
        encoder,
        pairs,
        lambda part: encoder.encode_pairs([texts[p] for p, _ in part], [texts[r] for _, r in part]),
        width=encoder.dim,
        chunk=chunk or max(1, int(getattr(encoder.config, "cache_chunk", 64))),
        unit="pair",
        progress=progress,
        group_by_prompt=True,
    )


def prompt_features(
    store: StoreBase,
    encoder: Encoder,
    hashes: Sequence[str],
    texts: Mapping[str, str],
    *,
    progress: bool = False,
) -> np.ndarray:
    """Features of prompts on their own, (n, encoder.prompt_dim)."""
    if not encoder.reads_prompt:
        return encode_cached(
            store, encoder, [texts[h] for h in hashes], hashes=list(hashes), progress=progress
        )
    return _cached(
        store,
        encoder,
        [(h, "") for h in hashes],
        lambda part: encoder.encode_prompts([texts[p] for p, _ in part]),
        width=encoder.prompt_dim,
        chunk=DEFAULT_CHUNK,
        unit="prompt",
        progress=progress,
    )


def comparison_arrays(
    store: StoreBase,
    encoder: Encoder,
    prompt_hashes: Sequence[str],
    chosen_hashes: Sequence[str],
    rejected_hashes: Sequence[str],
    texts: Mapping[str, str],
    *,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(prompt, chosen, rejected) feature arrays of comparisons given by content hashes: features
    of each prompt, of (prompt, chosen) and of (prompt, rejected)."""
    n = len(prompt_hashes)
    pairs = list(zip(prompt_hashes, chosen_hashes)) + list(zip(prompt_hashes, rejected_hashes))
    items = pair_features(store, encoder, pairs, texts, progress=progress)
    prompts = prompt_features(store, encoder, list(prompt_hashes), texts)
    return prompts, items[:n], items[n:]


def candidate_features(
    store: StoreBase, encoder: Encoder, prompt: str, candidates: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Features of one prompt (prompt_dim,) and of (prompt, candidate) for each candidate (m, dim):
    what a backend's ``reward`` receives when scoring candidates for a user."""
    ph = content_hash(prompt)
    hashes = [content_hash(c) for c in candidates]
    texts = {ph: prompt, **dict(zip(hashes, candidates))}
    items = pair_features(store, encoder, [(ph, h) for h in hashes], texts)
    return prompt_features(store, encoder, [ph], texts)[0], items
