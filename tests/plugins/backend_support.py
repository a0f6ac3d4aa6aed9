"""Helpers shared by the personalized-backend tests (a module with a unique name: several test
folders have a ``conftest.py``, so ``from conftest import ...`` would pick whichever came first)."""

from __future__ import annotations

import copy

import numpy as np

from persona_engine.backends import PreferenceData
from persona_engine.plugins import get_backend


def split_population(pop, n_train_users=20, seen_rows=30, shots=10):
    """Seen users' first rows for training (the rest held out); new users' first rows as shots."""
    data, rows = pop.data, pop.data.rows_of_users()
    train_users = data.user_ids[:n_train_users]
    train = data.subset(np.concatenate([rows[u][:seen_rows] for u in train_users]))
    seen_test = {u: data.subset(rows[u][seen_rows:]) for u in train_users}
    new = {
        u: (data.subset(rows[u][:shots]), data.subset(rows[u][shots + 10 :]))
        for u in data.user_ids[n_train_users:]
    }
    return train, seen_test, new


def accuracy(model, state, data: PreferenceData) -> float:
    """Share of ``data``'s comparisons the model orders as the user did."""
    return float((model.preference_logits(state, data) > 0).mean())


def with_onboarding(model, onboarding: str):
    """A shallow copy of a fitted lore/pal model that onboards new users by ``onboarding``."""
    other = copy.copy(model)
    other.config = model.config.model_copy(update={"onboarding": onboarding})
    return other


def repeated(data: PreferenceData, times: int) -> PreferenceData:
    """``data``'s comparisons, each ``times`` over (as many shots as the likelihood needs to
    outweigh any fixed prior)."""
    return data.subset(np.tile(np.arange(len(data)), times))


def map_onboarding_distances(model, new: dict, sharpen: float = 1.0) -> dict[str, float]:
    """Means over the new users of ``new``: the Mahalanobis distance, under the population prior
    of a lore/pal model, of a user's centred logits from the prior mean, after 1 shot by MAP and
    by the published fit, and after 10 shots by MAP; and the L1 distance on the simplex between
    the MAP and the published fits of the 10 shots repeated 50 times (under a prior ``sharpen``
    times as precise, so that a prior whose weight does not shrink with the shots shows)."""
    from persona_engine.backends.user_prior import centred_logits

    published = with_onboarding(model, "published")
    prior = model.user_prior

    def mahalanobis(state) -> float:
        off = centred_logits(state.vector) - prior.mean
        return float(np.sqrt(off @ prior.precision @ off))

    out: dict[str, list[float]] = {"map_1": [], "published_1": [], "map_10": [], "many": []}
    for shots, _ in new.values():
        one = shots.subset([0])
        out["map_1"].append(mahalanobis(model.embed_user(one)))
        out["published_1"].append(mahalanobis(published.embed_user(one)))
        out["map_10"].append(mahalanobis(model.embed_user(shots)))
        many = repeated(shots, 50)
        sharp = copy.copy(model)
        sharp.user_prior = type(prior)(prior.mean, prior.precision * sharpen)
        out["many"].append(
            np.abs(sharp.embed_user(many).vector - published.embed_user(many).vector).sum()
        )
    return {k: float(np.mean(v)) for k, v in out.items()}


def chosen_prior_scales(name: str, config: dict) -> dict[str, float]:
    """``onboard_prior_scale`` chosen at fit time on a population whose two groups disagree and on
    one whose users all agree (40 users each, 8 of them held out for the choice)."""
    from persona_engine.testing import synthetic_population

    out = {}
    for label, groups in (("disagree", 2), ("agree", 1)):
        pop = synthetic_population(
            n_users=40, per_user=40, dim=8, prompt_dim=4, groups=groups, seed=0
        )
        metrics = get_backend(name)(config).fit(pop.data)
        assert metrics["onboard_prior_scale_users"] >= 4
        out[label] = metrics["onboard_prior_scale"]
    return out
