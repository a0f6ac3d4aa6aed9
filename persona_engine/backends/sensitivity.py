"""Swap sensitivity: does a personalized reward depend on the user at all?

    swap_sensitivity = mean_u mean_{i in u} | m_i(s_u) - m_i(s_pi(u)) |,
    m_i(s) = r(x_i, y_c,i; s) - r(x_i, y_r,i; s),

the mean absolute change of the reward margins of a user's comparisons when their state ``s_u``
(a latent, a weight vector) is replaced by another user's (``pi`` a random derangement of the
users), averaged per user. It is 0 exactly when the margin ignores the user. ``relative`` divides
it by the mean ``|m_i(s_u)|`` (at least 1, so a model unsure of everything does not divide by ~0),
so it reads the same at any reward scale: on two groups with opposite tastes a working model
scores about 1, a collapsed one near 0. Used by ``vpl``'s fit metrics (posterior collapse) and by
the conformance kit's ``user_sensitivity`` check.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .base import UserState
from .data import PreferenceData


def derangement(n: int, rng: np.random.Generator) -> np.ndarray:
    """A random permutation of ``range(n)`` with no fixed point (one cycle through a shuffle)."""
    order = rng.permutation(n)
    partner = np.empty(n, dtype=np.int64)
    partner[order] = np.roll(order, -1)
    return partner


Margins = Callable[[UserState, PreferenceData], np.ndarray]


def swap_sensitivity(
    margins: Margins,
    states: dict[str, UserState],
    comparisons: dict[str, PreferenceData],
    seed: int = 0,
) -> tuple[float, float]:
    """``(swap_sensitivity, relative)`` (see the module docstring): user ``u``'s margins
    ``margins(state, data)`` (e.g. a fitted backend's ``preference_logits``) on ``comparisons[u]``
    under ``states[u]`` against under another user's state.
    Users missing from either mapping are skipped; fewer than two users give ``(0.0, 0.0)``."""
    users = [u for u in comparisons if u in states and len(comparisons[u])]
    if len(users) < 2:
        return 0.0, 0.0
    partner = derangement(len(users), np.random.default_rng(seed))
    change, size = [], []
    for i, u in enumerate(users):
        own = margins(states[u], comparisons[u])
        swapped = margins(states[users[partner[i]]], comparisons[u])
        change.append(float(np.mean(np.abs(own - swapped))))
        size.append(float(np.mean(np.abs(own))))
    absolute = float(np.mean(change))
    return absolute, absolute / max(float(np.mean(size)), 1.0)
