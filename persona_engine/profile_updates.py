"""Re-deriving user profiles under a model without refitting it.

Used for online updates (a user records a comparison and their profile follows), for batch
onboarding, and after a refit: profiles made under the previous version of a backend are
re-derived under the new version from the users' stored comparisons, so a profile always belongs
to exactly one model version (``profiles.model_id``) and versions never mix. Users with at most
``ColdStartConfig.max_comparisons`` comparisons get the cold-start prior (source ``"prior"``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from .backends.base import RewardBackend, UserState
from .backends.data import PreferenceData
from .encoders.base import Encoder
from .encoders.cache import comparison_arrays
from .progress import progress_bar
from .schemas import ModelRecord, UserProfile, utcnow


def embed_many(backend: RewardBackend, data: PreferenceData) -> dict[str, UserState]:
    """Onboard every user of ``data``: the backend's batched ``embed_users`` when it has one,
    else ``embed_user`` per user."""
    batched = getattr(backend, "embed_users", None)
    if callable(batched):
        return dict(batched(data))
    return {u: backend.embed_user(data.subset(rows)) for u, rows in data.rows_of_users().items()}


def data_from_keys(store: Any, encoder: Encoder, rows: Sequence[tuple[Any, ...]]) -> PreferenceData:
    """PreferenceData from ``Store.comparison_keys`` rows of text comparisons: each distinct item
    is looked up (or encoded) once, then gathered by position."""
    users: dict[str, int] = {}
    for r in rows:
        users.setdefault(r[0], len(users))
    hashes = [h for r in rows for h in r[1:4]]
    texts = store.item_texts(list(dict.fromkeys(hashes)))
    prompt, chosen, rejected = comparison_arrays(
        store, encoder, hashes[0::3], hashes[1::3], hashes[2::3], texts
    )
    return PreferenceData(
        user_ids=list(users),
        user_index=np.fromiter((users[r[0]] for r in rows), dtype=np.int64, count=len(rows)),
        prompt=prompt,
        chosen=chosen,
        rejected=rejected,
        strength=np.array([0.0 if r[5] else r[4] for r in rows], dtype=np.float32),
        chosen_hash=hashes[1::3],
        rejected_hash=hashes[2::3],
        feature_names=encoder.feature_names,
    )


def make_profile(
    user_id: str, rec: ModelRecord, state: UserState, n: int, source: Literal["onboarded", "prior"]
) -> UserProfile:
    now = utcnow()
    return UserProfile.model_construct(
        user_id=user_id,
        model_id=rec.id,
        backend=rec.backend,
        vector=np.asarray(state.vector, dtype=np.float32).tolist(),
        uncertainty=None
        if state.uncertainty is None
        else np.asarray(state.uncertainty, dtype=np.float32).tolist(),
        weights=state.weights,
        n_comparisons=int(n),
        source=source,
        created_at=now,
        updated_at=now,
    )


def _check_finite(states: dict[str, UserState]) -> None:
    from .errors import PersonaEngineError

    bad = [u for u, s in states.items() if not np.all(np.isfinite(s.vector))]
    if bad:
        raise PersonaEngineError(
            f"the backend produced non-finite vectors for {len(bad)} users (e.g. {bad[0]!r})",
            status=500,
        )


def rederive_profiles(
    engine: Any,
    rec: ModelRecord,
    backend: RewardBackend,
    users: Sequence[str],
    *,
    chunk: int = 5000,
    progress: bool = False,
) -> dict[str, int]:
    """(Re-)embed ``users`` under ``rec`` from their stored comparisons and store the profiles.

    Returns counts: ``onboarded`` (embedded by the backend), ``prior`` (too few comparisons: the
    cold-start rule) and ``skipped`` (no comparisons at all; their profile under ``rec`` is left
    as it is).
    """
    enc = engine.model_encoder(rec)
    limit = engine.cold_start.config.max_comparisons
    counts = {"onboarded": 0, "prior": 0, "skipped": 0}
    users = list(dict.fromkeys(users))
    bar = progress_bar(
        total=len(users), desc=f"profiles under {rec.id}", unit="user", disable=not progress
    )
    for lo in range(0, len(users), chunk):
        part = users[lo : lo + chunk]
        keys = engine.store.comparison_keys(part)
        per_user = Counter(r[0] for r in keys)
        counts["skipped"] += sum(1 for u in part if per_user[u] == 0)
        if keys:
            if all(r[6] == "text" for r in keys):
                data = data_from_keys(engine.store, enc, keys)
            else:  # images: the engine's own path keys their features
                data = engine.preference_data(engine.store.comparisons(users=part), encoder=enc)
            rows = data.rows_of_users()
            few = [u for u in data.user_ids if per_user[u] <= limit]
            many = [u for u in data.user_ids if per_user[u] > limit]
            profiles = []
            if many:
                sub = (
                    data
                    if not few
                    else data.subset(np.sort(np.concatenate([rows[u] for u in many])))
                )
                states = embed_many(backend, sub)
                _check_finite(states)
                profiles += [
                    make_profile(u, rec, s, per_user[u], "onboarded") for u, s in states.items()
                ]
            for u in few:
                state, _ = engine.cold_start.state(u, rec, backend, data.subset(rows[u]))
                profiles.append(make_profile(u, rec, state, per_user[u], "prior"))
            engine.store.put_profiles(profiles)
            counts["onboarded"] += len(many)
            counts["prior"] += len(few)
        bar.update(len(part))
    bar.close()
    return counts


def profiled_elsewhere(store: Any, old_model_id: str, new_model_id: str) -> list[str]:
    """Users with a profile under ``old_model_id`` and none under ``new_model_id``."""
    return list(store.profile_users(old_model_id, without=new_model_id))
