"""The reward-backend contract.

A backend learns shared parameters from a population (``fit``), places a user in its shared space
from a few comparisons without touching the shared parameters (``embed_user``), and scores
candidates for a user (``reward``). Shared parameters are frozen after ``fit``.

Subclasses implement the underscored methods; the public ones here check input and state, so
every backend gives the same clear errors for the same mistakes.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..config import PluginConfig, make_config
from ..errors import InvalidInputError, NoModelError, PersonaEngineError, UnknownUserError
from ..paths import previous_copy, writing_directory
from .data import PreferenceData

FORMAT_VERSION = 1


@dataclass
class UserState:
    """A user's point in a backend's space."""

    vector: np.ndarray
    uncertainty: np.ndarray | None = None  # per-dimension variance
    weights: dict[str, float] | None = None


class RewardBackend(ABC):
    """Base class of reward-backend plugins."""

    name: ClassVar[str] = ""
    Config: ClassVar[type[PluginConfig]] = PluginConfig
    plugin: ClassVar[str] = ""
    #: False for population-only models (bt): embed_user returns an empty vector.
    personalized: ClassVar[bool] = True
    #: True when the reward reads the prompt, r_u(x, y), under the default config (PAL-B); the
    #: conformance suite then checks that the scores follow the prompt where the data says they should.
    reads_prompt: ClassVar[bool] = False

    def __init__(self, config: Any = None, **overrides: Any):
        self.config = make_config(self.Config, config, **overrides)
        self.fitted = False
        self.dim: int | None = None
        self.prompt_dim: int | None = None
        self.feature_names: list[str] = []
        self.users: dict[str, UserState] = {}

    # -- what subclasses implement -----------------------------------------------------------
    @abstractmethod
    def _fit(self, data: PreferenceData, *, progress: bool) -> dict[str, Any]:
        """Learn shared parameters and the training users' states (into ``self.users``)."""

    @abstractmethod
    def _embed_user(self, data: PreferenceData) -> UserState:
        """Place one new user from their comparisons; must not change shared parameters."""

    @abstractmethod
    def _reward(self, vectors: np.ndarray, prompt: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Scores (m,) for rows of (user vector (m,k), prompt features (m,dp), item features (m,d))."""

    @abstractmethod
    def state_dict(self) -> dict[str, np.ndarray]:
        """Shared parameters as float32/int arrays (saved with safetensors)."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, np.ndarray]) -> None: ...

    def prior(self) -> UserState:
        """The state of a user about whom nothing is known: the population mean by default."""
        self.check_fitted()
        if self.users:
            vecs = np.stack([s.vector for s in self.users.values()])
            return UserState(vector=vecs.mean(axis=0).astype(np.float32))
        return UserState(vector=np.zeros(self.vector_dim, dtype=np.float32))

    @property
    def vector_dim(self) -> int:
        """Length of a user vector (0 for non-personalized backends)."""
        return 0

    # -- public API ----------------------------------------------------------------------------
    def fit(self, data: PreferenceData, *, progress: bool = False) -> dict[str, Any]:
        if len(data) == 0:
            raise InvalidInputError(f"{self.name}: cannot fit on zero comparisons")
        self.dim, self.prompt_dim = data.dim, data.prompt_dim
        self.feature_names = list(data.feature_names)
        self.users = {}
        metrics = self._fit(data, progress=progress)
        self.fitted = True
        return metrics

    def embed_user(self, data: PreferenceData) -> UserState:
        self.check_fitted()
        if len(data) == 0:
            raise InvalidInputError(f"{self.name}: onboarding needs at least one comparison")
        if len(data.user_ids) != 1:
            raise InvalidInputError(
                f"{self.name}: embed_user takes the comparisons of exactly one user, got {len(data.user_ids)}"
            )
        self._check_dims(data.chosen.shape[1], data.prompt.shape[1])
        return self._embed_user(data)

    def user_state(self, user_id: str) -> UserState:
        if user_id not in self.users:
            raise UnknownUserError(
                f"{self.name}: user {user_id!r} was not in the training population; onboard them first"
            )
        return self.users[user_id]

    def reward(
        self, user: UserState | np.ndarray, prompt: np.ndarray, items: np.ndarray
    ) -> np.ndarray:
        """Score ``items`` (m,d) for one user and a prompt ((dp,) or (m,dp))."""
        self.check_fitted()
        vec = user.vector if isinstance(user, UserState) else np.asarray(user, dtype=np.float32)
        items = np.asarray(items, dtype=np.float32)
        if items.ndim != 2:
            raise InvalidInputError(
                f"{self.name}: items must be a 2-d array (candidates x features), got shape {items.shape}"
            )
        prompt = np.asarray(prompt, dtype=np.float32)
        if prompt.ndim == 1:
            prompt = np.broadcast_to(prompt, (items.shape[0], prompt.shape[0]))
        vecs = np.broadcast_to(vec.astype(np.float32), (items.shape[0], vec.shape[0]))
        return self.reward_batch(vecs, prompt, items)

    def reward_batch(
        self, vectors: np.ndarray, prompt: np.ndarray, items: np.ndarray
    ) -> np.ndarray:
        """Scores for rows of (user vector, prompt, item): the throughput path."""
        self.check_fitted()
        vectors = np.asarray(vectors, dtype=np.float32)
        prompt = np.asarray(prompt, dtype=np.float32)
        items = np.asarray(items, dtype=np.float32)
        self._check_dims(items.shape[-1], prompt.shape[-1])
        if vectors.ndim != 2 or vectors.shape[1] != self.vector_dim:
            raise InvalidInputError(
                f"{self.name}: user vectors must have {self.vector_dim} values, got shape {vectors.shape}"
            )
        if not (len(vectors) == len(prompt) == len(items)):
            raise InvalidInputError(
                f"{self.name}: vectors, prompts and items must have the same number of rows"
            )
        for arr, what in (
            (vectors, "user vector"),
            (prompt, "prompt features"),
            (items, "item features"),
        ):
            if not np.isfinite(arr).all():
                raise InvalidInputError(f"{self.name}: {what} contain NaN or infinite values")
        return np.asarray(self._reward(vectors, prompt, items), dtype=np.float32)

    def preference_logits(self, user: UserState | np.ndarray, data: PreferenceData) -> np.ndarray:
        """r(chosen) - r(rejected) for each row of ``data``, for one user."""
        return self.reward(user, data.prompt, data.chosen) - self.reward(
            user, data.prompt, data.rejected
        )

    # -- checks ------------------------------------------------------------------------------
    def check_fitted(self) -> None:
        if not self.fitted:
            raise NoModelError(f"backend {self.name!r} has not been fitted (or loaded) yet")

    def _check_dims(self, d: int, dp: int) -> None:
        if d != self.dim:
            raise InvalidInputError(
                f"{self.name}: item features have {d} dimensions, the model was trained on {self.dim}"
            )
        if dp != self.prompt_dim:
            raise InvalidInputError(
                f"{self.name}: prompt features have {dp} dimensions, the model was trained on {self.prompt_dim}"
            )

    # -- persistence ---------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write ``model.safetensors`` and ``config.json`` into the directory ``path``, atomically."""
        from safetensors.numpy import save_file

        self.check_fitted()
        path = Path(path)
        with writing_directory(path) as tmp:
            # (ascontiguousarray alone turns a 0-d array into shape (1,))
            tensors = {
                f"shared.{k}": np.ascontiguousarray(v).reshape(np.shape(v))
                for k, v in self.state_dict().items()
            }
            ids = sorted(self.users)
            if ids and self.vector_dim:
                tensors["users.vector"] = np.stack([self.users[u].vector for u in ids]).astype(
                    np.float32
                )
                uncertainties = [self.users[u].uncertainty for u in ids]
                if all(x is not None for x in uncertainties):
                    tensors["users.uncertainty"] = np.stack(uncertainties).astype(np.float32)  # type: ignore[arg-type]
            save_file(tensors, str(tmp / "model.safetensors"))
            meta = {
                "format_version": FORMAT_VERSION,
                "backend": self.name,
                "config": self.config.model_dump(mode="json"),
                "dim": self.dim,
                "prompt_dim": self.prompt_dim,
                "feature_names": self.feature_names,
                "users": ids,
                "user_weights": {u: self.users[u].weights for u in ids if self.users[u].weights},
            }
            (tmp / "config.json").write_text(json.dumps(meta, indent=1))
            for f in tmp.iterdir():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        return path

    @classmethod
    def load(cls, path: str | Path) -> RewardBackend:
        from safetensors.numpy import load_file

        path = published_dir(path)
        cfg_file, weights = path / "config.json", path / "model.safetensors"
        if not cfg_file.exists() or not weights.exists():
            raise NoModelError(
                f"no saved model at {path} (expected config.json and model.safetensors)"
            )
        meta = json.loads(cfg_file.read_text())
        if cls.name and meta.get("backend") != cls.name:
            raise PersonaEngineError(
                f"{path} holds a {meta.get('backend')!r} model, not {cls.name!r}"
            )
        obj = cls(meta["config"])
        try:
            tensors = load_file(str(weights))
        except Exception as exc:  # safetensors' own error type is not part of its public API
            raise PersonaEngineError(
                f"{weights} is not a readable safetensors file ({exc})",
                code="corrupt_model",
                status=500,
            ) from exc
        obj.dim, obj.prompt_dim = meta["dim"], meta["prompt_dim"]
        obj.feature_names = meta.get("feature_names", [])
        obj.load_state_dict(
            {k[len("shared.") :]: v for k, v in tensors.items() if k.startswith("shared.")}
        )
        ids = meta.get("users", [])
        weights_by_user = meta.get("user_weights", {})
        if "users.vector" in tensors:
            unc = tensors.get("users.uncertainty")
            for i, u in enumerate(ids):
                obj.users[u] = UserState(
                    vector=tensors["users.vector"][i],
                    uncertainty=None if unc is None else unc[i],
                    weights=weights_by_user.get(u),
                )
        else:
            for u in ids:
                obj.users[u] = UserState(vector=np.zeros(0, dtype=np.float32))
        obj.fitted = True
        return obj


def published_dir(path: str | Path) -> Path:
    """Where a saved model's files are: ``path``, or its previous copy when a re-save of ``path``
    was killed between its two renames (the previous version moved aside, the new one not yet in
    place); the previous version is intact there, and the next save replaces both. Releases before
    0.2 named that copy ``<name>.old``."""
    path = Path(path)
    if not (path / "config.json").exists():
        for old in (previous_copy(path), path.with_name(path.name + ".old")):
            if (old / "config.json").exists():
                return old
    return path


def load_backend(path: str | Path) -> RewardBackend:
    """Load a saved model of any installed backend from its directory."""
    from ..plugins import get_backend

    cfg = published_dir(path) / "config.json"
    if not cfg.exists():
        raise NoModelError(f"no saved model at {path}")
    name = json.loads(cfg.read_text()).get("backend")
    cls: type[RewardBackend] = get_backend(name)
    return cls.load(path)
