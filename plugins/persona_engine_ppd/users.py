"""User embeddings: a user's few (prompt, preferred image, rejected image) pairs, pooled.

PPD (Dang et al., CVPR 2025) embeds N = 4 preference examples of a user with a frozen
vision-language model. Here the images are embedded by an image encoder plugin and pooled as

    u = normalize( sum_i s_i (phi(x_i^w) - phi(x_i^l)) / sum_i s_i )

(``s_i``: the comparison's strength; ties are left out): under Bradley-Terry with a reward linear in
``phi``, the mean feature difference of a user's pairs points along their reward direction. A model
with ``user_space="population"`` projects that mean onto the subspace its training users span
before normalising (:mod:`.user_space`): ``u = normalize(B^T B m)``. The
vector is stored as the user's :class:`~persona_engine.schemas.UserProfile` under the PPD model,
through the same store as every other profile (so the profile index and similar-user search see
it too).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from persona_engine.encoders.base import Encoder
from persona_engine.encoders.cache import encode_cached
from persona_engine.errors import InvalidInputError
from persona_engine.schemas import (
    Comparison,
    UserProfile,
    comparison_from_record,
    content_hash,
    utcnow,
)

from .user_space import UserSpace


def pool_pairs(
    chosen: np.ndarray,
    rejected: np.ndarray,
    strength: np.ndarray | None = None,
    *,
    normalize: bool = True,
    space: UserSpace | None = None,
) -> np.ndarray:
    """The pooled user embedding of k pairs of embeddings (k, D) each (see the module docstring);
    with ``space``, projected onto it before normalising.

    Batched form: (B, k, D) inputs give (B, D).
    """
    chosen = np.asarray(chosen, dtype=np.float32)
    rejected = np.asarray(rejected, dtype=np.float32)
    if chosen.shape != rejected.shape or chosen.ndim not in (2, 3):
        raise InvalidInputError(
            f"chosen and rejected embeddings must share a (k, D) shape, got {chosen.shape} and {rejected.shape}"
        )
    if chosen.shape[-2] == 0:
        raise InvalidInputError(
            "a user embedding needs at least one (preferred, rejected) image pair"
        )
    s = (
        np.ones(chosen.shape[:-1], dtype=np.float32)
        if strength is None
        else np.broadcast_to(np.asarray(strength, dtype=np.float32), chosen.shape[:-1])
    )
    if (s.sum(axis=-1) <= 0).any():
        raise InvalidInputError(
            "every pair is a tie (strength 0); a user embedding needs at least one real preference"
        )
    u = ((chosen - rejected) * s[..., None]).sum(axis=-2) / s.sum(axis=-1)[..., None]
    if space is not None:
        u = space.project(u)
    if normalize:
        u = u / np.maximum(np.linalg.norm(u, axis=-1, keepdims=True), 1e-8)
    return u.astype(np.float32)


def image_file_hash(path: str) -> str:
    """Feature-cache key of an image file: its bytes, so an overwritten file is encoded anew."""
    p = Path(path)
    if not p.is_file():
        raise InvalidInputError(f"no such image file: {path}")
    return content_hash(b"image-bytes:" + p.read_bytes())


def image_comparisons(
    user_id: str, comparisons: Iterable[Comparison | dict[str, Any]]
) -> list[Comparison]:
    """Validate a user's image comparisons (kind 'image', existing files, this user)."""
    out = []
    for c in comparisons:
        if isinstance(c, dict):
            c = comparison_from_record({"kind": "image", **c, "user_id": c.get("user_id", user_id)})
        if c.user_id != user_id:
            raise InvalidInputError(f"a comparison for {user_id!r} names user {c.user_id!r}")
        if c.kind != "image":
            raise InvalidInputError(
                "PPD onboarding takes image comparisons (kind='image', chosen/rejected are image paths)"
            )
        for p in (c.chosen, c.rejected):
            if not Path(p).is_file():
                raise InvalidInputError(f"no such image file: {p}")
        out.append(c)
    return out


def embed_user_pairs(
    store: Any,
    encoder: Encoder,
    chosen: Sequence[str],
    rejected: Sequence[str],
    strength: Sequence[float],
    *,
    normalize: bool,
    space: UserSpace | None = None,
) -> np.ndarray:
    """Pool image pairs given as file paths, through the store's feature cache (projected onto
    ``space`` when given)."""
    if not chosen:
        raise InvalidInputError(
            "a user embedding needs at least one (preferred, rejected) image pair"
        )
    paths = [*chosen, *rejected]
    hashes = [image_file_hash(p) for p in paths]
    feats = (
        encode_cached(store, encoder, paths, hashes=hashes)
        if store is not None
        else encoder.encode(paths)
    )
    k = len(chosen)
    return pool_pairs(
        feats[:k],
        feats[k:],
        np.asarray(strength, dtype=np.float32),
        normalize=normalize,
        space=space,
    )


def onboard_user(
    engine: Any,
    model_id: str,
    encoder: Encoder,
    user_id: str,
    comparisons: Iterable[Comparison | dict[str, Any]] | None = None,
    *,
    normalize: bool = True,
    space: UserSpace | None = None,
) -> UserProfile:
    """Record the user's image comparisons (when given), pool all of them stored so far (inside
    ``space``, the model's population user space, when it has one), and store the profile under
    ``model_id``."""
    if not isinstance(user_id, str) or not user_id.strip():
        raise InvalidInputError("user_id must be a non-empty string")
    if comparisons is not None:
        comps = image_comparisons(user_id, comparisons)
        if not comps:
            raise InvalidInputError(
                f"no comparisons given for {user_id!r}; PPD needs a few (prompt, preferred image, rejected image) pairs"
            )
        engine.record(comps)
    stored = [
        c
        for c in engine.store.comparisons(user_id)
        if c.kind == "image" and not c.tie and c.strength > 0
    ]
    if not stored:
        raise InvalidInputError(
            f"user {user_id!r} has no image preference pairs; PPD onboarding needs at least one (4 recommended)"
        )
    vector = embed_user_pairs(
        engine.store,
        encoder,
        [c.chosen for c in stored],
        [c.rejected for c in stored],
        [c.strength for c in stored],
        normalize=normalize,
        space=space,
    )
    existing = engine.store.profile(user_id, model_id)
    profile = UserProfile(
        user_id=user_id,
        model_id=model_id,
        backend="ppd",
        vector=vector.tolist(),
        n_comparisons=len(stored),
        source="onboarded",
        created_at=existing.created_at if existing else utcnow(),
    )
    engine.store.put_profiles([profile])
    return profile
