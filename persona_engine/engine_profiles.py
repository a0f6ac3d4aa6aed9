"""The profile side of the :class:`~persona_engine.engine.Engine` (mixed into it).

Similar users over a per-model-version faiss index (:mod:`persona_engine.retrieval`), cold-start
priors (:mod:`persona_engine.coldstart`), active onboarding (:mod:`persona_engine.active`),
online profile updates and re-derivation after a refit (:mod:`persona_engine.profile_updates`),
export/import (:mod:`persona_engine.profile_io`), and the index side of deleting a user.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .active import QueryPair, candidate_pairs, plausible_vectors, select_queries
from .errors import InvalidInputError, NotFoundError, UnknownUserError
from .model_files import local_model_dir, resave_model
from .profile_io import ProfileExport, export_profile, import_profile
from .profile_updates import profiled_elsewhere, rederive_profiles
from .schemas import ModelRecord, UserProfile, content_hash

if TYPE_CHECKING:
    from .backends.base import RewardBackend, UserState
    from .backends.data import PreferenceData
    from .coldstart import AttributePrior, ColdStart
    from .encoders.base import Encoder
    from .retrieval import ProfileIndex, ProfileIndexes, SimilarUser
    from .store import StoreBase


def _texts(values: Sequence[Any], what: str) -> list[str]:
    for v in values:
        if not isinstance(v, str) or not v.strip():
            raise InvalidInputError(f"every {what} must be a non-empty text")
    return list(values)


class UserProfilesMixin:
    """Methods of :class:`Engine` about user profiles (see the module docstring)."""

    store: StoreBase
    home: Path
    cold_start: ColdStart
    _indexes: ProfileIndexes
    _models: dict[str, RewardBackend]

    if TYPE_CHECKING:  # provided by Engine

        def load_model(self, model: str | None = None) -> tuple[ModelRecord, RewardBackend]: ...
        def backend(self, rec: ModelRecord) -> RewardBackend: ...
        def model_record(self, model: str | None = None) -> ModelRecord: ...
        def model_encoder(self, rec: ModelRecord) -> Encoder: ...
        def user_state(
            self, user_id: str, *, model: str | None = None
        ) -> tuple[ModelRecord, RewardBackend, UserState, str]: ...
        def candidate_features(
            self, prompt: str, candidates: Sequence[str], encoder: Encoder | None = None
        ) -> tuple[np.ndarray, np.ndarray]: ...
        def preference_data(
            self,
            comparisons: Sequence[Any],
            *,
            encoder: Encoder | None = None,
            progress: bool = False,
        ) -> PreferenceData: ...

    # -- retrieval -------------------------------------------------------------------------------
    def profile_index(self, model: str | None = None, *, refresh: bool = False) -> ProfileIndex:
        """The faiss index of the model version's profiles, in step with the store."""
        rec, backend = self.load_model(model)
        return self._indexes.get(rec.id, backend.vector_dim, refresh=refresh)

    def similar_users(
        self, user_id: str, k: int = 10, *, model: str | None = None
    ) -> list[SimilarUser]:
        """The ``k`` users nearest to ``user_id`` under the model (their profile, or the cold-start
        prior for a user without one), closest first, not counting the user.

        The index first applies at most a few pending profile changes (``QUERY_SYNC_ENTRIES``:
        this process's own writes are in already, other processes' are brought in by
        :meth:`follow_profile_changes`), so a user in it is searched with the vector it holds
        (their stored profile) without reading the profile row again."""
        rec, backend = self.load_model(model)
        index = self._indexes.get(rec.id, backend.vector_dim)
        if user_id in index:
            try:
                return index.search_user(user_id, k)
            except NotFoundError:  # removed meanwhile by another thread: the general path below
                pass
        if not self.store.has_user(user_id):
            raise UnknownUserError(f"unknown user {user_id!r}")
        _, _, state, _ = self.user_state(user_id, model=rec.id)
        return index.search(state.vector, k, exclude=[user_id])[0]

    def follow_profile_changes(self, interval_s: float = 1.0) -> Callable[[], None]:
        """Keep the similar-user indexes current off the request path: a maintenance thread
        (both stores) applies every process's profile changes, prunes the change log, saves
        indexes and compacts their tombstones, every ``interval_s`` seconds and, where the store
        notifies (PostgreSQL), as soon as another process commits. Returns the function that
        stops it. (Without it, queries apply only a few pending changes each, and this process's
        own writes are applied as it makes them.)"""
        upkeep = self._indexes.start_maintenance(interval_s)
        unwatch = self.store.watch_profile_changes(upkeep.wake)

        def stop() -> None:
            if unwatch is not None:
                unwatch()
            self._indexes.stop_maintenance()

        return stop

    def compact_profile_indexes(self, model: str | None = None) -> list[str]:
        """Write the saved similar-user indexes (all, or the model's) again without the users
        deleted since they were saved; returns the model ids compacted."""
        return self._indexes.compact(None if model is None else self.model_record(model).id)

    def _profiles_written(self) -> None:
        """After this process wrote profiles: the indexes in memory take the writes in."""
        self._indexes.after_write()

    def fit_attribute_prior(self, model: str | None = None) -> AttributePrior | None:
        """(Re)fit the attribute-to-vector regression of the model (None without enough users)."""
        return self.cold_start.attribute_prior(self.model_record(model), refit=True)

    # -- active onboarding ---------------------------------------------------------------------
    def next_queries(
        self,
        user_id: str,
        candidates: Sequence[str] | Sequence[tuple[str, str]],
        n: int = 1,
        *,
        prompt: str = "",
        model: str | None = None,
        max_pairs: int = 2000,
        seed: int = 0,
        method: str = "auto",
    ) -> list[QueryPair]:
        """The ``n`` comparisons whose answers would tell the most about the user.

        ``candidates`` are items (every pair of them is considered, up to ``max_pairs``) or
        explicit ``(a, b)`` pairs. Pairs the user already answered are left out. See
        :mod:`persona_engine.active` for the method. ``method`` says where the plausible user
        vectors come from: ``"population"`` (the model's stored profiles weighed by the user's
        answers, plus bootstrap re-embeddings), ``"posterior"`` (samples from the backend's
        diagonal posterior, when it reports one), or ``"auto"``: population when the model has
        stored profiles, else posterior. Measured on the PAL-style persona set with ``hier``,
        population-based selection gained 4 points of accuracy at 2-3 answers over random
        selection, while posterior samples (a diagonal approximation of hier's full posterior)
        did worse than random (BENCHMARKS.md).
        """
        if method not in ("auto", "population", "posterior"):
            raise InvalidInputError(
                f"unknown method {method!r}; known: auto, population, posterior"
            )
        if int(n) < 1:
            raise InvalidInputError("n must be at least 1")
        if isinstance(candidates, str) or not candidates:
            raise InvalidInputError(
                "candidates must be a non-empty list of texts or of (a, b) pairs"
            )
        if not isinstance(prompt, str):
            raise InvalidInputError("prompt must be a text")
        rec, backend, state, _ = self.user_state(user_id, model=model)
        comps = self.store.comparisons(user_id) if self.store.has_user(user_id) else []
        answered = {frozenset((c.chosen_hash, c.rejected_hash)) for c in comps}
        if all(isinstance(c, str) for c in candidates):
            items = list(dict.fromkeys(_texts(candidates, "candidate")))
            if len(items) < 2:
                raise InvalidInputError(
                    "need at least two distinct candidates to form a comparison"
                )
            hashes = [content_hash(t) for t in items]
            done = {
                (i, j)
                for i in range(len(items))
                for j in range(i + 1, len(items))
                if frozenset((hashes[i], hashes[j])) in answered
            }
            pairs = candidate_pairs(len(items), max_pairs, seed, done)
        else:
            flat: list[str] = []
            for c in candidates:
                if isinstance(c, str) or len(c) != 2 or c[0] == c[1]:
                    raise InvalidInputError(
                        "each candidate pair must be two different texts (a, b)"
                    )
                flat += _texts(list(c), "candidate")
            items = list(dict.fromkeys(flat))
            pos = {t: i for i, t in enumerate(items)}
            pairs = np.array(
                [
                    (pos[a], pos[b])
                    for a, b in zip(flat[0::2], flat[1::2])
                    if frozenset((content_hash(a), content_hash(b))) not in answered
                ],
                dtype=np.int64,
            ).reshape(-1, 2)
        if not len(pairs):
            return []
        enc = self.model_encoder(rec)
        prompt_vec, item_feats = self.candidate_features(prompt, items, enc)
        data = self.preference_data(comps, encoder=enc) if comps else None
        population = self.cold_start.population(rec, backend) if backend.vector_dim else None
        use_posterior = method == "posterior" or (
            method == "auto" and (population is None or not len(population))
        )
        vectors, weights, _ = plausible_vectors(
            backend, state, data, population, use_uncertainty=use_posterior, seed=seed
        )
        best = select_queries(backend, vectors, weights, prompt_vec, item_feats, pairs, int(n))
        return [QueryPair(prompt, items[i], items[j], info, ent) for i, j, info, ent in best]

    # -- online updates and versions -------------------------------------------------------------
    def update_profiles(
        self, users: Sequence[str], *, model: str | None = None, progress: bool = False
    ) -> dict[str, int]:
        """Re-embed ``users`` under the model (default: the active one) from their stored
        comparisons, without refitting it; the index follows through the store's change log."""
        rec, backend = self.load_model(model)
        counts = rederive_profiles(self, rec, backend, list(users), progress=progress)
        self._profiles_written()
        return counts

    def stale_users(self, model: str | None = None) -> list[str]:
        """Users profiled under an older version of the model's backend but not under it."""
        rec = self.model_record(model)
        older = [m for m in self.store.models(rec.backend) if m.version < rec.version]
        users: set[str] = set()
        for m in older:
            users.update(profiled_elsewhere(self.store, m.id, rec.id))
        return sorted(users)

    def _rederive_after_train(
        self, previous: ModelRecord | None, rec: ModelRecord, progress: bool = False
    ) -> dict[str, int]:
        """Profiles made under the previous version of the backend, re-derived under ``rec``."""
        if previous is None or previous.id == rec.id:
            return {}
        users = profiled_elsewhere(self.store, previous.id, rec.id)
        if not users:
            return {}
        return self.update_profiles(users, model=rec.id, progress=progress)

    # -- export / import ---------------------------------------------------------------------------
    def export_profile(self, user_id: str, *, model: str | None = None) -> ProfileExport:
        """The user's profiles (under ``model``, default every version) and attributes, as JSON-ready pydantic."""
        ids = None if model is None else [self.model_record(model).id]
        return export_profile(self.store, user_id, ids)

    def import_profile(
        self, document: ProfileExport | dict[str, Any], *, as_user: str | None = None
    ) -> list[UserProfile]:
        """Store an exported profile document (checked against the model versions here)."""

        def dim(rec: ModelRecord) -> int:
            return self.backend(rec).vector_dim

        stored = import_profile(self.store, document, dim, as_user=as_user)
        self._profiles_written()
        return stored

    # -- deletion -----------------------------------------------------------------------------------
    def _forget_user(self, user_id: str) -> dict[str, int]:
        """After the store dropped the user: drop them from indexes (at once in memory; on disk a
        tombstone, until the saved index is compacted: see ``ProfileIndexes.purge_user``), from
        loaded backends' per-user state, and from the saved model files that list them."""
        touched = self._indexes.purge_user(user_id)
        cached = 0
        for backend in list(self._models.values()):
            cached += backend.users.pop(user_id, None) is not None
        rewritten = 0
        for rec in self.store.models():
            cfg = local_model_dir(self.store, rec, self.home) / "config.json"
            if cfg.exists() and user_id in json.loads(cfg.read_text()).get("users", []):
                backend = self.backend(rec)
                backend.users.pop(user_id, None)
                resave_model(self.store, rec, backend, self.home)
                rewritten += 1
        self.cold_start.forget()
        return {"index_entries": len(touched), "cached_states": cached, "model_files": rewritten}
