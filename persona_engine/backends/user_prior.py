"""The population's distribution of simplex user weights, for MAP onboarding (``lore``, ``pal``).

A user's weights live on the simplex, ``w = softmax(theta)``; onboarding optimises ``theta``. The
logits are identified only up to a shift (``softmax(theta + c) = softmax(theta)``), so the
population is described in the centred log-ratio coordinates ``clr(w) = log w - mean_j log w_j``
(Aitchison 1982, "The statistical analysis of compositional data", J. R. Stat. Soc. B 44(2)),
which are the logits with their shift removed. After ``fit`` a Gaussian ``N(m, S)`` is fitted to
the training users' ``clr(w_u)``; MAP onboarding then minimises (``nll`` the backend's loss)

    sum_i nll_i(theta) + 1/2 (theta - m)^T (c S)^{-1} (theta - m).

``S`` is singular along the all-ones direction (the shift); a small ridge makes it invertible, and
the large precision it leaves along that direction pins the free shift of ``theta`` at ``m``'s
(which changes no weight).

The scale ``c`` is chosen, not assumed. The training users' weights are unregularised joint fits,
so ``S`` describes how far apart their fits ended, not how far a new user's *true* weights are
from ``m``: taken at face value (``c = 1``) it is wide and MAP behaves like the published
maximum-likelihood onboarding. :func:`choose_prior_scale` picks ``c`` on a grid by what onboarding
is for, predicting a user's comparisons on texts they have not rated from a few shots: a probe
model is fitted without a held-out share of the training users (:func:`onboard_prior_scale`),
and each held-out user is split by text into candidate shots and held-out pairs that share no
text with them; every candidate ``c`` onboards each user from ``k`` shots (``k`` in
:data:`SHOT_COUNTS`) and is scored by the mean held-out log-likelihood, averaged over users and
``k`` (Stone 1974, cross-validatory choice). Onboarding costs about a millisecond, so the search
itself costs a second or two; the probe's fit costs most of one more ``fit``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field

from .data import PreferenceData

#: the type of a backend's ``onboard_prior_scale`` option: a positive multiplier, or "auto"
PriorScale = Annotated[float, Field(gt=0)] | Literal["auto"]


def prior_scale_field() -> Any:
    """The ``onboard_prior_scale`` option of a backend with MAP onboarding (``lore``, ``pal``)."""
    return Field(
        "auto",
        description=(
            "Multiplier c of the covariance S of the population prior used by onboarding='map' "
            "(below 1 trusts the population more, above 1 the shots). 'auto' chooses c at fit "
            "time from persona_engine.backends.user_prior.SCALE_GRID by held-out prediction on "
            "training users (onboard from 1, 5 and 20 shots, score pairs sharing no text with "
            "them); fit reports the choice as onboard_prior_scale."
        ),
    )


WEIGHT_FLOOR = 1e-6  # weights below this count as this before the log (a vertex is not -inf)
RIDGE = 1e-2  # ridge added to S, as a share of its average variance

#: candidate multipliers ``c`` of the prior's covariance (small: trust the population, large: the shots)
SCALE_GRID = (1 / 4096, 1 / 1024, 1 / 256, 1 / 64, 1 / 16, 1 / 4, 1.0, 4.0)
#: shot counts each candidate is scored at (the benchmark reports 1, 5, 10 and 20)
SHOT_COUNTS = (1, 5, 20)
HELD_OUT_SHARE = 0.2  # share of the training users held out of the probe fit to choose the scale
MAX_USERS = 64  # at most this many (enough to rank a handful of candidates)
MIN_USERS = 4  # with fewer users on either side the scale is not chosen (c = 1)
MIN_HELD_OUT = 2  # a user needs at least this many held-out pairs sharing no text with the shots


def centred_logits(weights: np.ndarray) -> np.ndarray:
    """``clr(w) = log w - mean(log w)`` for rows of simplex weights."""
    logs = np.log(np.maximum(np.asarray(weights, dtype=np.float64), WEIGHT_FLOOR))
    return logs - logs.mean(axis=-1, keepdims=True)


def _saved_precision(a: np.ndarray) -> np.ndarray:
    """Held at the precision it is saved in, so a loaded model onboards identically."""
    return np.asarray(a, dtype=np.float32).astype(np.float64)


@dataclass
class LogitPrior:
    """``N(mean, precision^-1)`` over a user's centred logits."""

    mean: np.ndarray  # (K,)
    precision: np.ndarray  # (K, K)

    @classmethod
    def fit(cls, weights: np.ndarray, scale: float = 1.0) -> LogitPrior:
        """The Gaussian of the rows' centred logits, its covariance times ``scale``, plus a ridge."""
        x = centred_logits(weights)
        k = x.shape[1]
        mean = x.mean(axis=0)
        cov = (x - mean).T @ (x - mean) / max(len(x), 1)
        ridge = RIDGE * max(float(np.trace(cov)) / k, 1e-4)
        precision = np.linalg.inv(cov + ridge * np.eye(k))
        return cls(_saved_precision(mean), _saved_precision(precision)).scaled(scale)

    def scaled(self, scale: float) -> LogitPrior:
        """The same prior with its covariance times ``scale`` (its precision divided by it)."""
        return LogitPrior(self.mean, _saved_precision(self.precision / scale))

    def logit_std(self) -> float:
        """Root mean variance of the centred logits (the prior's width)."""
        return float(np.sqrt(np.trace(np.linalg.inv(self.precision)) / len(self.mean)))

    def state(self, prefix: str = "user_prior") -> dict[str, np.ndarray]:
        return {
            f"{prefix}.mean": self.mean.astype(np.float32),
            f"{prefix}.precision": self.precision.astype(np.float32),
        }

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray], prefix: str = "user_prior") -> LogitPrior:
        return cls(
            np.asarray(state[f"{prefix}.mean"], dtype=np.float64),
            np.asarray(state[f"{prefix}.precision"], dtype=np.float64),
        )


#: (candidate shots, held-out pairs sharing no text with them) of one user
Task = tuple[PreferenceData, PreferenceData]


def held_out_tasks(
    data: PreferenceData, *, shot_counts: tuple[int, ...] = SHOT_COUNTS, seed: int = 0
) -> list[Task]:
    """Every user of ``data`` split by text, as the benchmark splits an unseen user: candidate
    shots (the first ``max(shot_counts)`` of a seeded shuffle of their comparisons, fewer when
    they have fewer than twice that) and held-out pairs sharing no text with any candidate shot.
    Users left with fewer than :data:`MIN_HELD_OUT` held-out pairs are skipped. Without content
    hashes every other pair counts as held out."""
    rng = np.random.default_rng(seed)
    tasks: list[Task] = []
    for rows in data.rows_of_users().values():
        r = rows[rng.permutation(len(rows))]
        n_shots = min(max(shot_counts), len(r) // 2)
        if n_shots < 1:
            continue
        shots, rest = r[:n_shots], r[n_shots:]
        chosen, rejected = data.chosen_hash, data.rejected_hash
        if chosen is None or rejected is None:  # no content hashes: every pair counts as new
            held = rest
        else:
            rated = {chosen[i] for i in shots} | {rejected[i] for i in shots}
            held = np.array(
                [i for i in rest if chosen[i] not in rated and rejected[i] not in rated],
                dtype=np.int64,
            )
        if len(held) >= MIN_HELD_OUT:
            tasks.append((data.subset(shots), data.subset(held)))
    return tasks


def split_users(
    data: PreferenceData, seed: int, share: float = HELD_OUT_SHARE, most: int = MAX_USERS
) -> tuple[PreferenceData, PreferenceData] | None:
    """(fitting rows, held-out users' rows): a seeded ``share`` of the users (at most ``most``,
    at least :data:`MIN_USERS` on each side), or None when there are too few users."""
    n_out = min(most, int(round(share * data.n_users)))
    if n_out < MIN_USERS or data.n_users - n_out < MIN_USERS:
        return None
    out = set(np.random.default_rng(seed).choice(data.n_users, n_out, replace=False).tolist())
    held = np.isin(data.user_index, list(out))
    return data.subset(np.nonzero(~held)[0]), data.subset(np.nonzero(held)[0])


@dataclass
class ScaleChoice:
    """The chosen covariance multiplier and every candidate's mean held-out log-likelihood."""

    scale: float
    scores: dict[float, float] = field(default_factory=dict)
    n_users: int = 0

    def metrics(self) -> dict[str, object]:
        return {
            "onboard_prior_scale": self.scale,
            "onboard_prior_scale_loglik": self.scores.get(self.scale, float("nan")),
            "onboard_prior_scale_users": self.n_users,
            "onboard_prior_scale_grid": {f"{c:g}": round(v, 5) for c, v in self.scores.items()},
        }


def choose_prior_scale(
    base: LogitPrior,
    tasks: list[Task],
    onboard: Callable[[PreferenceData, LogitPrior], np.ndarray],
    margins: Callable[[np.ndarray, PreferenceData], np.ndarray],
    *,
    grid: tuple[float, ...] = SCALE_GRID,
    shot_counts: tuple[int, ...] = SHOT_COUNTS,
) -> ScaleChoice:
    """The multiplier ``c`` in ``grid`` of ``base``'s covariance whose MAP onboarding
    (``onboard(shots, prior) -> user vector``) best predicts the held-out pairs of ``tasks``
    (``margins(vector, pairs)`` are the model's logits ``r(chosen) - r(rejected)``): the mean
    Bradley-Terry log-likelihood per held-out pair, averaged over users and shot counts. Ties
    (to 1e-6) go to the smaller ``c``: when the held-out users cannot tell the candidates apart,
    they agree with the population. Without tasks, ``c = 1``."""
    if not tasks:
        return ScaleChoice(1.0)
    scores: dict[float, float] = {}
    for c in grid:
        prior = base.scaled(c)
        per_task = []
        for shots, held in tasks:
            target = 0.5 + 0.5 * np.asarray(held.strength, dtype=np.float64)
            for k in sorted({min(k, len(shots)) for k in shot_counts}):
                m = np.asarray(
                    margins(onboard(shots.subset(np.arange(k)), prior), held), np.float64
                )
                nll = np.logaddexp(0.0, -m) + (1.0 - target) * m
                per_task.append(-float(nll.mean()))
        scores[c] = float(np.mean(per_task))
    best = max(grid, key=lambda c: (round(scores[c], 6), -c))
    return ScaleChoice(best, scores, len(tasks))


def onboard_prior_scale(
    backend: Any, data: PreferenceData, seed: int
) -> tuple[float, dict[str, Any]]:
    """``(c, fit metrics)`` for a lore/pal ``backend`` fitted on ``data``: its
    ``onboard_prior_scale`` option when that is a number (or 1 with ``onboarding="published"``,
    which uses no prior), else chosen as follows.

    A probe of the same backend and options (``onboarding="map"``, ``c = 1``) is fitted on the
    users outside a held-out :func:`split_users` share; the held-out users, new to it as a product's
    new users are, are split by :func:`held_out_tasks` and :func:`choose_prior_scale` picks ``c``
    under the probe's prior. Held-out pairs of *training* users would not do: the shared
    parameters were fitted on those users' other comparisons, which makes trusting their shots
    look better than it is for a new user (on POPQUORN they chose ``c = 1`` where new users want
    ``c`` near 0). Costs one more fit on ~80% of the users."""
    cfg = backend.config
    if cfg.onboard_prior_scale != "auto":
        return float(cfg.onboard_prior_scale), {"onboard_prior_scale": cfg.onboard_prior_scale}
    if cfg.onboarding != "map":
        return 1.0, {
            "onboard_prior_scale": 1.0,
            "onboard_prior_scale_reason": "published onboarding",
        }
    parts = split_users(data, seed)
    if parts is None:
        return 1.0, {"onboard_prior_scale": 1.0, "onboard_prior_scale_reason": "too few users"}
    fitting, held = parts
    probe = type(backend)(cfg.model_copy(update={"onboard_prior_scale": 1.0}))
    probe.fit(fitting)
    base: LogitPrior = probe.user_prior

    def onboard(shots: PreferenceData, prior: LogitPrior) -> np.ndarray:
        probe.user_prior = prior
        return np.asarray(probe.embed_user(shots).vector)

    choice = choose_prior_scale(
        base, held_out_tasks(held, seed=seed), onboard, probe.preference_logits
    )
    return choice.scale, choice.metrics()
