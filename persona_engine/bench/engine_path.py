"""The product path the reward benchmark onboards unseen users through: :meth:`Engine.onboard`.

:class:`BenchEngine` is an :class:`~persona_engine.engine.Engine` over a private store in a
temporary folder whose feature lookups read through to the benchmark's persistent feature cache
(and whose newly encoded features are written there), so onboarding encodes nothing the benchmark
encoded, and repeated runs never write users, models or profiles into the persistent cache. Each fitted model is saved and
registered as :meth:`Engine.train` does (a :class:`~persona_engine.schemas.ModelRecord` naming
its encoder, and the training users' profiles, which the cold-start rule's neighbour prior
samples), and loaded back through :meth:`Engine.load_model`.

A user's shots are recorded as prefixes: the first shot, onboard; shots 2-5, onboard; ... . The
state the benchmark scores with is the vector (uncertainty, weights) of the profile
:meth:`Engine.onboard` returns, so for ``k`` up to ``cold_start.max_comparisons`` it is the
cold-start rule's state, as in the product. After reading it the profile is deleted, so the
population the cold-start rule samples stays the fitted (seen) users: one unseen user's result
never depends on another's.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..backends.base import RewardBackend, UserState
from ..encoders.base import Encoder
from ..hookspecs import hookimpl
from ..schemas import Comparison, ModelRecord, UserProfile

BASELINE_PLUGIN = "persona-bench-baselines"


class _BaselinePlugin:
    """The benchmark's two baselines as a plugin, so saved baseline models load by name."""

    @hookimpl
    def register_backends(self, register: Any) -> None:
        from .baselines import PerUserBackend, ResidualBackend

        register(PerUserBackend)
        register(ResidualBackend)


@contextlib.contextmanager
def baselines_registered() -> Iterator[None]:
    """Register ``per_user`` and ``bt_residual`` with the plugin manager for the duration."""
    from ..plugins import get_plugin_manager

    pm = get_plugin_manager()
    pm.load()
    if pm.pm.get_plugin(BASELINE_PLUGIN) is not None:
        yield
        return
    pm.register_module(_BaselinePlugin(), BASELINE_PLUGIN)
    try:
        yield
    finally:
        pm.unregister(BASELINE_PLUGIN)


def state_of(profile: UserProfile) -> UserState:
    """The user state a stored profile holds (as :meth:`Engine.user_state` reads it)."""
    unc = None if profile.uncertainty is None else np.asarray(profile.uncertainty, np.float32)
    return UserState(np.asarray(profile.vector, dtype=np.float32), unc, profile.weights)


def _read_through_store(path: Path, cache: Any) -> Any:
    """A store at ``path`` whose feature cache reads through to (and writes into) ``cache``."""
    from ..store import Store

    class ReadThroughStore(Store):
        def get_pair_features(
            self, encoder: str, keys: Sequence[tuple[str, str]]
        ) -> dict[tuple[str, str], np.ndarray]:
            found = super().get_pair_features(encoder, keys)
            missing = [k for k in keys if k not in found]
            if missing:
                found.update(cache.get_pair_features(encoder, missing))
            return found

        def put_pair_features(
            self, encoder: str, vectors: dict[tuple[str, str], np.ndarray]
        ) -> None:
            cache.put_pair_features(encoder, vectors)

    return ReadThroughStore(path)


class BenchEngine:
    """An Engine over a temporary store whose feature cache is ``cache``'s."""

    def __init__(
        self,
        cache: Any,
        encoder: Encoder,
        *,
        encoder_name: str,
        encoder_config: dict[str, Any],
        cold_start: dict[str, Any] | None = None,
        workdir: str | Path | None = None,
    ):
        from ..engine import Engine

        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="persona-bench-")
        self.workdir = Path(workdir or self._tmp.name)  # type: ignore[union-attr]
        self.cache = cache
        self.encoder = encoder
        self.store = _read_through_store(self.workdir / "persona.db", cache)
        self.engine = Engine(
            home=self.workdir,
            store=self.store,
            encoder=encoder_name,
            encoder_config=encoder_config,
            cold_start=cold_start,
        )

    def close(self) -> None:
        self.store.close()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> BenchEngine:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def register(
        self, model: RewardBackend, *, name: str, seed: int, n_comparisons: int
    ) -> ModelRecord:
        """Save ``model`` and register it (not active) with its fitted users' profiles."""
        return self.engine.register_model(
            model,
            backend=name,  # the engine resolves "<backend>-v<N>" as a model id
            version=seed + 1,  # one model per (backend, seed) in this private store
            path=self.workdir / "models" / name / f"seed{seed}",
            encoder=self.encoder,
            data={"comparisons": n_comparisons, "users": len(model.users)},
            keep_loaded=False,  # scored as the engine loads it, from the saved files
        )

    def load(self, record: ModelRecord) -> RewardBackend:
        """The registered model as the engine loads it (from its saved files)."""
        return self.engine.backend(record)

    def onboard_prefixes(
        self, record: ModelRecord, user_id: str, shots: Sequence[Comparison], ks: Sequence[int]
    ) -> dict[int, tuple[UserState, float]]:
        """Record ``shots`` as ``user_id``'s in prefixes and onboard after each prefix of length
        ``k``: ``{k: (state of the returned profile, milliseconds of Engine.onboard)}``."""
        out: dict[int, tuple[UserState, float]] = {}
        done = 0
        for k in sorted(set(ks)):
            new = [c.model_copy(update={"user_id": user_id}) for c in shots[done:k]]
            if new:
                self.engine.record(new)
            done = max(done, k)
            started = time.perf_counter()
            profile = self.engine.onboard(user_id, model=record.id)
            ms = 1000 * (time.perf_counter() - started)
            out[k] = (state_of(profile), ms)
            self.store.delete_profile(user_id, record.id)
        return out
