"""The synthetic population the conformance suite fits on, and the pass marks.

Two groups of users with opposite true tastes (:func:`persona_engine.testing.synthetic_population`):
a model that cannot tell users apart is at chance on them, so a personalized backend has a known
answer to reach. For a non-personalized backend every user also shares a preferred direction, so a
population model can beat chance. For a backend that declares it reads the prompt, the prompts
fall into two topics that turn a shared term of the reward around (``prompt_weight``), so it has a
known answer there too; for the others the prompt features are noise, and the pass marks stay those
of a population whose right answer is in the responses alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..backends.data import PreferenceData
from .synthetic import SyntheticPopulation, synthetic_population


@dataclass
class ConformanceSettings:
    """The synthetic population and the bars a backend must clear (override per backend)."""

    seen_users: int = 20
    unseen_users: int = 4
    per_user: int = 40
    test_per_seen_user: int = 10
    shots: int = 10
    dim: int = 8
    prompt_dim: int = 4
    noise: float = 0.0
    #: weight of the topic-dependent term of the true reward, for backends that read the prompt
    #: (the user term has weight 3)
    prompt_weight: float = 1.0
    #: shared direction added for non-personalized backends (so a population model can beat chance)
    shared_weight: float = 3.0
    seed: int = 0
    min_seen_accuracy: float = 0.75
    min_unseen_accuracy: float = 0.70
    min_group_accuracy: float = 0.60
    min_population_accuracy: float = 0.62
    #: least relative swap sensitivity of a personalized backend (about 1 when users are told apart)
    min_swap_sensitivity: float = 0.3
    #: least mean correlation, over training users, between the change of a prompt-reading
    #: backend's scores from one topic's prompt to the other's and the true change
    min_prompt_correlation: float = 0.5
    #: least share of pairs on which two onboarded users of opposite groups truly disagree where
    #: the model gives each user their own preferred response (so the other's dispreferred)
    min_opposite_agreement: float = 0.6
    score_atol: float = 1e-5
    score_rtol: float = 1e-4


@dataclass
class Split:
    """Training comparisons, held-out comparisons of training users, and unseen users' shots and
    held-out comparisons; ``groups`` is each user's true group (0 or 1); ``population`` knows
    the true rewards."""

    population: SyntheticPopulation
    groups: dict[str, int]
    train: PreferenceData
    seen_test: dict[str, PreferenceData]
    unseen_shots: dict[str, PreferenceData]
    unseen_test: dict[str, PreferenceData]


def split_population(pop: SyntheticPopulation, s: ConformanceSettings) -> Split:
    """Seen users: their first rows train, the last ``test_per_seen_user`` test. Unseen users:
    ``shots`` rows to onboard from, the rest to test on."""
    rows = pop.data.rows_of_users()
    seen = pop.data.user_ids[: s.seen_users]
    unseen = pop.data.user_ids[s.seen_users :]
    train_rows = np.concatenate([rows[u][: -s.test_per_seen_user] for u in seen])
    return Split(
        population=pop,
        groups=pop.groups,
        train=pop.data.subset(train_rows),
        seen_test={u: pop.data.subset(rows[u][-s.test_per_seen_user :]) for u in seen},
        unseen_shots={u: pop.data.subset(rows[u][: s.shots]) for u in unseen},
        unseen_test={u: pop.data.subset(rows[u][s.shots :]) for u in unseen},
    )


def conformance_split(
    s: ConformanceSettings, *, personalized: bool, reads_prompt: bool = False
) -> Split:
    """The population for a backend under test, split for training, onboarding and testing."""
    pop = synthetic_population(
        n_users=s.seen_users + s.unseen_users,
        per_user=s.per_user,
        dim=s.dim,
        prompt_dim=s.prompt_dim,
        groups=2,
        opposite=True,
        shared_weight=0.0 if personalized else s.shared_weight,
        prompt_weight=s.prompt_weight if reads_prompt else 0.0,
        noise=s.noise,
        seed=s.seed,
    )
    return split_population(pop, s)
