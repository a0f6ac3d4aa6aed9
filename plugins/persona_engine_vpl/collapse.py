"""Swap sensitivity: does the reward depend on the user's latent at all?

Posterior collapse in VPL (Poddar et al. 2024) means the decoder predicts preferences from
``(x, y)`` alone and ignores ``z``: every user gets the same reward whatever their comparisons.
The share of "active units" (how much the encoder's mean varies across users, Burda et al. 2016)
does not detect it: the encoder can spread the users' means widely while the decoder ignores
them. What matters is the reward, so we measure it there, by swapping contexts (in the spirit of
swap-guided preference learning, SPL, arXiv 2603.12595):

    swap_sensitivity = mean_u mean_{i in u} | m_i(z_u) - m_i(z_pi(u)) |,
    m_i(z) = r(x_i, y_c,i, z) - r(x_i, y_r,i, z),

the mean absolute change of the reward margin of a user's comparisons when their latent is
replaced by another user's (``pi`` a random derangement of the users), averaged per user. It is 0
exactly when the margin ignores z. ``relative`` divides it by the mean ``|m_i(z_u)|`` (at least 1,
so a model whose margins are all near 0, unsure of everything, does not divide by ~0), so it
reads the same at any reward scale: on two groups with opposite tastes a working model scores
about 1 (half the swaps flip the margin), a collapsed one near 0.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from persona_engine.backends import PreferenceData, UserState


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
