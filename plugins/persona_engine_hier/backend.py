"""The ``hier`` backend: hierarchical Bayesian Bradley-Terry with a learned low-rank prior."""

from __future__ import annotations

from typing import Any

import numpy as np

from persona_engine.backends import PreferenceData, RewardBackend, UserState
from persona_engine.backends.scaling import Standardizer
from persona_engine.losses import preference_targets

from .config import HierConfig
from .model import GaussianPrior, Posterior, laplace_posterior
from .trainer import fit_hierarchical, pooled_mean


def difference_space(delta: np.ndarray, mean: np.ndarray, dim: int) -> np.ndarray:
    """``Q = [P | mu]`` (d x (p + 1)): the top ``dim`` right singular vectors ``P`` of the
    difference vectors ``delta`` (uncentred PCA: the directions along which compared items
    differ most), and the pooled population reward ``mu``. A user's weights are ``Q v_u``, with
    ``v_u ~ N((0, .., 0, 1), V V^T + s2 I)``: the population reward plus a deviation in the span
    of ``P`` (and a scale of the population reward of their own)."""
    _, _, vt = np.linalg.svd(delta, full_matrices=False)
    return np.concatenate([vt[: min(dim, vt.shape[0])].T, mean[:, None]], axis=1)


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
        cfg = self.config
        self.scaler = Standardizer.fit(data)
        delta, target = self._deltas(data)
        rows = data.rows_of_users()
        users = [(delta[r], target[r]) for r in rows.values()]
        texts = None
        if data.chosen_hash is not None and data.rejected_hash is not None:
            ch, rh = data.chosen_hash, data.rejected_hash
            texts = [([ch[i] for i in r], [rh[i] for i in r]) for r in rows.values()]
        if cfg.space_dim is None:
            self.space = None
            result = fit_hierarchical(users, cfg, texts=texts, progress=progress)
        else:
            mean_l2, mean = pooled_mean(users, cfg)
            self.space = difference_space(delta, mean, cfg.space_dim)
            start = np.zeros(self.space.shape[1])
            start[-1] = 1.0  # the pooled reward, in the space's last coordinate
            result = fit_hierarchical(
                [(d @ self.space, t) for d, t in users],
                cfg,
                texts=texts,
                mean=start,
                mean_l2=mean_l2,
                progress=progress,
            )
        self.population = result.prior
        self._cache_scoring()
        for u, post in zip(rows, result.posteriors):
            self.users[u] = self._state(post)
        spectrum = np.sum(self.population.factors**2, axis=0)
        sel = result.selection
        rank_used = int(np.sum(spectrum > 0))
        return {
            "mean_l2": result.mean_l2,
            "em_iterations": result.em.iterations,
            "em_iterations_kept": result.em_iterations_kept,
            "log_evidence_per_comparison": result.em.history[-1] if result.em.history else None,
            "em_noise_var": result.em.prior.noise,
            "noise_var": self.population.noise,
            "mean_scale": sel.mean_scale if sel else 1.0,
            "space_dim": self.population.dim,
            "rank_used": rank_used,
            "rank_reason": rank_reason(rank_used, cfg.rank, sel, result.em_iterations_kept),
            "selected_on": "new-item pairs" if texts is not None else "held-out pairs",
            "validation_loglik": sel.score if sel else None,
            "factor_var_top": float(spectrum[0]) if len(spectrum) else 0.0,
            "factor_var_sum": float(spectrum.sum()),
        }

    def _state(self, post: Posterior) -> UserState:
        """The user's weights on the standardised features (``Q v`` in a difference space), their
        posterior variances (a variance, as UserState says) and coordinates along the factors."""
        prior = self.population
        coords = {}
        if prior.rank:
            norms = np.sum(prior.factors**2, axis=0)
            z = (post.weights - prior.mean) @ prior.factors / np.where(norms > 0, norms, 1.0)
            coords = {f"factor{j}": float(v) for j, v in enumerate(z)}
        if self.space is None:
            weights, variance = post.weights, post.cov_diag(prior)
        else:
            cov = prior.dense() - post.cov_correction()
            weights = self.space @ post.weights
            variance = np.maximum(np.sum((self.space @ cov) * self.space, axis=1), 0.0)
        return UserState(
            vector=weights.astype(np.float32),
            uncertainty=variance.astype(np.float32),
            weights=coords or None,
        )

    def _embed_user(self, data: PreferenceData) -> UserState:
        delta, target = self._deltas(data)
        if self.space is not None:
            delta = delta @ self.space
        return self._state(
            laplace_posterior(delta, target, self.population, max_iter=self.config.onboard_max_iter)
        )

    @property
    def vector_dim(self) -> int:
        return int(self.dim or 0)

    def prior(self) -> UserState:
        self.check_fitted()
        p = self.population
        if self.space is None:
            return UserState(
                vector=p.mean.astype(np.float32), uncertainty=p.diag().astype(np.float32)
            )
        variance = np.sum((self.space @ p.dense()) * self.space, axis=1)
        return UserState(
            vector=(self.space @ p.mean).astype(np.float32),
            uncertainty=variance.astype(np.float32),
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
            **({} if self.space is None else {"space": self.space.astype(np.float32)}),
        }

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.scaler = Standardizer.from_state(state)
        self.population = GaussianPrior(
            np.asarray(state["prior.mean"], dtype=np.float64),
            np.asarray(state["prior.factors"], dtype=np.float64),
            float(state["prior.noise"][0]),
        )
        self.space = np.asarray(state["space"], dtype=np.float64) if "space" in state else None
        self._cache_scoring()


def rank_reason(rank_used: int, rank: int, selection: Any, em_iterations_kept: int) -> str:
    """Why the prior has the rank it has, in words (for the fit metrics and the bench)."""
    if rank == 0:
        return "rank=0 configured: isotropic prior only"
    if selection is None:
        return f"too few users to hold any out: EM's prior kept with {rank_used} factors"
    if rank_used > 0:
        return (
            f"{rank_used} factors kept (EM iteration {em_iterations_kept}): they predict held-out "
            "users' new-item comparisons better than the isotropic prior"
        )
    if em_iterations_kept == 0:
        return (
            "no factor kept: at no EM checkpoint did the learned factors predict held-out users' "
            "new-item comparisons better than the isotropic start prior (log-lik "
            f"{selection.score:.4f}/comparison); the model is the per-user residual around the "
            "population reward"
        )
    with_factors = [score for _, q, _, score in selection.table if q > 0]
    best = max(with_factors) if with_factors else float("nan")
    return (
        "no factor kept: on held-out users' new-item comparisons the isotropic prior "
        f"(log-lik {selection.score:.4f}/comparison) predicted better than any low-rank one "
        f"(best {best:.4f}); the model is the per-user residual around the population reward"
    )
