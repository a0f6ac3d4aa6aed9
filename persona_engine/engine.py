"""The Engine: the one object a product backend talks to.

It ties the store (source of truth), the encoders and their feature cache, and the reward
backends together: ``record``/``ingest`` preferences, ``train`` a population model, ``onboard`` a
user from a few comparisons, ``score``/``rank`` candidates for a user, ``delete_user``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .backends.base import RewardBackend, UserState, load_backend
from .backends.data import PreferenceData
from .coldstart import ColdStart, ColdStartConfig
from .config import make_config
from .encoders.base import Encoder
from .encoders.cache import candidate_features, comparison_arrays, encode_cached
from .engine_profiles import UserProfilesMixin
from .errors import InvalidInputError, NoModelError, UnknownUserError
from .ingest import IngestReport, ingest_jsonl
from .model_files import keep_adapter, local_model_dir, stored_adapter
from .online import OnlineEvaluator, online_report
from .paths import user_dir
from .plugins import PluginManager, get_plugin_manager
from .retrieval.sync import ProfileIndexes
from .schemas import (
    Comparison,
    ModelRecord,
    UserProfile,
    comparison_from_record,
    content_hash,
    utcnow,
)
from .store import StoreBase, StoredComparison, open_store
from .store.online import OnlineOutcomes

DEFAULT_ENCODER = "minilm"


class Engine(UserProfilesMixin):
    """Facade over store, encoders, backends and generators.

    :param home: the user directory (default: ``PERSONA_ENGINE_HOME`` or the platform app dir).
    :param store: an existing store (SQLite :class:`~persona_engine.store.Store` or
        :class:`~persona_engine.store.postgres.PostgresStore`).
    :param database: without ``store``: a ``postgresql://`` URL or a SQLite file path (default:
        ``PERSONA_ENGINE_DATABASE``, else ``home/persona.db``).
    :param encoder: name of the text encoder plugin used for new models.
    :param encoder_config: options of that encoder.
    :param index: options of the similar-user indexes (:class:`~persona_engine.retrieval.IndexConfig`).
    :param cold_start: options of the cold-start rule (:class:`~persona_engine.coldstart.ColdStartConfig`).
    :param online_eval: score each new comparison under the active model before storing it
        (:mod:`persona_engine.online`); default on, ``PERSONA_ENGINE_ONLINE_EVAL=0`` turns it off.
    """

    def __init__(
        self,
        home: str | Path | None = None,
        *,
        store: StoreBase | None = None,
        database: str | Path | None = None,
        encoder: str = DEFAULT_ENCODER,
        encoder_config: dict[str, Any] | None = None,
        plugins: PluginManager | None = None,
        index: dict[str, Any] | None = None,
        cold_start: ColdStartConfig | dict[str, Any] | None = None,
        online_eval: bool | None = None,
    ):
        self.home = Path(home) if home is not None else user_dir()
        self.home.mkdir(parents=True, exist_ok=True)
        self.store = store if store is not None else open_store(database, home=self.home)
        self.plugins = plugins or get_plugin_manager()
        self.encoder_name = encoder
        self.encoder_config = dict(encoder_config or {})
        self._encoders: dict[str, Encoder] = {}
        self.online = OnlineEvaluator(self, enabled=online_eval)
        self._models: dict[str, RewardBackend] = {}
        self._generators: dict[str, Any] = {}
        self._lock = threading.RLock()
        self._indexes = ProfileIndexes(self.store, self.home / "indexes", index)
        self.cold_start = ColdStart(self, make_config(ColdStartConfig, cold_start))

    # -- encoders ----------------------------------------------------------------------------
    def encoder(self, name: str | None = None, config: dict[str, Any] | None = None) -> Encoder:
        name = name or self.encoder_name
        config = (
            self.encoder_config if config is None and name == self.encoder_name else (config or {})
        )
        key = f"{name}:{sorted(config.items())}"
        with self._lock:
            if key not in self._encoders:
                self._encoders[key] = self.plugins.get("encoders", name)(config)
            return self._encoders[key]

    def features(
        self, texts: Sequence[str], *, encoder: Encoder | None = None, progress: bool = False
    ) -> np.ndarray:
        """Cached features of ``texts`` on their own under ``encoder`` (default: the engine's).
        Rewards take pair features: use :meth:`candidate_features` or :meth:`preference_data`."""
        return encode_cached(self.store, encoder or self.encoder(), list(texts), progress=progress)

    def candidate_features(
        self, prompt: str, candidates: Sequence[str], encoder: Encoder | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Features of ``prompt`` and of each (prompt, candidate) pair, through the cache: what a
        backend's ``reward`` receives."""
        return candidate_features(self.store, encoder or self.encoder(), prompt, candidates)

    def preference_data(
        self,
        comparisons: Sequence[StoredComparison | Comparison],
        *,
        encoder: Encoder | None = None,
        progress: bool = False,
    ) -> PreferenceData:
        """Turn comparisons into feature arrays (encoding each distinct text once, ever)."""
        enc = encoder or self.encoder()
        if not comparisons:
            return PreferenceData(
                [],
                np.zeros(0),
                np.zeros((0, enc.prompt_dim)),
                np.zeros((0, enc.dim)),
                np.zeros((0, enc.dim)),
                feature_names=enc.feature_names,
            )
        users: dict[str, int] = {}
        for c in comparisons:
            users.setdefault(c.user_id, len(users))
        texts: dict[str, str] = {}
        hashes: list[str] = []
        for c in comparisons:
            if isinstance(c, StoredComparison) and c.kind == "text":  # hashed when stored
                row = [c.prompt_hash, c.chosen_hash, c.rejected_hash]
            else:
                row = [content_hash(c.prompt), content_hash(c.chosen), content_hash(c.rejected)]
            for h, t in zip(row, (c.prompt, c.chosen, c.rejected)):
                texts.setdefault(h, t)
            hashes += row
        prompt, chosen, rejected = comparison_arrays(
            self.store, enc, hashes[0::3], hashes[1::3], hashes[2::3], texts, progress=progress
        )
        strength = np.array([0.0 if c.tie else c.strength for c in comparisons], dtype=np.float32)
        return PreferenceData(
            user_ids=list(users),
            user_index=np.array([users[c.user_id] for c in comparisons], dtype=np.int64),
            prompt=prompt,
            chosen=chosen,
            rejected=rejected,
            strength=strength,
            chosen_hash=hashes[1::3],
            rejected_hash=hashes[2::3],
            feature_names=enc.feature_names,
        )

    # -- recording ---------------------------------------------------------------------------
    def record(
        self,
        comparisons: Comparison | dict[str, Any] | Iterable[Comparison | dict[str, Any]],
        *,
        tenant: str = "",
        update_profile: bool = False,
        model: str | None = None,
        outcomes: OnlineOutcomes | None = None,
    ) -> int:
        """Store one comparison or many; returns how many were new. With ``update_profile``, the
        profiles of the users involved are re-embedded under ``model`` (default: the active one)
        without refitting it, and the similar-user index follows.

        New comparisons are first scored under the active model (online evaluation, see
        :mod:`persona_engine.online`); ``outcomes`` passes that scoring in when the caller did it
        already (the service scores on its thread pool, then stores on its writer thread)."""
        comps = self.validate_comparisons(comparisons)
        if outcomes is None:
            outcomes = self.online.outcomes(comps)
        added, _ = self.store.add_comparisons(comps, tenant=tenant, outcomes=outcomes)
        if update_profile and comps:
            self.update_profiles(list(dict.fromkeys(c.user_id for c in comps)), model=model)
        return added

    @staticmethod
    def validate_comparisons(
        comparisons: Comparison | dict[str, Any] | Iterable[Comparison | dict[str, Any]],
    ) -> list[Comparison]:
        """One comparison or many, as validated :class:`Comparison` objects."""
        if isinstance(comparisons, (Comparison, dict)):
            comparisons = [comparisons]
        return [c if isinstance(c, Comparison) else comparison_from_record(c) for c in comparisons]

    def ingest(
        self,
        path: str | Path,
        *,
        skip_bad: bool = False,
        progress: bool = False,
        batch_size: int = 2000,
        limit: int | None = None,
    ) -> IngestReport:
        return ingest_jsonl(
            self.store,
            path,
            skip_bad=skip_bad,
            progress=progress,
            batch_size=batch_size,
            limit=limit,
            evaluate=self.online.outcomes,
        )

    def set_user_attributes(self, user_id: str, attributes: dict[str, Any]) -> None:
        """Side information about a user (e.g. age group, language), used by cold-start priors."""
        if not isinstance(attributes, dict):
            raise InvalidInputError("attributes must be a mapping")
        self.store.upsert_user(user_id, attributes=attributes)

    # -- models ------------------------------------------------------------------------------
    def train(
        self,
        backend: str = "bt",
        config: dict[str, Any] | None = None,
        *,
        users: Sequence[str] | None = None,
        encoder: str | None = None,
        encoder_config: dict[str, Any] | None = None,
        progress: bool = False,
        activate: bool = True,
        rederive: bool = True,
        finetune: dict[str, Any] | None = None,
    ) -> ModelRecord:
        """Fit ``backend`` on the stored comparisons (of ``users``, default all), save it, register
        it as a new version, and write the training users' profiles under that version. With
        ``rederive``, users profiled under the backend's previously active version but not
        trained on are re-embedded under the new one (else see :meth:`stale_users`).

        ``encoder`` (default: the engine's) is recorded with the model, so scoring and onboarding
        for this version always use the features it was trained on.

        ``finetune`` (options of LoRA fine-tuning, e.g. ``{"r": 8, "epochs": 1}``) first trains
        adapters on the encoder's backbone with the comparisons' texts (per-user heads when the
        backend is personalized), saves them beside the model (``v<N>-adapter``), and fits the
        backend on the adapted features; the record's encoder config names the adapter."""
        cls = self.plugins.get("backends", backend)
        model = cls(config)
        comps = self.store.comparisons(users=users)
        if not comps:
            raise InvalidInputError("no comparisons stored; record or ingest some first")
        enc = self.encoder(encoder, encoder_config)
        version = self.store.next_model_version(backend)
        path = self.home / "models" / backend / f"v{version}"
        if finetune is not None:
            enc = enc.finetune(
                comps,
                finetune,
                personalized=model.personalized,
                out_dir=path.with_name(f"v{version}-adapter"),
                progress=progress,
            )
            with self._lock:  # the adapted model, already in memory, serves this version
                key = f"{enc.name}:{sorted(enc.config.model_dump(mode='json').items())}"
                self._encoders[key] = enc
        data = self.preference_data(comps, encoder=enc, progress=progress)
        started = utcnow()
        metrics = model.fit(data, progress=progress)
        model_id = f"{backend}-v{version}"
        previous = self.store.active_model(backend)
        record = self.register_model(
            model,
            backend=backend,
            version=version,
            path=path,
            encoder=enc,
            data={
                "comparisons": len(data),
                "users": len(data.user_ids),
                "fit_seconds": (utcnow() - started).total_seconds(),
            },
            metrics=metrics,
            counts=self.store.comparison_counts(),
        )
        if activate:
            self.store.activate_model(model_id)
            record = self.store.model(model_id)
        if rederive:
            self._rederive_after_train(previous, record, progress=progress)
        return record

    def register_model(
        self,
        model: RewardBackend,
        *,
        backend: str,
        version: int,
        path: Path,
        encoder: Encoder,
        data: dict[str, Any] | None = None,
        metrics: dict[str, Any] | None = None,
        counts: dict[str, int] | None = None,
        keep_loaded: bool = True,
    ) -> ModelRecord:
        """Save a fitted ``model`` at ``path`` and register it (not active) as ``<backend>-v<version>``
        with the encoder it was fitted on, and its fitted users' profiles (``counts``: each
        user's number of comparisons). :meth:`train` and the benchmarks register through here;
        without ``keep_loaded`` the engine reads the model back from its files when it is used."""
        model.save(path)
        record = ModelRecord(
            id=f"{backend}-v{version}",
            backend=backend,
            version=version,
            path=str(path),
            encoder=encoder.id,
            config=model.config.model_dump(mode="json"),
            data={
                **(data or {}),
                "encoder_name": encoder.name,
                "encoder_config": encoder.config.model_dump(mode="json"),
            },
            metrics={
                k: v
                for k, v in (metrics or {}).items()
                if isinstance(v, (int, float, str, type(None)))
            },
        )
        keep_adapter(self.store, path, getattr(encoder.config, "adapter", None))
        record = self.store.add_model(record, activate=False, files=path)
        if model.vector_dim or counts is not None:
            now = utcnow()
            self.store.put_profiles(
                UserProfile(
                    user_id=u,
                    model_id=record.id,
                    backend=backend,
                    vector=s.vector.tolist(),
                    uncertainty=None if s.uncertainty is None else s.uncertainty.tolist(),
                    weights=s.weights,
                    n_comparisons=(counts or {}).get(u, 0),
                    source="fitted",
                    created_at=now,
                    updated_at=now,
                )
                for u, s in model.users.items()
            )
        if keep_loaded:
            with self._lock:
                self._models[record.id] = model
        return record

    def model_record(self, model: str | None = None) -> ModelRecord:
        """A model by id (``bt-v2``), by backend name (its active version), or the active model."""
        if model is None:
            rec = self.store.active_model()
            if rec is None:
                raise NoModelError("no trained model yet; run `persona train` (Engine.train) first")
            return rec
        if "-v" in model:
            return self.store.model(model)
        rec = self.store.active_model(model)
        if rec is None:
            raise NoModelError(f"no trained {model!r} model yet; train one first")
        return rec

    def set_offline_figure(
        self,
        model: str | None,
        accuracy: float,
        *,
        ci: tuple[float, float] | None = None,
        source: str = "",
    ) -> ModelRecord:
        """Record a version's offline accuracy (e.g. from ``persona bench reward``), which online
        evaluation compares it with (:func:`~persona_engine.online.online_report` warns when the
        online accuracy falls below it by more than its CI)."""
        if not 0.0 <= accuracy <= 1.0 or (ci is not None and not ci[0] <= accuracy <= ci[1]):
            raise InvalidInputError(
                "accuracy must lie in [0, 1], inside its CI (low <= accuracy <= high)"
            )
        rec = self.model_record(model)
        figure = {
            "accuracy": float(accuracy),
            "ci": None if ci is None else list(ci),
            "source": source,
        }
        self.store.set_model_metrics(rec.id, {**rec.metrics, "offline": figure})
        return self.store.model(rec.id)

    def online_report(self, **options: Any) -> dict[str, Any]:
        """Online evaluation per model version; options of :func:`persona_engine.online.online_report`.

        First keeps the history facts of outcomes stored since the last report (a few lookups
        each, once per outcome; see :mod:`persona_engine.store.online`)."""
        self.store.complete_all_outcomes()
        return online_report(self, **options)

    def load_model(self, model: str | None = None) -> tuple[ModelRecord, RewardBackend]:
        rec = self.model_record(model)
        return rec, self.backend(rec)

    def backend(self, rec: ModelRecord) -> RewardBackend:
        """The loaded model of a registry record (loaded once, then kept), without reading the
        registry again."""
        with self._lock:
            if rec.id not in self._models:
                self._models[rec.id] = load_backend(local_model_dir(self.store, rec, self.home))
            return self._models[rec.id]

    def model_encoder(self, rec: ModelRecord) -> Encoder:
        """The encoder a model was trained with (rebuilt from the registry; a LoRA adapter from
        the training machine's folder, else from the copy the store keeps with the version)."""
        name = rec.data.get("encoder_name", self.encoder_name)
        config = dict(rec.data.get("encoder_config", {}))
        adapter = config.get("adapter")
        if adapter and not Path(adapter).expanduser().is_dir():
            # trained by another replica (or machine): the copy stored with the version
            local = stored_adapter(self.store, rec, self.home)
            if local is not None:
                config["adapter"] = str(local)
        enc = self.encoder(name, config)
        if enc.id != rec.encoder:
            raise NoModelError(
                f"model {rec.id} was trained with encoder {rec.encoder}, which is not available (have {enc.id})"
            )
        return enc

    # -- users -------------------------------------------------------------------------------
    def onboard(
        self,
        user_id: str,
        comparisons: Iterable[Comparison | dict[str, Any]] | None = None,
        *,
        model: str | None = None,
    ) -> UserProfile:
        """Place a user in the active model's space from their comparisons (recorded first when
        given), without retraining. The profile is stored and returned."""
        if comparisons is not None:
            comps = [
                c
                if isinstance(c, Comparison)
                else comparison_from_record({**c, "user_id": c.get("user_id", user_id)})
                for c in comparisons
            ]
            wrong = [c.user_id for c in comps if c.user_id != user_id]
            if wrong:
                raise InvalidInputError(
                    f"comparisons for onboarding {user_id!r} name other users: {sorted(set(wrong))}"
                )
            self.record(comps)
        rec, backend = self.load_model(model)
        stored = self.store.comparisons(user_id)
        if not stored:
            raise InvalidInputError(
                f"user {user_id!r} has no comparisons; onboarding needs at least one"
            )
        data = self.preference_data(stored, encoder=self.model_encoder(rec))
        if len(stored) <= self.cold_start.config.max_comparisons:  # too few: the cold-start rule
            state, _ = self.cold_start.state(user_id, rec, backend, data)
            return self._save_state(user_id, rec, state, len(stored), "prior")
        state = backend.embed_user(data)
        return self._save_state(user_id, rec, state, len(stored), "onboarded")

    def _save_state(
        self, user_id: str, rec: ModelRecord, state: UserState, n: int, source: str
    ) -> UserProfile:
        existing = self.store.profile(user_id, rec.id)
        profile = UserProfile(
            user_id=user_id,
            model_id=rec.id,
            backend=rec.backend,
            vector=state.vector.tolist(),
            uncertainty=None if state.uncertainty is None else state.uncertainty.tolist(),
            weights=state.weights,
            n_comparisons=n,
            source=source,  # type: ignore[arg-type]
            created_at=existing.created_at if existing else utcnow(),
        )
        self.store.put_profiles([profile])
        self._profiles_written()
        return profile

    def profile(self, user_id: str, *, model: str | None = None) -> UserProfile:
        """The user's stored profile under the model (unknown users raise UnknownUserError)."""
        rec = self.model_record(model)
        prof = self.store.profile(user_id, rec.id)
        if prof is None:
            if not self.store.has_user(user_id):
                raise UnknownUserError(f"unknown user {user_id!r}")
            raise UnknownUserError(
                f"user {user_id!r} has no profile under model {rec.id}; onboard them first"
            )
        return prof

    def user_state(
        self, user_id: str, *, model: str | None = None
    ) -> tuple[ModelRecord, RewardBackend, UserState, str]:
        """The state used to score for a user: their profile, else the cold-start prior."""
        rec, backend = self.load_model(model)
        prof = self.store.profile(user_id, rec.id)
        if prof is not None:
            unc = (
                None if prof.uncertainty is None else np.asarray(prof.uncertainty, dtype=np.float32)
            )
            return (
                rec,
                backend,
                UserState(np.asarray(prof.vector, dtype=np.float32), unc, prof.weights),
                prof.source,
            )
        return rec, backend, self.cold_start_state(user_id, rec, backend), "prior"

    def cold_start_state(self, user_id: str, rec: ModelRecord, backend: RewardBackend) -> UserState:
        """A user with no profile: the rule of :mod:`persona_engine.coldstart` (population,
        attribute or neighbour prior); never fails for an unknown user."""
        return self.cold_start.state(user_id, rec, backend)[0]

    def delete_user(self, user_id: str) -> dict[str, int]:
        """Remove the user's comparisons, profiles, items only they referenced, their index
        entries, cached per-user state and the saved model files' copies of their vector."""
        if not self.store.has_user(user_id):
            raise UnknownUserError(f"unknown user {user_id!r}")
        return {**self.store.delete_user(user_id), **self._forget_user(user_id)}

    # -- scoring -----------------------------------------------------------------------------
    def score(
        self, user_id: str, prompt: str, candidates: Sequence[str], *, model: str | None = None
    ) -> list[float]:
        """Reward of each candidate for this user (the population prior if they have no profile)."""
        if isinstance(candidates, str) or not candidates:
            raise InvalidInputError("candidates must be a non-empty list of texts")
        for c in candidates:
            if not isinstance(c, str) or not c.strip():
                raise InvalidInputError("every candidate must be a non-empty text")
        if not isinstance(prompt, str):
            raise InvalidInputError("prompt must be a text")
        rec, backend, state, _ = self.user_state(user_id, model=model)
        prompt_vec, items = self.candidate_features(prompt, candidates, self.model_encoder(rec))
        return [float(x) for x in backend.reward(state, prompt_vec, items)]

    def rank(
        self, user_id: str, prompt: str, candidates: Sequence[str], *, model: str | None = None
    ) -> list[tuple[str, float]]:
        """Candidates sorted best first for this user, with their scores."""
        scores = self.score(user_id, prompt, candidates, model=model)
        order = sorted(range(len(candidates)), key=lambda i: -scores[i])
        return [(candidates[i], scores[i]) for i in order]

    def status(self) -> dict[str, Any]:
        active = [m.model_dump(mode="json") for m in self.store.models() if m.active]
        return {**self.store.status(), "active_models": active}

    # -- generation --------------------------------------------------------------------------
    def generate(
        self,
        user_id: str | None,
        prompt: str,
        *,
        generator: str = "bestofn",
        config: dict[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        """Personalized text or images for ``user_id`` from a generator plugin.

        The user's profile under the active model (or None for a user without one) is passed to the
        generator with this engine, so generators can read the store and score with the backends.
        """
        from .generators import GenerationRequest

        if not isinstance(prompt, str) or not prompt.strip():
            raise InvalidInputError("prompt must be a non-empty text")
        gen = self.generator(generator, config)
        profile = None
        if user_id is not None:
            try:
                profile = self.profile(user_id)
            except (UnknownUserError, NoModelError):
                profile = None
        return gen.generate(
            GenerationRequest(
                prompt=prompt, user_id=user_id, profile=profile, engine=self, options=options
            )
        )

    def generator(self, name: str, config: dict[str, Any] | None = None) -> Any:
        """A generator plugin instance, cached per (name, config)."""
        key = f"gen:{name}:{sorted((config or {}).items())}"
        with self._lock:
            if key not in self._generators:
                self._generators[key] = self.plugins.get("generators", name)(config)
            return self._generators[key]
