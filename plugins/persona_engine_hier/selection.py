"""Choosing the prior's scales by few-shot prediction on held-out training users.

EM (``trainer.py``) learns the *structure* of user variation, the mean ``mu`` and the
directions and variances ``V``; its isotropic variance ``s2`` maximises the Laplace evidence.
The evidence is the right criterion only when the Gaussian prior is the true distribution of
users. On real data it is not: a user's weights also carry idiosyncrasies (e.g. labels of the
very texts they rated, POPQUORN) that a single Gaussian cannot describe, and the evidence then
prefers too little residual freedom. So the scales are set by what the product needs: predicting
a user's other comparisons after onboarding them from a few.

Held-out training users (never used by EM) are onboarded from their first ``k`` comparisons for
``k`` in :data:`SHOT_GRID` (and from 70% of them, the seen-user setting), and the mean
log-likelihood of their remaining comparisons scores each candidate prior

    N(c_mu * mu, V_q V_q^T + s2 I),  c_mu in MEAN_SCALES, s2 in NOISE_GRID,

where ``V_q`` keeps the ``q`` leading factors of ``V`` (``q`` in 0, 1, 2, 4, ... up to the rank),
for the EM prior at several iteration counts (EM that runs long overfits ``V`` to the training
users: its evidence keeps rising while held-out prediction falls, so the iteration count is
chosen the same way, i.e. early stopping), and the best is kept (Stone 1974, cross-validatory choice; for priors, the "predictive"
alternative to type-II maximum likelihood, e.g. Bernardo & Smith 1994, ch. 6). ``q = 0``
recovers the isotropic residual model, so the selection can fall back to it when the low-rank
structure does not carry over to new users.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .loss import bt_nll
from .model import GaussianPrior, posterior_mode

SHOT_GRID = (1, 5, 10, 20)
NOISE_GRID = (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0)
MEAN_SCALES = (1.0, 0.5, 0.25)
MAX_TASKS = 200


def rank_grid(rank: int) -> list[int]:
    """0, 1, 2, 4, ... and ``rank`` itself."""
    out, q = {0, rank}, 1
    while q < rank:
        out.add(q)
        q *= 2
    return sorted(out)


@dataclass
class Selection:
    prior: GaussianPrior
    score: float
    mean_scale: float
    rank: int
    noise: float
    table: list[tuple[float, int, float, float]]  # (mean_scale, rank, noise, score)


Task = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def make_tasks(
    users: list[tuple[np.ndarray, np.ndarray]],
    seed: int,
    texts: list[tuple[list[str], list[str]]] | None = None,
) -> list[Task]:
    """(shot rows, shot targets, held-out rows, held-out targets) for every user and shot count
    (a seeded sample of :data:`MAX_TASKS` of them when there are more).

    With ``texts`` (each user's chosen and rejected content hashes, row by row) the held-out rows
    are new items: those that share no text with any of the user's shots, which is what a product
    needs predicted (a user's labels on texts they already rated reward remembering them, and
    select a prior that lets users move freely along their shots' differences). A shot count that
    leaves no such row is skipped."""
    rng = np.random.default_rng(seed)
    tasks = []
    for u, (delta, target) in enumerate(users):
        n = len(target)
        if n < 4:
            continue
        order = rng.permutation(n)
        cuts = sorted({k for k in SHOT_GRID if k <= n - 2} | {int(round(0.7 * n))})
        for k in cuts:
            shot, rest = order[:k], order[k:]
            if texts is not None:
                chosen, rejected = texts[u]
                seen = {chosen[i] for i in shot} | {rejected[i] for i in shot}
                rest = np.array(
                    [i for i in rest if chosen[i] not in seen and rejected[i] not in seen],
                    dtype=np.int64,
                )
                if len(rest) == 0:
                    continue
            tasks.append((delta[shot], target[shot], delta[rest], target[rest]))
    if len(tasks) > MAX_TASKS:  # enough to rank the candidates; keeps the fit time bounded
        tasks = [tasks[i] for i in sorted(rng.choice(len(tasks), MAX_TASKS, replace=False))]
    return tasks


def predictive_score(
    prior: GaussianPrior,
    tasks: list[Task],
    starts: list[np.ndarray | None] | None = None,
) -> tuple[float, list[np.ndarray | None]]:
    """Mean held-out log-likelihood per comparison, averaged over tasks (each task counts once),
    and each task's dual coefficients (warm starts for the next, similar candidate)."""
    scores: list[float] = []
    duals: list[np.ndarray | None] = []
    for (d_shot, t_shot, d_rest, t_rest), start in zip(tasks, starts or [None] * len(tasks)):
        w, a = posterior_mode(d_shot, t_shot, prior, start=start)
        duals.append(a)
        scores.append(-float(np.mean(bt_nll(d_rest @ w, t_rest))))
    return float(np.mean(scores)), duals


def select_scales(prior: GaussianPrior, tasks: list[Task]) -> Selection:
    """The candidate prior (see the module docstring) that predicts the held-out tasks best, by
    coordinate ascent over ``s2``, ``c_mu`` and ``q`` (two rounds, from the EM prior with all its
    factors): about 35 candidates instead of the full grid's 150, the same optimum in our runs."""
    cache: dict[tuple[float, int, float], float] = {}
    table: list[tuple[float, int, float, float]] = []
    duals: dict[tuple[float, int], list[np.ndarray | None]] = {}

    def score(c_mu: float, q: int, s2: float) -> float:
        key = (c_mu, q, s2)
        if key not in cache:
            cand = GaussianPrior(prior.mean * c_mu, prior.factors[:, :q], s2)
            cache[key], duals[(c_mu, q)] = predictive_score(cand, tasks, duals.get((c_mu, q)))
            table.append((c_mu, q, s2, cache[key]))
        return cache[key]

    noises = sorted(set(NOISE_GRID) | {prior.noise})
    c_mu, q, s2 = 1.0, prior.rank, prior.noise
    for _ in range(2):
        s2 = max(noises, key=lambda v: score(c_mu, q, v))
        c_mu = max(MEAN_SCALES, key=lambda v: score(v, q, s2))
        q = max(rank_grid(prior.rank), key=lambda v: score(c_mu, v, s2))
    s2 = max(noises, key=lambda v: score(c_mu, q, v))
    best = GaussianPrior(prior.mean * c_mu, prior.factors[:, :q], s2)
    return Selection(best, cache[(c_mu, q, s2)], c_mu, q, s2, table)
