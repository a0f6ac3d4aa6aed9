"""Pairwise accuracy per user and pooled, over several seeds, with bootstrap intervals.

A comparison counts 1 when the model scores the chosen text above the rejected one, 0 when below,
and 1/2 on an exact tie (a model that cannot tell the two apart is at chance, not wrong).

Two accuracies of one seed's users:

- *per-user* (the headline, as the papers report): the mean over users of each user's accuracy
  on their test comparisons, so every user counts once;
- *pooled*: correct comparisons over all comparisons, so a user counts in proportion to their
  test comparisons.

Over seeds, a figure is the mean of the seeds' figures. Its 95% interval is a two-stage
percentile bootstrap (Efron & Tibshirani 1993, ch. 13; Davison & Hinkley 1997, sec. 3.8, for
the two stages): each replicate draws the seeds with replacement, and within each drawn seed its
users with replacement, recomputes the figure per seed and averages. With one seed this is the
plain bootstrap over users. A paired difference (``a`` minus ``b`` on the same users and test
comparisons: a backend against ``bt``, or one backend at ``k = 20`` against ``k = 1``) is computed
from the per-user differences ``acc_a(u) - acc_b(u)``, resampled the same way, so what users share
(an easy or hard test set) cancels.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

N_BOOTSTRAP = 1000


def correct(logits: np.ndarray) -> np.ndarray:
    """1 / 0.5 / 0 per comparison for ``r(chosen) - r(rejected)`` above / equal to / below 0."""
    logits = np.asarray(logits, dtype=np.float64)
    return np.where(logits > 0, 1.0, np.where(logits < 0, 0.0, 0.5))


@dataclass
class UserCounts:
    """Correct comparisons and comparisons per user, in a fixed user order (one seed)."""

    users: list[str]
    hits: np.ndarray
    total: np.ndarray

    @classmethod
    def from_scores(cls, per_user: Mapping[str, np.ndarray]) -> UserCounts:
        """From each user's 1 / 0.5 / 0 array; users without comparisons are left out."""
        users = [u for u in per_user if len(per_user[u])]
        hits = np.array([float(np.sum(per_user[u])) for u in users])
        total = np.array([float(len(per_user[u])) for u in users])
        return cls(users, hits, total)

    @property
    def n(self) -> int:
        return int(self.total.sum())

    def user_accuracy(self) -> np.ndarray:
        """Each user's accuracy."""
        return self.hits / self.total if len(self.users) else np.zeros(0)

    def accuracy(self) -> float | None:
        """Pooled accuracy."""
        return float(self.hits.sum() / self.total.sum()) if self.total.sum() > 0 else None

    def per_user_accuracy(self) -> float | None:
        """Mean over users of each user's accuracy."""
        return float(self.user_accuracy().mean()) if len(self.users) else None


Statistic = Callable[[int, np.ndarray], np.ndarray]  # (seed position, (B, n) user draws) -> (B,)


def _two_stage(sizes: Sequence[int], stat: Statistic, n_boot: int, seed: int) -> np.ndarray:
    """Bootstrap replicates of the mean over seeds of ``stat``: seeds drawn with replacement,
    then each drawn seed's users with replacement."""
    rng = np.random.default_rng(seed)
    n_seeds = len(sizes)
    pick = rng.integers(0, n_seeds, size=(n_boot, n_seeds))
    out = np.zeros(n_boot)
    for j in range(n_seeds):
        for s in np.unique(pick[:, j]):
            rows = pick[:, j] == s
            draws = rng.integers(0, sizes[s], size=(int(rows.sum()), sizes[s]))
            out[rows] += stat(int(s), draws)
    return out / n_seeds


def _percentiles(values: np.ndarray) -> list[float] | None:
    values = values[np.isfinite(values)]
    if not len(values):
        return None
    lo, hi = np.percentile(values, [2.5, 97.5])
    return [float(lo), float(hi)]


def _usable(per_seed: Sequence[UserCounts]) -> list[UserCounts]:
    return [c for c in per_seed if len(c.users)]


def per_user_ci(
    per_seed: Sequence[UserCounts], *, n_boot: int = N_BOOTSTRAP, seed: int = 0
) -> list[float] | None:
    """95% interval of the per-user accuracy averaged over seeds."""
    parts = _usable(per_seed)
    if not parts:
        return None
    accs = [c.user_accuracy() for c in parts]
    return _percentiles(
        _two_stage([len(a) for a in accs], lambda s, d: accs[s][d].mean(axis=1), n_boot, seed)
    )


def pooled_ci(
    per_seed: Sequence[UserCounts], *, n_boot: int = N_BOOTSTRAP, seed: int = 0
) -> list[float] | None:
    """95% interval of the pooled accuracy averaged over seeds."""
    parts = _usable(per_seed)
    if not parts:
        return None

    def stat(s: int, d: np.ndarray) -> np.ndarray:
        return parts[s].hits[d].sum(axis=1) / parts[s].total[d].sum(axis=1)

    return _percentiles(_two_stage([len(c.users) for c in parts], stat, n_boot, seed))


def bootstrap_ci(
    counts: UserCounts, *, n_boot: int = N_BOOTSTRAP, seed: int = 0
) -> list[float] | None:
    """95% interval of one seed's pooled accuracy, resampling users."""
    return pooled_ci([counts], n_boot=n_boot, seed=seed)


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def summarize(per_seed: Sequence[UserCounts], *, seed: int = 0) -> dict[str, Any]:
    """Per-user and pooled accuracy over seeds with their intervals, and every seed's figures."""
    per_user = [c.per_user_accuracy() for c in per_seed]
    pooled = [c.accuracy() for c in per_seed]
    return {
        "per_user": _mean(per_user),
        "per_user_ci95": per_user_ci(per_seed, seed=seed),
        "pooled": _mean(pooled),
        "pooled_ci95": pooled_ci(per_seed, seed=seed),
        "per_seed": {"per_user": per_user, "pooled": pooled},
        "users": [len(c.users) for c in per_seed],
        "comparisons": [c.n for c in per_seed],
        # every user's hits and test pairs per seed, so two runs on the same seeds (another
        # encoder, another option) can be compared user by user: :func:`paired_runs`
        "user_hits": [
            {u: [float(h), float(t)] for u, h, t in zip(c.users, c.hits, c.total)} for c in per_seed
        ],
    }


def counts_from_json(user_hits: Sequence[dict[str, list[float]]]) -> list[UserCounts]:
    """The per-seed :class:`UserCounts` kept in a result document's ``user_hits``."""
    return [
        UserCounts(
            list(seed),
            np.array([v[0] for v in seed.values()], dtype=float),
            np.array([v[1] for v in seed.values()], dtype=float),
        )
        for seed in user_hits
    ]


def paired_runs(
    a: Sequence[dict[str, list[float]]],
    b: Sequence[dict[str, list[float]]],
    *,
    seed: int = 0,
) -> dict[str, Any] | None:
    """Per-user ``a - b`` between two runs' ``user_hits`` (the same seeds), on the users both
    scored, with the paired two-stage bootstrap interval of :func:`paired_difference`."""
    if len(a) != len(b):
        raise ValueError("paired runs need the same number of seeds")
    left, right = [], []
    for ca, cb in zip(counts_from_json(a), counts_from_json(b)):
        common = [u for u in ca.users if u in set(cb.users)]
        ia = {u: i for i, u in enumerate(ca.users)}
        ib = {u: i for i, u in enumerate(cb.users)}
        pick_a = [ia[u] for u in common]
        pick_b = [ib[u] for u in common]
        left.append(UserCounts(common, ca.hits[pick_a], ca.total[pick_a]))
        right.append(UserCounts(common, cb.hits[pick_b], cb.total[pick_b]))
    return paired_difference(left, right, seed=seed)


def paired_user_differences(a: UserCounts, b: UserCounts) -> np.ndarray:
    """``acc_a(u) - acc_b(u)`` for each user (the same users, in the same order)."""
    if a.users != b.users:
        raise ValueError("paired figures need the same users in the same order")
    return a.user_accuracy() - b.user_accuracy()


def paired_difference(
    a: Sequence[UserCounts], b: Sequence[UserCounts], *, n_boot: int = N_BOOTSTRAP, seed: int = 0
) -> dict[str, Any] | None:
    """Per-user-averaged ``a - b`` over seeds, its 95% interval from the per-user differences
    (two-stage bootstrap), and every seed's figure."""
    diffs = [paired_user_differences(x, y) for x, y in zip(a, b)]
    per_seed = [float(d.mean()) if len(d) else None for d in diffs]
    usable = [d for d in diffs if len(d)]
    if not usable:
        return None
    ci = _percentiles(
        _two_stage(
            [len(d) for d in usable], lambda s, idx: usable[s][idx].mean(axis=1), n_boot, seed
        )
    )
    return {"diff": _mean(per_seed), "ci95": ci, "per_seed": per_seed}


def paired_difference_ci(
    a: UserCounts, b: UserCounts, *, n_boot: int = N_BOOTSTRAP, seed: int = 0
) -> list[float] | None:
    """95% interval of one seed's per-user-averaged ``a - b``, resampling users jointly."""
    result = paired_difference([a], [b], n_boot=n_boot, seed=seed)
    return None if result is None else result["ci95"]
