"""Conformance measures that compare a backend's preferences with the synthetic population's truth.

- :func:`prompt_correlation`: for a backend that reads the prompt, how its scores of the same
  responses change from a prompt of one topic to a prompt of the other, against the true change;
- :func:`opposite_agreement`: for two users of opposite groups, on the pairs they truly disagree
  about, how often the model gives each user their own preferred response (and so the other's
  dispreferred).

Both are pure functions of a fitted backend, user states and the population; the checks that set
pass marks on them are :meth:`~persona_engine.testing.backend_checks.ConformanceRun.check_prompt_dependence`
and :meth:`~persona_engine.testing.backend_checks.ConformanceRun.check_opposite_users`.
"""

from __future__ import annotations

import numpy as np

from ..backends.base import RewardBackend, UserState
from ..backends.data import PreferenceData
from .synthetic import SyntheticPopulation


def topic_prompts(
    pop: SyntheticPopulation, data: PreferenceData, pairs: int
) -> list[tuple[int, int]]:
    """Up to ``pairs`` (row of a topic +1 prompt, row of a topic -1 prompt) of ``data``: prompts
    the population tells apart."""
    topic = pop.topic(data.prompt)
    plus, minus = np.flatnonzero(topic > 0), np.flatnonzero(topic < 0)
    n = min(pairs, len(plus), len(minus))
    return [(int(plus[i]), int(minus[i])) for i in range(n)]


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation; 0 when either side does not vary (a reward that ignores the prompt)."""
    a, b = a - a.mean(), b - b.mean()
    scale = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / scale) if scale > 1e-12 else 0.0


def prompt_correlation(
    backend: RewardBackend,
    pop: SyntheticPopulation,
    states: dict[str, UserState],
    comparisons: dict[str, PreferenceData],
    prompts: PreferenceData,
    pairs: int = 4,
) -> tuple[float, float]:
    """``(correlation, change)``: for each user ``u`` and each pair of prompts ``(x+, x-)`` of
    opposite topics (rows of ``prompts``), the correlation over ``u``'s responses (the chosen and
    rejected items of ``comparisons[u]``) between the model's ``r_u(x+, y) - r_u(x-, y)`` and the
    true one, averaged; ``change`` is the mean absolute change of a response's score, centred per
    prompt pair (0 when the reward ignores the prompt). A constant shift of every score under one
    prompt changes no ranking, so it counts as no change."""
    rows = topic_prompts(pop, prompts, pairs)
    if not rows:
        return 0.0, 0.0
    correlations, changes = [], []
    for u, d in comparisons.items():
        items = np.concatenate([d.chosen, d.rejected])
        for plus, minus in rows:
            x_plus, x_minus = prompts.prompt[plus], prompts.prompt[minus]
            model = backend.reward(states[u], x_plus, items) - backend.reward(
                states[u], x_minus, items
            )
            truth = pop.true_reward(u, x_plus, items) - pop.true_reward(u, x_minus, items)
            correlations.append(_correlation(model, truth))
            changes.append(float(np.mean(np.abs(model - model.mean()))))
    return float(np.mean(correlations)), float(np.mean(changes))


def opposite_agreement(
    backend: RewardBackend,
    pop: SyntheticPopulation,
    a: tuple[str, UserState],
    b: tuple[str, UserState],
    comparisons: PreferenceData,
) -> tuple[float, int]:
    """``(share, n)``: among the ``n`` rows of ``comparisons`` on which users ``a`` and ``b`` (id
    and state each) truly prefer different responses, the share where the model's preferences for
    ``a`` and for ``b`` are both the true ones: each user's preferred response is the other's
    dispreferred. A model that gives both users the same preferences scores 0."""
    (ua, sa), (ub, sb) = a, b
    d = comparisons
    true_a = pop.true_reward(ua, d.prompt, d.chosen) - pop.true_reward(ua, d.prompt, d.rejected)
    true_b = pop.true_reward(ub, d.prompt, d.chosen) - pop.true_reward(ub, d.prompt, d.rejected)
    disagree = np.sign(true_a) != np.sign(true_b)
    if not disagree.any():
        return 0.0, 0
    model_a = backend.preference_logits(sa, d)[disagree]
    model_b = backend.preference_logits(sb, d)[disagree]
    both = (np.sign(model_a) == np.sign(true_a[disagree])) & (
        np.sign(model_b) == np.sign(true_b[disagree])
    )
    return float(both.mean()), int(disagree.sum())
