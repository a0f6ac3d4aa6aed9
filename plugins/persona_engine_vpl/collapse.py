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

from persona_engine.backends.sensitivity import Margins, derangement, swap_sensitivity

__all__ = ["Margins", "derangement", "swap_sensitivity"]
