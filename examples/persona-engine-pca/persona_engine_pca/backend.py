"""The ``pca`` reward backend: decomposed reward models (DRMs).

Luo, F., Yang, R., Sun, H., Deng, C., Yao, J., Shen, J., Zhang, H. & Chen, H. (2025).
*Rethinking Diverse Human Preference Learning through Principal Component Analysis*.
arXiv:2502.13131.

Shared parameters: reward heads ``H`` (h x d) = the mean preference direction and the principal
directions (both signs) of chosen-minus-rejected feature differences over the whole population,
on standardised features of (prompt, response) pairs. A user: weights ``w`` over the heads from
their own comparisons, ``w = softmax(-L / T)`` with ``L_j`` head ``j``'s Bradley-Terry loss on them (see
:mod:`persona_engine_pca.decomposition`). Fitting and onboarding are closed form: no gradient
steps, no torch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field

from persona_engine.backends import PreferenceData, RewardBackend, UserState
from persona_engine.backends.scaling import Standardizer
from persona_engine.config import PluginConfig

from .decomposition import decompose, hyre_weights


class PCAConfig(PluginConfig):
    n_components: int = Field(
        32, ge=1, description="Principal directions kept; each gives a + and a - reward head."
    )
    temperature: float = Field(
        1.0,
        gt=0,
        description="Temperature T of the head reweighting w = softmax(-L / T), L summed over the user's comparisons.",
    )
    population_head: bool = Field(
        True,
        description="Add the mean chosen-minus-rejected direction as a head (PCA centring removes it).",
    )


class PCARewardBackend(RewardBackend):
    """Decomposed reward model: PCA heads shared by everyone, per-user head weights."""

    name = "pca"
    Config = PCAConfig
    personalized = True
    config: PCAConfig

    # -- fitting: the population's principal preference directions ----------------------------
    def _fit(self, data: PreferenceData, *, progress: bool) -> dict[str, Any]:
        self.scaler = Standardizer.fit(data)
        delta = self.scaler(data.chosen) - self.scaler(data.rejected)
        heads = decompose(
            delta, self.config.n_components, population_head=self.config.population_head
        )
        self.heads, self.head_names = heads.directions, heads.names
        self.explained_variance = heads.explained_variance
        for user, rows in data.rows_of_users().items():
            self.users[user] = self._embed_user(data.subset(rows))
        total = float(delta.var(axis=0, ddof=1).sum()) if len(delta) > 1 else 0.0
        explained = float(self.explained_variance.sum() / total) if total else 0.0
        return {"heads": len(self.head_names), "explained_variance_ratio": explained}

    # -- onboarding: weights over the heads from the user's few comparisons -------------------
    def _head_scores(self, items: np.ndarray) -> np.ndarray:
        return self.scaler(items) @ self.heads.T

    def _embed_user(self, data: PreferenceData) -> UserState:
        w, sigma = hyre_weights(
            self._head_scores(data.chosen),
            self._head_scores(data.rejected),
            self.config.temperature,
        )
        return UserState(
            vector=(w / sigma).astype(np.float32),
            weights=dict(zip(self.head_names, w.tolist(), strict=True)),
        )

    @property
    def vector_dim(self) -> int:
        return len(self.head_names)

    # -- scoring ---------------------------------------------------------------------------------
    def _reward(self, vectors: np.ndarray, prompt: np.ndarray, items: np.ndarray) -> np.ndarray:
        return np.einsum("mh,mh->m", self._head_scores(items), vectors)

    # -- persistence -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        return {
            "heads": self.heads,
            "explained_variance": self.explained_variance,
            **self.scaler.state(),
        }

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.scaler = Standardizer.from_state(state)
        self.heads = np.asarray(state["heads"], dtype=np.float32)
        self.explained_variance = np.asarray(state["explained_variance"], dtype=np.float32)
        k = len(self.explained_variance)
        self.head_names = (
            (["population"] if self.config.population_head else [])
            + [f"pc{j + 1}+" for j in range(k)]
            + [f"pc{j + 1}-" for j in range(k)]
        )
