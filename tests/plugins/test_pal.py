"""The ``pal`` backend (PAL-A and PAL-B, Chen et al. ICLR 2025) on a population whose right answer is known."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from backend_support import (
    accuracy,
    chosen_prior_scales,
    map_onboarding_distances,
    split_population,
    with_onboarding,
)

from persona_engine.backends import PreferenceData, load_backend
from persona_engine.errors import InvalidInputError, NoModelError, UnknownUserError
from persona_engine.plugins import get_backend

CONFIGS = {
    "A": {
        "variant": "A",
        "training": {
            "lr": 1e-3,
            "weight_decay": 0.01,
            "batch_size": 64,
            "epochs": 60,
            "patience": 10,
        },
    },
    "B": {
        "variant": "B",
        "training": {
            "lr": 3e-4,
            "weight_decay": 0.01,
            "batch_size": 64,
            "epochs": 60,
            "patience": 10,
        },
    },
}


@pytest.fixture(scope="module", params=["A", "B"])
def fitted(request, population):
    train, seen_test, new = split_population(population)
    model = get_backend("pal")(CONFIGS[request.param])
    metrics = model.fit(train)
    return model, metrics, seen_test, new


def test_tells_opposite_groups_apart_on_held_out_pairs(fitted, population):
    model, _, seen_test, _ = fitted
    own = [accuracy(model, model.user_state(u), d) for u, d in seen_test.items()]
    other = {g: next(u for u in seen_test if population.groups[u] != g) for g in (0, 1)}
    swapped = [
        accuracy(model, model.user_state(other[population.groups[u]]), d)
        for u, d in seen_test.items()
    ]
    assert np.mean(own) > 0.85
    assert np.mean(swapped) < 0.25


def test_onboards_new_users_of_each_group_from_ten_comparisons(fitted, population):
    model, _, _, new = fitted
    by_group: dict[int, list[float]] = {0: [], 1: []}
    for u, (shots, test) in new.items():
        state = model.embed_user(shots)
        assert state.vector.shape == (model.config.n_prototypes,)
        assert np.isclose(state.vector.sum(), 1.0, atol=1e-5) and (state.vector >= 0).all()
        assert set(state.weights) == {f"prototype_{k}" for k in range(model.config.n_prototypes)}
        by_group[population.groups[u]].append(accuracy(model, state, test))
    assert np.mean(by_group[0]) > 0.8 and np.mean(by_group[1]) > 0.8


def test_onboarding_leaves_shared_parameters_unchanged(fitted):
    model, _, _, new = fitted
    before = {k: v.copy() for k, v in model.state_dict().items()}
    model.embed_user(next(iter(new.values()))[0])
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(np.array_equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("onboarding", ["map", "published"])
def test_onboarding_reaches_a_local_minimum(fitted, onboarding):
    """The Gauss-Newton solver stops where the (smoothed) onboarding loss, with the procedure's
    penalty, no longer decreases."""
    from persona_engine_pal.loss import onboarding_objective

    from persona_engine.backends.user_prior import centred_logits

    model, _, _, new = fitted
    model = with_onboarding(model, onboarding)
    cfg = model.config
    shots = next(iter(new.values()))[0]
    k = cfg.n_prototypes
    opts = {
        "kind": cfg.resolved_loss(),
        "prior_mean": model.user_prior.mean if onboarding == "map" else np.zeros(k),
        "prior_precision": model.user_prior.precision / len(shots)
        if onboarding == "map"
        else cfg.onboard_l2 * np.eye(k),
        "margin": cfg.hinge_margin,
        "sharpness": cfg.onboard_hinge_sharpness,
    }
    logits_fn, target = model.onboarding_problem(shots)
    theta = centred_logits(model.embed_user(shots).vector)
    value = onboarding_objective(*logits_fn(theta), theta, target, **opts)[0]
    start = onboarding_objective(
        *logits_fn(np.zeros_like(theta)), np.zeros_like(theta), target, **opts
    )[0]
    assert value < start
    rng = np.random.default_rng(0)
    for _ in range(20):  # no nearby mixture is clearly better
        probe = theta + 0.05 * rng.normal(size=theta.shape)
        assert onboarding_objective(*logits_fn(probe), probe, target, **opts)[0] >= value - 1e-3


def test_save_load_round_trip_gives_identical_scores(fitted, tmp_path, population):
    model, _, _, new = fitted
    loaded = load_backend(model.save(tmp_path / "pal"))
    assert type(loaded) is type(model) and loaded.config == model.config
    data = population.data
    for u in list(model.users)[:3]:
        assert np.array_equal(
            model.reward(model.user_state(u), data.prompt[0], data.chosen),
            loaded.reward(loaded.user_state(u), data.prompt[0], data.chosen),
        )
    vectors = np.stack([model.user_state(u).vector for u in model.users])[
        data.user_index % len(model.users)
    ]
    assert np.array_equal(
        model.reward_batch(vectors, data.prompt, data.chosen),
        loaded.reward_batch(vectors, data.prompt, data.chosen),
    )
    shots = next(iter(new.values()))[0]
    assert np.array_equal(model.embed_user(shots).vector, loaded.embed_user(shots).vector)
    # the onboarding prior is saved with the model: one-shot MAP onboarding is the same after load
    assert np.array_equal(loaded.user_prior.precision, model.user_prior.precision)
    one = shots.subset([0])
    assert np.array_equal(model.embed_user(one).vector, loaded.embed_user(one).vector)


def test_batch_scoring_matches_row_by_row(fitted, population):
    """Distinct prompts and users are batched (computed once each); results equal per-row scores."""
    model, _, _, _ = fitted
    data = population.data
    users = list(model.users)
    vectors = np.stack([model.user_state(users[i % len(users)]).vector for i in range(len(data))])
    batch = model.reward_batch(vectors, data.prompt, data.chosen)
    one_by_one = np.array(
        [
            model.reward(vectors[i], data.prompt[i], data.chosen[i : i + 1])[0]
            for i in range(0, len(data), 97)
        ]
    )
    assert np.allclose(batch[::97], one_by_one, atol=1e-4)


def test_same_seed_same_model(population):
    train, _, _ = split_population(population)
    cfg = {**CONFIGS["B"], "training": {**CONFIGS["B"]["training"], "epochs": 3}}
    a, b = get_backend("pal")(cfg), get_backend("pal")(cfg)
    a.fit(train)
    b.fit(train)
    assert all(np.array_equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    assert all(np.array_equal(a.users[u].vector, b.users[u].vector) for u in a.users)


def test_prototype_diversity_prevents_collapse(population):
    """Without the diversity term (the official objective) PAL-A's prototypes collapse onto each
    other on a two-group population (largest pairwise cosine 0.74-0.98 over seeds 0-3); with it
    they stay apart (<= 0.05), at no cost in accuracy."""
    train, _, _ = split_population(population)
    cfg = {
        "variant": "A",
        "n_prototypes": 4,
        "training": {
            "lr": 1e-3,
            "weight_decay": 0.01,
            "batch_size": 512,
            "epochs": 60,
            "patience": 10,
        },
    }
    official = get_backend("pal")({**cfg, "prototype_diversity": 0.0}).fit(train)
    ours = get_backend("pal")({**cfg, "prototype_diversity": 0.1}).fit(train)
    assert official["prototype_cos_max"] > 0.6
    assert ours["prototype_cos_max"] < 0.3
    assert ours["val_loss"] < official["val_loss"] + 0.05


def test_diversity_penalty_only_punishes_similar_prototypes():
    import torch
    from persona_engine_pal.loss import prototype_diversity_penalty

    same = torch.tensor([[1.0, 0.0], [2.0, 0.0]])
    opposite = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    orthogonal = torch.tensor([[1.0, 0.0], [0.0, 3.0]])
    assert prototype_diversity_penalty(same).item() == pytest.approx(1.0)
    assert prototype_diversity_penalty(opposite).item() == 0.0
    assert prototype_diversity_penalty(orthogonal).item() == 0.0


def test_bad_input_gives_clear_errors(fitted, population):
    model, _, _, new = fitted
    shots = next(iter(new.values()))[0]
    with pytest.raises(InvalidInputError):
        model.embed_user(shots.subset(np.zeros(0, dtype=np.int64)))
    wrong = PreferenceData(
        shots.user_ids, shots.user_index, shots.prompt, shots.chosen[:, :5], shots.rejected[:, :5]
    )
    with pytest.raises(InvalidInputError, match="dimensions"):
        model.embed_user(wrong)
    wrong_prompt = PreferenceData(
        shots.user_ids, shots.user_index, shots.prompt[:, :2], shots.chosen, shots.rejected
    )
    with pytest.raises(InvalidInputError, match="prompt"):
        model.embed_user(wrong_prompt)
    with pytest.raises(UnknownUserError):
        model.user_state("nobody")
    with pytest.raises(InvalidInputError):
        model.reward_batch(
            np.ones((3, model.vector_dim + 1), np.float32),
            population.data.prompt[:3],
            population.data.chosen[:3],
        )
    with pytest.raises(NoModelError):
        get_backend("pal")().embed_user(shots)
    with pytest.raises(InvalidInputError):
        get_backend("pal")({"variant": "C"})
    with pytest.raises(InvalidInputError, match="residual"):
        get_backend("pal")({"residual": True, "pref_dim": 16}).fit(population.data)


def test_map_onboarding_moves_from_the_population_prior_as_shots_grow(fitted):
    """MAP (the default): one shot keeps a new user near the population's typical weights (the
    published fit of that one shot goes far), ten move them further."""
    model, _, _, new = fitted
    assert model.config.onboarding == "map"
    dist = map_onboarding_distances(model, new)
    assert dist["map_1"] < 0.5 and dist["map_1"] < 0.5 * dist["published_1"], dist
    assert dist["map_10"] > 1.5 * dist["map_1"], dist


def test_map_onboarding_with_many_shots_approaches_the_published_fit(fitted):
    """The prior's weight is that of a few comparisons: under hundreds the two procedures agree
    (under the population's spread itself, c = 1; the chosen c scales the count)."""
    model, metrics, _, new = fitted
    model = copy.copy(model)
    model.user_prior = model.user_prior.scaled(1.0 / metrics["onboard_prior_scale"])
    assert map_onboarding_distances(model, new)["many"] < 0.2


def test_published_onboarding_is_the_plain_fit_of_the_shots(fitted):
    model, _, _, new = fitted
    published = with_onboarding(model, "published")
    shots = next(iter(new.values()))[0].subset([0, 1])
    a, b = model.embed_user(shots).vector, published.embed_user(shots).vector
    assert np.abs(a - b).sum() > 0.05  # two shots: the prior matters
    cfg = get_backend("pal")({"onboarding": "published"}).config
    assert cfg.onboarding == "published"
    with pytest.raises(InvalidInputError):
        get_backend("pal")({"onboarding": "bayes"})


def test_prior_scale_is_chosen_on_held_out_users_and_shrinks_more_when_users_agree():
    """``onboard_prior_scale="auto"`` (the default) picks the prior's width by held-out prediction
    on users the probe model never saw: where users disagree the shots are trusted, where they
    all agree onboarding stays at the population's weights."""
    scales = chosen_prior_scales("pal", CONFIGS["B"])
    assert scales["agree"] < scales["disagree"], scales
    assert scales["disagree"] >= 1.0 and scales["agree"] <= 0.25, scales
