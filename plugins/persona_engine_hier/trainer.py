"""Empirical Bayes for the population prior: Laplace EM over the training users.

The shared parameters ``(mu, V, s2)`` raise the marginal likelihood of the training users'
comparisons, ``sum_u log p(y_u | mu, Sigma)``, each user's weights integrated out, by EM with the
Laplace posterior in the E-step (the standard treatment of hierarchical generalised linear
models; e.g. Gelman et al., "Bayesian Data Analysis", 3rd ed., ch. 16; Bishop 2006, sec. 9.3):

- E-step: for each user, the posterior mode ``w^_u`` and covariance
  ``S_u = Sigma - G_u C_u G_u^T`` (:func:`.model.laplace_posterior`), warm-started.
- M-step: ``mu = mean_u w^_u``; the moment matrix ``M = mean_u [(w^_u - mu)(w^_u - mu)^T + S_u]``;
  the maximum-likelihood low-rank-plus-isotropic covariance for ``M`` is probabilistic PCA's
  closed form (Tipping & Bishop 1999, eq. 7-8): with ``M``'s eigenpairs in decreasing order,
  ``s2 = mean_{j > r} l_j`` and ``V = U_r (L_r - s2 I)^{1/2}``.

EM starts from the pooled Bradley-Terry fit whose L2 precision is set by the evidence framework
(MacKay 1992, "The evidence framework applied to classification networks", Neural Computation
4(5)): the fixed point of ``lambda = gamma / |w|^2``, ``gamma = d - lambda tr(H^{-1})``. Without it
the mean of a few thousand comparisons in a few hundred dimensions is overfitted (measured on
POPQUORN's unseen users: 0.738 at lambda = 1, 0.743-0.750 at the evidence's lambda ~ 200), and
from the isotropic ``s2`` of highest evidence.

EM's evidence keeps rising long after the prior stops predicting new users better (it overfits
``V`` to the training users), so the prior is checked at :data:`CHECKPOINTS` by few-shot
prediction on held-out training users (:mod:`.selection`, which also sets the scales), and the
best checkpoint is kept: early stopping on the quantity the product needs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .config import HierConfig
from .loss import bt_curvature, bt_gradient
from .model import GaussianPrior, Posterior, laplace_posterior
from .selection import Selection, make_tasks, select_scales

CHECKPOINTS = (5, 10, 20, 30, 45)  # EM iterations at which the prior is checked


@dataclass
class EMResult:
    prior: GaussianPrior
    posteriors: list[Posterior]
    iterations: int
    history: list[float] = field(default_factory=list)  # log evidence per comparison


def pooled_map(
    delta: np.ndarray,
    target: np.ndarray,
    l2: float,
    *,
    start: np.ndarray | None = None,
    max_iter: int = 50,
) -> tuple[np.ndarray, np.ndarray]:
    """One logistic model for all comparisons with an N(0, I / l2) prior, by Newton's method in
    the primal; returns the weights and the Hessian at them."""
    d = delta.shape[1]
    w = np.zeros(d) if start is None else start.copy()
    hess = np.eye(d)
    for _ in range(max_iter):
        f = delta @ w
        grad = delta.T @ bt_gradient(f, target) + l2 * w
        hess = (delta * bt_curvature(f)[:, None]).T @ delta + l2 * np.eye(d)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.max(np.abs(step)) < 1e-8:
            break
    return w, hess


def evidence_l2(
    delta: np.ndarray, target: np.ndarray, *, max_iter: int = 30, rtol: float = 1e-3
) -> tuple[float, np.ndarray]:
    """The prior precision of the pooled model that maximises its evidence (MacKay's fixed-point
    re-estimation), and the pooled MAP weights at it."""
    d = delta.shape[1]
    lam, w = 1.0, None
    for _ in range(max_iter):
        w, hess = pooled_map(delta, target, lam, start=w)
        gamma = d - lam * float(np.trace(np.linalg.inv(hess)))
        new = float(np.clip(gamma / max(float(w @ w), 1e-12), 1e-6, 1e8))
        done = abs(new - lam) <= rtol * lam
        lam = new
        if done:
            break
    w, _ = pooled_map(delta, target, lam, start=w)
    return lam, w


def _mean_correction(posts: list[Posterior]) -> np.ndarray:
    """``mean_u G_u C_u G_u^T`` as one matrix product (rows of all users stacked)."""
    gs = np.concatenate([p.g for p in posts], axis=1)  # (d, N)
    gc = np.concatenate([p.g @ p.c for p in posts], axis=1)
    return gc @ gs.T / len(posts)


def ppca_fit(moment: np.ndarray, rank: int, noise_floor: float) -> tuple[np.ndarray, float]:
    """Maximum-likelihood ``(V, s2)`` of ``V V^T + s2 I`` for a second-moment matrix."""
    vals, vecs = np.linalg.eigh((moment + moment.T) / 2)
    vals, vecs = vals[::-1], vecs[:, ::-1]
    d = len(vals)
    rank = min(rank, d - 1)
    noise = max(float(np.mean(vals[rank:])), noise_floor)
    scale = np.sqrt(np.maximum(vals[:rank] - noise, 0.0))
    return vecs[:, :rank] * scale[None, :], noise


def fit_prior(
    users: list[tuple[np.ndarray, np.ndarray]],
    *,
    rank: int,
    max_iter: int,
    tol: float,
    noise_floor: float,
    start: GaussianPrior,
    checkpoints: tuple[int, ...] = (),
    on_checkpoint: Callable[[int, GaussianPrior], None] | None = None,
    progress: bool = False,
) -> EMResult:
    """EM for ``(mu, V, s2)`` on ``users``, a list of (delta rows, targets) per training user,
    from ``start``; ``on_checkpoint(iteration, prior)`` sees the prior after each M-step listed in
    ``checkpoints`` and after the last one."""
    from persona_engine.progress import progress_bar

    n_total = sum(len(t) for _, t in users)
    prior = start
    history: list[float] = []
    posts: list[Posterior] = []
    bar = progress_bar(total=max_iter, desc="hier EM", unit="iter", disable=not progress)
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007 (the count is returned)
        starts = [p.alpha for p in posts] if posts else [None] * len(users)
        posts = [laplace_posterior(d, t, prior, start=a) for (d, t), a in zip(users, starts)]
        evidence = sum(p.log_evidence for p in posts) / n_total
        history.append(evidence)
        bar.set_postfix({"log_evidence": round(evidence, 5), "s2": round(prior.noise, 5)})
        bar.update(1)
        if len(history) > 1 and history[-1] - history[-2] < tol:
            break
        weights = np.stack([p.weights for p in posts])
        mean = weights.mean(axis=0)
        centred = weights - mean
        moment = centred.T @ centred / len(posts) + prior.dense() - _mean_correction(posts)
        factors, noise = ppca_fit(moment, rank, noise_floor)
        prior = GaussianPrior(mean, factors, noise)
        if on_checkpoint is not None and (it in checkpoints or it == max_iter):
            on_checkpoint(it, prior)
    else:  # max_iter reached right after an M-step: the users' posteriors under the final prior
        posts = [laplace_posterior(d, t, prior) for d, t in users]
    bar.close()
    return EMResult(prior, posts, it, history)


def isotropic_noise(
    users: list[tuple[np.ndarray, np.ndarray]],
    mean: np.ndarray,
    grid: tuple[float, ...] = (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3),
) -> float:
    """The ``s2`` of the prior ``N(mean, s2 I)`` with the highest Laplace evidence (EM's start)."""
    dim = len(mean)

    def evidence(s2: float) -> float:
        prior = GaussianPrior(mean, np.zeros((dim, 0)), s2)
        return sum(laplace_posterior(d, t, prior).log_evidence for d, t in users)

    return max(grid, key=evidence)


@dataclass
class HierFit:
    prior: GaussianPrior
    posteriors: list[Posterior]
    em: EMResult
    selection: Selection | None
    mean_l2: float
    em_iterations_kept: int


def pooled_mean(
    users: list[tuple[np.ndarray, np.ndarray]], config: HierConfig
) -> tuple[float, np.ndarray]:
    """The pooled Bradley-Terry fit of every comparison (its L2 precision and weights)."""
    delta = np.concatenate([d for d, _ in users])
    target = np.concatenate([t for _, t in users])
    if config.mean_l2 is None:
        return evidence_l2(delta, target)
    return config.mean_l2, pooled_map(delta, target, config.mean_l2)[0]


def fit_hierarchical(
    users: list[tuple[np.ndarray, np.ndarray]],
    config: HierConfig,
    *,
    texts: list[tuple[list[str], list[str]]] | None = None,
    mean: np.ndarray | None = None,
    mean_l2: float = 0.0,
    progress: bool = False,
) -> HierFit:
    """The whole fit (see the module docstrings): the pooled model at its evidence-chosen
    precision (or the given ``mean``) and the evidence-chosen isotropic ``s2`` start EM on most
    training users; at the checkpoints the scales are chosen by few-shot prediction of the
    held-out ones' new-item comparisons (``texts``: each user's chosen and rejected hashes); the
    best checkpoint is kept; every training user's posterior under it."""
    cfg = config
    if mean is None:
        mean_l2, mean = pooled_mean(users, cfg)
    dim = users[0][0].shape[1]
    n_val = int(round(len(users) * cfg.validation_fraction))
    em_args: dict[str, Any] = {
        "rank": cfg.rank,
        "max_iter": cfg.max_iter,
        "tol": cfg.tol,
        "noise_floor": cfg.noise_floor,
        "progress": progress,
    }
    if n_val < 2 or len(users) - n_val < 2:
        start = GaussianPrior(mean, np.zeros((dim, cfg.rank)), isotropic_noise(users, mean))
        em = fit_prior(users, start=start, **em_args)
        posteriors = [laplace_posterior(d, t, em.prior) for d, t in users]
        return HierFit(em.prior, posteriors, em, None, mean_l2, em.iterations)
    order = np.random.default_rng(cfg.seed).permutation(len(users))
    val, fit = [users[i] for i in order[:n_val]], [users[i] for i in order[n_val:]]
    tasks = make_tasks(val, cfg.seed, None if texts is None else [texts[i] for i in order[:n_val]])
    start = GaussianPrior(mean, np.zeros((dim, cfg.rank)), isotropic_noise(fit, mean))
    best: list[tuple[Selection, int]] = [(select_scales(start, tasks), 0)]

    def checkpoint(it: int, prior: GaussianPrior) -> None:
        sel = select_scales(prior, tasks)
        if sel.score > best[0][0].score:
            best[0] = (sel, it)

    em = fit_prior(fit, start=start, checkpoints=CHECKPOINTS, on_checkpoint=checkpoint, **em_args)
    selection, kept = best[0]
    posteriors = [laplace_posterior(d, t, selection.prior) for d, t in users]
    return HierFit(selection.prior, posteriors, em, selection, mean_l2, kept)
