"""The feature cache: every text, and every (prompt, response) pair of an encoder that reads the
prompt, is encoded once per encoder, ever, and kept in the store.

Keys are ``(encoder id, prompt hash, response hash)``. An encoder that does not read the prompt
caches a response under ``("", response hash)`` however many prompts it answers; one that reads
the prompt caches each pair under ``(prompt hash, response hash)`` and a prompt alone under
``(prompt hash, "")``. Every path that turns comparisons or candidates into features (training,
onboarding, scoring, ranking, the service, the benchmarks, the generators) goes through
:func:`comparison_arrays` or :func:`candidate_features`.

What is encoded is committed chunk by chunk, so an interrupted run keeps what it finished.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from ..progress import progress_bar
from ..schemas import content_hash
from ..store import Store
from .base import Encoder

DEFAULT_CHUNK = 256


def _fill(
    store: Store,
    encoder: Encoder,
    cached: dict[tuple[str, str], np.ndarray],
    missing: Sequence[tuple[str, str]],
    encode: Callable[[Sequence[tuple[str, str]]], np.ndarray],
    *,
    chunk: int,
    unit: str,
    progress: bool,
) -> None:
    """Encode the ``missing`` keys chunk by chunk, committing each chunk to the cache (so an
    interrupted run keeps what it finished) and adding it to ``cached``."""
    if not missing:
        return
    bar = progress_bar(
        total=len(missing), desc=f"encoding with {encoder.name}", unit=unit, disable=not progress
    )
    for i in range(0, len(missing), chunk):
        part = missing[i : i + chunk]
        vecs = encode(part)
        new = {k: vecs[j] for j, k in enumerate(part)}
        store.put_pair_features(encoder.id, new)
        cached.update(new)
        bar.update(len(part))
    bar.close()


def encode_cached(
    store: Store,
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
    unique: dict[str, str] = {}
    for h, t in zip(hashes, texts):
        unique.setdefault(h, t)
    keys = [("", h) for h in unique]
    cached = store.get_pair_features(encoder.id, keys)
    _fill(
        store,
        encoder,
        cached,
        [k for k in keys if k not in cached],
        lambda part: encoder.encode([unique[h] for _, h in part]),
        chunk=chunk,
        unit="text",
        progress=progress,
    )
    if not hashes:
        return np.zeros((0, encoder.dim), dtype=np.float32)
    return np.stack([cached[("", h)] for h in hashes]).astype(np.float32, copy=False)


def pair_features(
    store: Store,
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
    keys = list(dict.fromkeys(pairs))
    cached = store.get_pair_features(encoder.id, keys)
    # grouped by prompt, so an encoder that reuses a prompt's computation sees its candidates together
    missing = sorted((k for k in keys if k not in cached), key=lambda k: k[0])
    _fill(
        store,
        encoder,
        cached,
        missing,
        lambda part: encoder.encode_pairs([texts[p] for p, _ in part], [texts[r] for _, r in part]),
        chunk=chunk or max(1, int(getattr(encoder.config, "cache_chunk", 64))),
        unit="pair",
        progress=progress,
    )
    if not pairs:
        return np.zeros((0, encoder.dim), dtype=np.float32)
    return np.stack([cached[k] for k in pairs]).astype(np.float32, copy=False)


def prompt_features(
    store: Store,
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
    keys = [(h, "") for h in dict.fromkeys(hashes)]
    cached = store.get_pair_features(encoder.id, keys)
    _fill(
        store,
        encoder,
        cached,
        [k for k in keys if k not in cached],
        lambda part: encoder.encode_prompts([texts[p] for p, _ in part]),
        chunk=DEFAULT_CHUNK,
        unit="prompt",
        progress=progress,
    )
    if not hashes:
        return np.zeros((0, encoder.prompt_dim), dtype=np.float32)
    return np.stack([cached[(h, "")] for h in hashes]).astype(np.float32, copy=False)


def comparison_arrays(
    store: Store,
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
    store: Store, encoder: Encoder, prompt: str, candidates: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Features of one prompt (prompt_dim,) and of (prompt, candidate) for each candidate (m, dim):
    what a backend's ``reward`` receives when scoring candidates for a user."""
    ph = content_hash(prompt)
    hashes = [content_hash(c) for c in candidates]
    texts = {ph: prompt, **dict(zip(hashes, candidates))}
    items = pair_features(store, encoder, [(ph, h) for h in hashes], texts)
    return prompt_features(store, encoder, [ph], texts)[0], items
