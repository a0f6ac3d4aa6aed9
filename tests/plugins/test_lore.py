"""The ``lore`` backend (LoRe, Bose et al. 2025) on a population whose right answer is known."""

from __future__ import annotations

import time

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

FAST = {
    "rank": 4,
    "training": {"lr": 0.5, "batch_size": 64, "epochs": 80, "patience": 15, "seed": 0},
}


@pytest.fixture(scope="module")
def fitted(population):
    train, seen_test, new = split_population(population)
    model = get_backend("lore")(FAST)
    metrics = model.fit(train)
    return model, metrics, seen_test, new


def test_registered_under_its_name():
    from persona_engine_lore import LoReBackend

    assert get_backend("lore") is LoReBackend


def test_tells_opposite_groups_apart_on_held_out_pairs(fitted, population):
    model, _, seen_test, _ = fitted
    own = [accuracy(model, model.user_state(u), d) for u, d in seen_test.items()]
    other = {g: next(u for u in seen_test if population.groups[u] != g) for g in (0, 1)}
    swapped = [
        accuracy(model, model.user_state(other[population.groups[u]]), d)
        for u, d in seen_test.items()
    ]
    assert np.mean(own) > 0.85
    assert np.mean(swapped) < 0.25  # the other group's weights rank the other way round


def test_onboards_new_users_of_each_group_from_ten_comparisons(fitted, population):
    model, _, _, new = fitted
    by_group: dict[int, list[float]] = {0: [], 1: []}
    for u, (shots, test) in new.items():
        state = model.embed_user(shots)
        assert state.vector.shape == (model.vector_dim,)
        assert (
            np.isclose(state.vector.sum(), 1.0, atol=1e-5) and (state.vector >= 0).all()
        )  # on the simplex
        by_group[population.groups[u]].append(accuracy(model, state, test))
    assert np.mean(by_group[0]) > 0.8 and np.mean(by_group[1]) > 0.8


def test_onboarding_leaves_shared_parameters_unchanged(fitted):
    model, _, _, new = fitted
    before = {k: v.copy() for k, v in model.state_dict().items()}
    users_before = set(model.users)
    model.embed_user(next(iter(new.values()))[0])
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(np.array_equal(before[k], after[k]) for k in before)
    assert set(model.users) == users_before


def test_onboarding_solver_beats_the_official_adam_procedure(fitted):
    """Newton reaches at least the loss of the official 500 Adam steps (lr 0.1), far faster."""
    import torch
    from persona_engine_lore.loss import onboarding_objective
    from persona_engine_lore.onboarding import fit_user_logits

    model, _, _, new = fitted
    shots = next(iter(new.values()))[0]
    projected = (
        ((shots.chosen - shots.rejected) / model.scaler.std)
        @ model.basis
        / model.config.temperature
    )
    target = np.ones(len(shots))
    start = time.perf_counter()
    none = (np.zeros(model.config.rank), np.zeros((model.config.rank,) * 2))
    theta = fit_user_logits(
        projected, target, prior_mean=none[0], prior_precision=none[1], max_iter=200
    )
    elapsed = time.perf_counter() - start
    torch.manual_seed(0)
    logits = torch.randn(model.config.rank, requires_grad=True, dtype=torch.float64)
    opt = torch.optim.Adam([logits], lr=0.1)
    x = torch.from_numpy(projected.astype(np.float64))
    for _ in range(500):
        opt.zero_grad()
        loss = torch.nn.functional.softplus(-(x @ torch.softmax(logits, 0))).mean()
        loss.backward()
        opt.step()
    ours = onboarding_objective(theta, projected, target, *none)[0]
    official = onboarding_objective(logits.detach().numpy(), projected, target, *none)[0]
    assert ours <= official + 1e-4
    assert elapsed < 0.1  # a few ms; generous for a loaded machine


def test_rank_one_is_a_single_bradley_terry_head(population):
    train, seen_test, _ = split_population(population)
    model = get_backend("lore")({**FAST, "rank": 1})
    model.fit(train)
    users = list(model.users)
    assert all(np.array_equal(model.user_state(u).vector, [1.0]) for u in users)
    items = population.data.chosen[:50]
    first = model.reward(model.user_state(users[0]), population.data.prompt[0], items)
    assert np.array_equal(
        first, model.reward(model.user_state(users[1]), population.data.prompt[0], items)
    )
    assert np.array_equal(model.embed_user(seen_test[users[0]]).vector, [1.0])


def test_save_load_round_trip_gives_identical_scores(fitted, tmp_path, population):
    model, _, _, new = fitted
    path = model.save(tmp_path / "lore")
    loaded = load_backend(path)
    assert type(loaded) is type(model) and loaded.config == model.config
    data = population.data
    for u in list(model.users)[:3]:
        assert np.array_equal(
            model.reward(model.user_state(u), data.prompt[0], data.chosen),
            loaded.reward(loaded.user_state(u), data.prompt[0], data.chosen),
        )
    shots = next(iter(new.values()))[0]
    assert np.array_equal(model.embed_user(shots).vector, loaded.embed_user(shots).vector)
    # the onboarding prior is saved with the model: one-shot MAP onboarding is the same after load
    assert np.array_equal(loaded.user_prior.precision, model.user_prior.precision)
    one = shots.subset([0])
    assert np.array_equal(model.embed_user(one).vector, loaded.embed_user(one).vector)


def test_same_seed_same_model(population):
    train, _, _ = split_population(population)
    cfg = {**FAST, "training": {**FAST["training"], "epochs": 5}}
    a, b = get_backend("lore")(cfg), get_backend("lore")(cfg)
    a.fit(train)
    b.fit(train)
    assert all(np.array_equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    assert all(np.array_equal(a.users[u].vector, b.users[u].vector) for u in a.users)


def test_scoring_is_vectorised_over_users_and_items(fitted, population):
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
    assert np.allclose(batch[::97], one_by_one, atol=1e-5)


def test_bad_input_gives_clear_errors(fitted, population):
    model, _, _, new = fitted
    shots = next(iter(new.values()))[0]
    with pytest.raises(InvalidInputError):
        model.embed_user(shots.subset(np.zeros(0, dtype=np.int64)))
    with pytest.raises(InvalidInputError):
        model.fit(population.data.subset(np.zeros(0, dtype=np.int64)))
    wrong = PreferenceData(
        shots.user_ids, shots.user_index, shots.prompt, shots.chosen[:, :5], shots.rejected[:, :5]
    )
    with pytest.raises(InvalidInputError, match="dimensions"):
        model.embed_user(wrong)
    with pytest.raises(InvalidInputError):
        model.reward(model.prior(), population.data.prompt[0], population.data.chosen[:, :5])
    with pytest.raises(UnknownUserError):
        model.user_state("nobody")
    with pytest.raises(InvalidInputError):
        model.embed_user(population.data.subset(np.arange(0, 80)))  # two users at once
    with pytest.raises(NoModelError):
        get_backend("lore")().embed_user(shots)
    with pytest.raises(InvalidInputError):
        get_backend("lore")({"rank": 0})


def test_map_onboarding_moves_from_the_population_prior_as_shots_grow(fitted):
    """MAP (the default): one shot keeps a new user near the population's typical weights (the
    published fit of that one shot goes far), ten move them further."""
    model, _, _, new = fitted
    assert model.config.onboarding == "map"
    dist = map_onboarding_distances(model, new)
    assert dist["map_1"] < 1.0 and dist["map_1"] < 0.5 * dist["published_1"], dist
    assert dist["map_10"] > 1.5 * dist["map_1"], dist


def test_map_onboarding_with_many_shots_approaches_the_published_fit(fitted):
    """The prior's weight is that of a few comparisons: under hundreds the two procedures agree."""
    model, _, _, new = fitted
    assert map_onboarding_distances(model, new, sharpen=25.0)["many"] < 0.2


def test_published_onboarding_is_the_plain_fit_of_the_shots(fitted):
    model, _, _, new = fitted
    published = with_onboarding(model, "published")
    shots = next(iter(new.values()))[0].subset([0, 1])
    a, b = model.embed_user(shots).vector, published.embed_user(shots).vector
    assert np.abs(a - b).sum() > 0.05  # two shots: the prior matters
    cfg = get_backend("lore")({"onboarding": "published"}).config
    assert cfg.onboarding == "published"
    with pytest.raises(InvalidInputError):
        get_backend("lore")({"onboarding": "bayes"})


def test_prior_scale_is_chosen_on_held_out_users_and_shrinks_more_when_users_agree():
    """``onboard_prior_scale="auto"`` (the default) picks the prior's width by held-out prediction
    on users the probe model never saw: where users disagree the shots are trusted, where they
    all agree onboarding stays at the population's weights."""
    scales = chosen_prior_scales("lore", FAST)
    assert scales["agree"] < scales["disagree"], scales
    assert scales["disagree"] >= 1.0 and scales["agree"] <= 0.25, scales
