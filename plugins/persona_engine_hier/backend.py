"""The ``hier`` backend: hierarchical Bayesian Bradley-Terry with a learned low-rank prior."""

from __future__ import annotations

from typing import Any

import numpy as np

from persona_engine.backends import PreferenceData, RewardBackend, UserState
from persona_engine.backends.scaling import Standardizer
from persona_engine.losses import preference_targets

from .config import HierConfig
from .model import GaussianPrior, Posterior, laplace_posterior
from .trainer import fit_hierarchical


class HierBackend(RewardBackend):
    """Per-user linear rewards ``w_u . x~`` under a population prior ``N(mu, V V^T + s2 I)``
    learned by empirical Bayes; see the package docstring for the reasoning and citations."""

    name = "hier"
    Config = HierConfig
    config: HierConfig

    def _deltas(self, data: PreferenceData) -> tuple[np.ndarray, np.ndarray]:
        delta = (self.scaler(data.chosen) - self.scaler(data.rejected)).astype(np.float64)
        return delta, preference_targets(data.strength).astype(np.float64)  # type: ignore[arg-type]

    def _fit(self, data: PreferenceData, *, progress: bool) -> dict[str, Any]:
        self.scaler = Standardizer.fit(data)
        delta, target = self._deltas(data)
        rows = data.rows_of_users()
        users = [(delta[r], target[r]) for r in rows.values()]
        result = fit_hierarchical(users, self.config, progress=progress)
        self.population = result.prior
        self._cache_scoring()
        for u, post in zip(rows, result.posteriors):
            self.users[u] = self._state(post)
        spectrum = np.sum(self.population.factors**2, axis=0)
        sel = result.selection
        return {
            "mean_l2": result.mean_l2,
            "em_iterations": result.em.iterations,
            "em_iterations_kept": result.em_iterations_kept,
            "log_evidence_per_comparison": result.em.history[-1] if result.em.history else None,
            "em_noise_var": result.em.prior.noise,
            "noise_var": self.population.noise,
            "mean_scale": sel.mean_scale if sel else 1.0,
            "rank_used": int(np.sum(spectrum > 0)),
            "validation_loglik": sel.score if sel else None,
            "factor_var_top": float(spectrum[0]) if len(spectrum) else 0.0,
            "factor_var_sum": float(spectrum.sum()),
        }

    def _state(self, post: Posterior) -> UserState:
        prior = self.population
        coords = {}
        if prior.rank:
            norms = np.sum(prior.factors**2, axis=0)
            z = (post.weights - prior.mean) @ prior.factors / np.where(norms > 0, norms, 1.0)
            coords = {f"factor{j}": float(v) for j, v in enumerate(z)}
        return UserState(
            vector=post.weights.astype(np.float32),
            uncertainty=post.cov_diag(prior).astype(np.float32),  # a variance, as UserState says
            weights=coords or None,
        )

    def _embed_user(self, data: PreferenceData) -> UserState:
        delta, target = self._deltas(data)
        return self._state(
            laplace_posterior(delta, target, self.population, max_iter=self.config.onboard_max_iter)
        )

    @property
    def vector_dim(self) -> int:
        return int(self.dim or 0)

    def prior(self) -> UserState:
        self.check_fitted()
        return UserState(
            vector=self.population.mean.astype(np.float32),
            uncertainty=self.population.diag().astype(np.float32),
        )

    def _cache_scoring(self) -> None:
        self._inv_std = (1.0 / self.scaler.std).astype(np.float32)
        self._shift = (self.scaler.mean * self._inv_std).astype(np.float32)

    def _reward(self, vectors: np.ndarray, prompt: np.ndarray, items: np.ndarray) -> np.ndarray:
        # (x - m) / s . w  =  x . (w / s) - (m / s) . w, without materialising standardised items
        scaled = vectors * self._inv_std
        return np.einsum("ij,ij->i", items, scaled) - vectors @ self._shift

    def state_dict(self) -> dict[str, np.ndarray]:
        p = self.population
        return {
            **self.scaler.state(),
            "prior.mean": p.mean.astype(np.float32),
            "prior.factors": p.factors.astype(np.float32),
            "prior.noise": np.array([p.noise], dtype=np.float32),
        }

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.scaler = Standardizer.from_state(state)
        self.population = GaussianPrior(
            np.asarray(state["prior.mean"], dtype=np.float64),
            np.asarray(state["prior.factors"], dtype=np.float64),
            float(state["prior.noise"][0]),
        )
        self._cache_scoring()
