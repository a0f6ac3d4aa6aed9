"""The ``vpl`` backend (VPL, Poddar et al. NeurIPS 2024) on a population whose right answer is known."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from backend_support import accuracy, split_population

from persona_engine.backends import PreferenceData, load_backend
from persona_engine.errors import InvalidInputError, NoModelError, UnknownUserError
from persona_engine.plugins import get_backend

FAST = {
    "latent_dim": 8,
    "hidden_dim": 32,
    "training": {"lr": 3e-3, "weight_decay": 1e-3, "batch_size": 64, "epochs": 60, "patience": 10},
}


@pytest.fixture(scope="module")
def fitted(population):
    train, seen_test, new = split_population(population)
    model = get_backend("vpl")(FAST)
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


def test_onboards_new_users_of_each_group_with_one_encoder_pass(fitted, population):
    model, _, _, new = fitted
    by_group: dict[int, list[float]] = {0: [], 1: []}
    for u, (shots, test) in new.items():
        state = model.embed_user(shots)
        assert state.vector.shape == (model.config.latent_dim,)
        assert state.uncertainty is not None and state.uncertainty.shape == state.vector.shape
        assert (state.uncertainty > 0).all()
        by_group[population.groups[u]].append(accuracy(model, state, test))
    assert np.mean(by_group[0]) > 0.8 and np.mean(by_group[1]) > 0.8


def test_encoder_is_permutation_invariant(fitted):
    model, _, _, new = fitted
    shots = next(iter(new.values()))[0]
    shuffled = shots.subset(np.random.default_rng(0).permutation(len(shots)))
    a, b = model.embed_user(shots), model.embed_user(shuffled)
    assert np.allclose(a.vector, b.vector, atol=1e-5) and np.allclose(
        a.uncertainty, b.uncertainty, atol=1e-5
    )


def test_onboarding_leaves_shared_parameters_unchanged(fitted):
    model, _, _, new = fitted
    before = {k: v.copy() for k, v in model.state_dict().items()}
    model.embed_user(next(iter(new.values()))[0])
    after = model.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_inference_decodes_the_posterior_mean_on_the_training_sphere(fitted, population):
    """Training decodes sqrt(D) normalize(mu + sigma eps); scoring must decode sqrt(D) normalize(mu)
    (the official evaluation decodes the raw mu), so rescaling mu does not change any score."""
    import torch

    model, _, _, _ = fitted
    data = population.data
    mean = model.user_state(data.user_ids[0]).vector
    scores = model.reward(mean, data.prompt[0], data.chosen[:20])
    assert np.allclose(
        scores, model.reward(0.1 * mean, data.prompt[0], data.chosen[:20]), atol=1e-5
    )
    inputs = np.concatenate(
        [model.scaler(data.chosen[:20]), model.prompt_scaler(np.repeat(data.prompt[:1], 20, 0))], 1
    )
    with torch.no_grad():
        z = model.model.latent(torch.from_numpy(np.repeat(mean[None], 20, 0)))
        torch_scores = model.model.decoder(torch.from_numpy(inputs), z).numpy()
    assert np.allclose(scores, torch_scores, atol=1e-4)


COLLAPSED = {  # a KL weight this large, without annealing, drives every posterior to the prior
    **FAST,
    "kl_weight": 50.0,
    "kl_anneal": False,
    "training": {**FAST["training"], "epochs": 15},
}


def test_reports_swap_sensitivity_and_active_units_and_detects_collapse(fitted, population):
    _, metrics, _, _ = fitted
    assert 0.5 <= metrics["active_units"] <= 1.0
    assert metrics["swap_sensitivity_on"] == "validation"
    assert metrics["swap_sensitivity"] > 1.0 and metrics["swap_sensitivity_relative"] > 0.5
    train, _, _ = split_population(population)
    collapsed = get_backend("vpl")(COLLAPSED).fit(train)
    assert collapsed["active_units"] < 0.2
    assert collapsed["swap_sensitivity_relative"] < 0.2


def test_swap_sensitivity_is_zero_for_a_reward_that_ignores_z(fitted):
    """The metric itself: exactly 0 once the decoder's weights on z are zeroed, large before."""
    from persona_engine_vpl.collapse import swap_sensitivity

    from persona_engine.testing.backend_checks import swap_sensitivity as generic

    model, _, seen_test, _ = fitted
    states = {u: model.user_state(u) for u in seen_test}
    uses_z = swap_sensitivity(model.preference_logits, states, seen_test)
    blind = copy.copy(model)
    blind._w_latent = np.zeros_like(model._w_latent)
    ignores_z = swap_sensitivity(blind.preference_logits, states, seen_test)
    assert ignores_z == (0.0, 0.0)
    assert uses_z[0] > 1.0 and uses_z[1] > 0.5
    assert generic(model, states, seen_test) == pytest.approx(uses_z)
    assert generic(blind, states, seen_test) == (0.0, 0.0)


def test_conformance_fails_a_collapsed_vpl():
    from persona_engine_vpl import VPLBackend

    from persona_engine.testing.backend_checks import ConformanceFailure, ConformanceRun

    with pytest.raises(ConformanceFailure, match="ignores the user"):
        ConformanceRun(VPLBackend, COLLAPSED).check_user_sensitivity()
    healthy = ConformanceRun(VPLBackend, FAST)
    healthy.check_user_sensitivity()
    assert healthy.metrics["swap_sensitivity_relative"] > 0.5


def test_training_contexts_cover_the_onboarding_sizes():
    """Log-uniform sizes: 1-shot and full-size contexts both common; onboarding reads at most
    what training covered."""
    from persona_engine_vpl.contexts import context_sizes

    sizes = context_sizes(np.random.default_rng(0), 20000, 1, 32, "log_uniform")
    assert sizes.min() == 1 and sizes.max() == 32
    assert 0.1 < (sizes == 1).mean() < 0.3 and (sizes >= 16).mean() > 0.15
    cfg = get_backend("vpl")().config
    assert cfg.context_max >= 20 and cfg.onboard_context_max is None
    model = get_backend("vpl")({"context_max": 12})
    assert len(model._context_rows(np.arange(100))) == 12
    with pytest.raises(InvalidInputError, match="onboard_context_max"):
        get_backend("vpl")({"context_max": 8, "onboard_context_max": 64})


def test_published_objective_is_reachable(population):
    train, _, _ = split_population(population)
    published = {"swap_weight": 0.0, "context_min": 2, "context_max": 8}
    cfg = {**FAST, **published, "context_distribution": "uniform"}
    cfg["training"] = {**FAST["training"], "epochs": 3}
    metrics = get_backend("vpl")(cfg).fit(train)
    assert "swap_sensitivity" in metrics


def test_kl_annealing_follows_the_official_cyclical_cosine():
    from persona_engine_vpl.loss import kl_anneal_factor

    assert kl_anneal_factor(0, 100, 0.1) == pytest.approx(0.1)
    assert kl_anneal_factor(50, 100, 0.1) == pytest.approx(0.55)
    assert kl_anneal_factor(99, 100, 0.1) == pytest.approx(1.0, abs=1e-3)
    assert kl_anneal_factor(100, 100, 0.1) == pytest.approx(0.1)


def test_contexts_are_other_training_rows_of_the_same_user():
    from persona_engine_vpl.contexts import ContextSampler

    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(4), [1, 3, 12, 30])
    pool = np.sort(rng.permutation(len(users))[:40])
    sampler = ContextSampler(users, pool, 4)
    rows = rng.integers(0, len(users), 500)
    context, mask = sampler.sample(rows, rng, 2, 8)
    for row, ctx, m in zip(rows, context, mask):
        chosen = ctx[m]
        assert len(set(chosen.tolist())) == len(chosen)  # without replacement
        assert row not in chosen and set(chosen.tolist()) <= set(pool.tolist())
        assert (users[chosen] == users[row]).all()
        available = int((users[pool] == users[row]).sum()) - int(row in pool)
        assert min(2, available) <= len(chosen) <= min(8, available)


def test_save_load_round_trip_gives_identical_scores(fitted, tmp_path, population):
    model, _, _, new = fitted
    loaded = load_backend(model.save(tmp_path / "vpl"))
    assert type(loaded) is type(model) and loaded.config == model.config
    data = population.data
    for u in list(model.users)[:3]:
        assert np.array_equal(
            model.reward(model.user_state(u), data.prompt[0], data.chosen),
            loaded.reward(loaded.user_state(u), data.prompt[0], data.chosen),
        )
        assert np.array_equal(model.user_state(u).uncertainty, loaded.user_state(u).uncertainty)
    shots = next(iter(new.values()))[0]
    assert np.array_equal(model.embed_user(shots).vector, loaded.embed_user(shots).vector)


def test_same_seed_same_model(population):
    train, _, _ = split_population(population)
    cfg = {**FAST, "training": {**FAST["training"], "epochs": 3}}
    a, b = get_backend("vpl")(cfg), get_backend("vpl")(cfg)
    a.fit(train)
    b.fit(train)
    assert all(np.array_equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    assert all(np.array_equal(a.users[u].vector, b.users[u].vector) for u in a.users)


def test_prior_is_a_typical_user_with_uncertainty(fitted):
    model, _, _, _ = fitted
    prior = model.prior()
    assert any(np.array_equal(prior.vector, s.vector) for s in model.users.values())
    assert prior.uncertainty is not None and (prior.uncertainty > 0).all()


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
    with pytest.raises(UnknownUserError):
        model.user_state("nobody")
    with pytest.raises(NoModelError):
        get_backend("vpl")().embed_user(shots)
    with pytest.raises(InvalidInputError, match="context_min"):
        get_backend("vpl")({"context_min": 9, "context_max": 8})


def test_presets_name_the_published_and_swap_configurations():
    from persona_engine_vpl.config import PRESETS, VPLConfig

    published = VPLConfig.from_preset("published")
    assert (published.context_min, published.context_max) == (2, 8)
    assert published.context_distribution == "uniform" and published.swap_weight == 0.0
    assert VPLConfig.from_preset("swap", latent_dim=8).swap_weight == 1.0
    assert VPLConfig.from_preset("default") == VPLConfig()
    assert set(PRESETS) >= {"default", "published", "swap", "wide_swap"}
    with pytest.raises(InvalidInputError, match="unknown vpl preset"):
        VPLConfig.from_preset("nope")
