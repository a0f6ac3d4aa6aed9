"""Context sets for VPL: for each training comparison, a random set of the same user's others.

As in the paper, every training example is decoded under a latent inferred from a fresh random
context of that user's labelled comparisons (the official UF-P-4 setting draws 2-8 of them). The
example itself is never in its own context, and contexts come only from training rows, so the
validation comparisons stay unseen.
"""

from __future__ import annotations

import numpy as np

# Pools wider than this are sampled with replacement (no (n x pool) key matrix).
KEYED_SAMPLING_MAX_POOL = 1024


class ContextSampler:
    """Draws context sets from ``pool_rows`` (training rows), grouped by user."""

    def __init__(self, user_index: np.ndarray, pool_rows: np.ndarray, n_users: int):
        self.user_index = np.asarray(user_index, dtype=np.int64)
        pool_rows = np.asarray(pool_rows, dtype=np.int64)
        self.order = pool_rows[np.argsort(self.user_index[pool_rows], kind="stable")]
        self.counts = np.bincount(self.user_index[pool_rows], minlength=n_users)
        self.starts = np.concatenate([[0], np.cumsum(self.counts)[:-1]]).astype(np.int64)
        self.position = np.full(len(self.user_index), -1, dtype=np.int64)
        self.position[self.order] = (
            np.arange(len(self.order)) - self.starts[self.user_index[self.order]]
        )

    def sample(
        self,
        rows: np.ndarray,
        rng: np.random.Generator,
        min_size: int,
        max_size: int,
        distribution: str = "uniform",
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(context_rows (n, max_size), mask (n, max_size))`` for target ``rows``: each row gets
        between ``min_size`` and ``max_size`` other pool comparisons of its user (fewer when
        the user has fewer), drawn without replacement; the size is uniform, or uniform in its
        logarithm (``distribution="log_uniform"``)."""
        users = self.user_index[rows]
        count, pos = self.counts[users], self.position[rows]
        available = count - (pos >= 0)
        size = np.minimum(
            context_sizes(rng, len(rows), min_size, max_size, distribution), available
        )
        width = int(count.max()) if len(rows) else 0
        if 0 < width <= KEYED_SAMPLING_MAX_POOL:
            keys = rng.random((len(rows), width))
            col = np.arange(width)
            keys[(col[None, :] >= count[:, None]) | (col[None, :] == pos[:, None])] = 2.0
            k = min(max_size, width)
            picked = (
                np.argpartition(keys, k - 1, axis=1)[:, :k]
                if k < width
                else np.arange(width)[None, :].repeat(len(rows), 0)
            )
            picked = np.take_along_axis(
                picked, np.argsort(np.take_along_axis(keys, picked, 1), axis=1), 1
            )  # valid ones first
            picked = np.pad(picked, ((0, 0), (0, max_size - picked.shape[1])))
        else:
            draw = (rng.random((len(rows), max_size)) * np.maximum(available, 1)[:, None]).astype(
                np.int64
            )
            picked = draw + ((pos[:, None] >= 0) & (draw >= pos[:, None]))
        mask = np.arange(max_size)[None, :] < size[:, None]
        index = np.clip(self.starts[users][:, None] + picked, 0, max(len(self.order) - 1, 0))
        context = self.order[index] if len(self.order) else np.zeros_like(index)
        return context, mask


def context_sizes(
    rng: np.random.Generator, n: int, min_size: int, max_size: int, distribution: str
) -> np.ndarray:
    """``n`` context sizes in ``[min_size, max_size]``: uniform, or ``floor(exp(u))`` with ``u``
    uniform on ``[log min_size, log(max_size + 1))`` (each doubling of the size equally likely)."""
    if distribution == "uniform":
        return rng.integers(min_size, max_size + 1, size=n)
    u = rng.uniform(np.log(min_size), np.log(max_size + 1), size=n)
    return np.clip(np.floor(np.exp(u)).astype(np.int64), min_size, max_size)
