"""The ``hier`` backend: hierarchical Bayesian Bradley-Terry with a learned low-rank prior."""

from __future__ import annotations

import statistics
import time

import numpy as np
import pytest
from backend_support import accuracy

from persona_engine.backends import PreferenceData
from persona_engine.errors import InvalidInputError, UnknownUserError
from persona_engine.plugins import get_backend
from persona_engine.testing.synthetic import synthetic_population

FAST = {"max_iter": 10}


@pytest.fixture(scope="module")
def population():
    return synthetic_population(
        n_users=30, per_user=40, dim=8, groups=2, opposite=True, noise=0.3, seed=0
    )


@pytest.fixture(scope="module")
def newcomers():
    # the same two tastes (the directions come from the seed), new users
    return synthetic_population(
        n_users=10,
        per_user=60,
        dim=8,
        groups=2,
        opposite=True,
        noise=0.3,
        seed=0,
        user_prefix="new",
    )


@pytest.fixture(scope="module")
def fitted(population):
    model = get_backend("hier")({**FAST, "rank": 2})
    model.fit(population.data)
    return model


def test_registered():
    assert get_backend("hier").name == "hier"


def test_tells_opposite_groups_apart(fitted, population, newcomers):
    data = population.data
    # seen users, scored on comparisons held out of the fit (not on the rows it was fitted to)
    rows = data.rows_of_users()
    train = np.sort(np.concatenate([r[:30] for r in rows.values()]))
    held = get_backend("hier")({**FAST, "rank": 2})
    held.fit(data.subset(train))
    own = [accuracy(held, held.user_state(u), data.subset(rows[u][30:])) for u in data.user_ids]
    pooled = [accuracy(held, held.prior(), data.subset(rows[u][30:])) for u in data.user_ids]
    assert np.mean(own) > 0.85 and np.mean(pooled) < 0.7
    # the population mean cannot serve both groups; onboarding from 10 comparisons can
    prior_acc, onboarded_acc = [], []
    for u in newcomers.data.user_ids:
        rows = newcomers.data.for_user(u)
        shots, test = rows.subset(np.arange(10)), rows.subset(np.arange(10, len(rows)))
        prior_acc.append(accuracy(fitted, fitted.prior(), test))
        onboarded_acc.append(accuracy(fitted, fitted.embed_user(shots), test))
    assert np.mean(onboarded_acc) > 0.85
    assert np.mean(prior_acc) < 0.7
    # the two groups land on opposite sides of the population mean
    a, b = (fitted.user_state(u).vector - fitted.prior().vector for u in data.user_ids[:2])
    assert float(a @ b) < 0


def test_onboarding_leaves_shared_parameters_unchanged(fitted, newcomers):
    before = {k: v.copy() for k, v in fitted.state_dict().items()}
    users_before = set(fitted.users)
    state = fitted.embed_user(newcomers.data.for_user("new0").subset(np.arange(10)))
    after = fitted.state_dict()
    assert before.keys() == after.keys()
    assert all(np.array_equal(before[k], after[k]) for k in before)
    assert set(fitted.users) == users_before
    assert state.vector.shape == (fitted.vector_dim,)
    assert state.uncertainty is not None and np.all(state.uncertainty >= 0)
    # ten comparisons make the posterior narrower than the prior
    assert state.uncertainty.mean() < fitted.prior().uncertainty.mean()


def test_onboarding_is_fast(fitted, newcomers):
    shots = newcomers.data.for_user("new1").subset(np.arange(10))
    times = []
    for _ in range(30):
        started = time.perf_counter()
        fitted.embed_user(shots)
        times.append(time.perf_counter() - started)
    assert (
        statistics.median(times) < 0.05
    )  # the benchmark's target is 10 ms; generous for a shared CI box


def test_save_load_round_trip(fitted, population, tmp_path):
    path = fitted.save(tmp_path / "hier")
    loaded = get_backend("hier").load(path)
    assert set(loaded.users) == set(fitted.users)
    u = population.data.user_ids[3]
    data = population.data.for_user(u)
    np.testing.assert_allclose(
        loaded.preference_logits(loaded.user_state(u), data),
        fitted.preference_logits(fitted.user_state(u), data),
        rtol=1e-5,
        atol=1e-5,
    )
    shots = data.subset(np.arange(8))
    np.testing.assert_allclose(
        loaded.embed_user(shots).vector, fitted.embed_user(shots).vector, rtol=1e-4, atol=1e-5
    )
    assert loaded.config == fitted.config


def test_fit_is_deterministic(population):
    a, b = get_backend("hier")(FAST), get_backend("hier")(FAST)
    assert a.fit(population.data) == b.fit(population.data)
    sa, sb = a.state_dict(), b.state_dict()
    assert all(np.array_equal(sa[k], sb[k]) for k in sa)


def test_bad_input(fitted, population):
    with pytest.raises(UnknownUserError):
        fitted.user_state("nobody")
    with pytest.raises(InvalidInputError):
        fitted.embed_user(population.data.subset(np.zeros(0, dtype=np.int64)))
    wrong = population.data.for_user(population.data.user_ids[0])
    wrong = PreferenceData(
        wrong.user_ids, wrong.user_index, wrong.prompt, wrong.chosen[:, :5], wrong.rejected[:, :5]
    )
    with pytest.raises(InvalidInputError, match="dimensions"):
        fitted.embed_user(wrong)
    with pytest.raises(InvalidInputError):
        get_backend("hier")({"rank": -1})
    with pytest.raises(InvalidInputError):
        get_backend("hier")({"unknown_option": 1})


def test_isotropic_posterior_matches_the_residual_baseline_solver():
    """Two independent solvers of the same convex problem agree: hier's Laplace mode with V = 0
    and the baselines' L2 logistic regression with lambda = 1 / s2."""
    from persona_engine_hier.model import GaussianPrior, laplace_posterior

    from persona_engine.bench.baselines import fit_logistic_map

    rng = np.random.default_rng(1)
    delta, target = rng.normal(size=(12, 20)), np.where(rng.random(12) < 0.8, 1.0, 0.5)
    mean = rng.normal(size=20) * 0.3
    post = laplace_posterior(delta, target, GaussianPrior(mean, np.zeros((20, 0)), 0.25))
    np.testing.assert_allclose(post.weights, fit_logistic_map(delta, target, mean, 4.0), atol=1e-5)


def test_ppca_m_step_recovers_a_low_rank_covariance():
    from persona_engine_hier.trainer import ppca_fit

    rng = np.random.default_rng(0)
    true = rng.normal(size=(10, 2)) * 2.0
    moment = true @ true.T + 0.1 * np.eye(10)
    factors, noise = ppca_fit(moment, 2, 1e-6)
    assert noise == pytest.approx(0.1, rel=1e-6)
    np.testing.assert_allclose(factors @ factors.T, true @ true.T, atol=1e-6)


def test_selects_factors_on_a_population_with_low_rank_structure(population):
    """Two opposite tastes are a rank-1 structure: the new-item selection keeps a factor and the
    fit metrics say so; one shared taste has none, and the metrics say why rank 0 was kept."""
    model = get_backend("hier")({**FAST, "rank": 2, "space_dim": 4})
    metrics = model.fit(population.data)
    assert metrics["rank_used"] >= 1, metrics
    assert metrics["selected_on"] == "new-item pairs"
    assert metrics["space_dim"] == 4 + 1  # PCA components + the population reward
    assert "factors kept" in metrics["rank_reason"]
    same = synthetic_population(n_users=30, per_user=40, dim=8, groups=1, noise=0.3, seed=0)
    flat = get_backend("hier")({**FAST, "rank": 2}).fit(same.data)
    assert flat["rank_used"] == 0, flat
    assert flat["rank_reason"].startswith("no factor kept")  # and why


def test_validation_pairs_share_no_text_with_the_shots():
    from persona_engine_hier.selection import make_tasks

    rng = np.random.default_rng(0)
    n = 30
    delta, target = rng.normal(size=(n, 3)), np.ones(n)
    # texts reused across rows, as on real data: row i compares text i % 7 with text 7 + i % 5
    chosen = [f"t{i % 7}" for i in range(n)]
    rejected = [f"t{7 + i % 5}" for i in range(n)]
    tasks = make_tasks([(delta, target)], 0, [(chosen, rejected)])
    assert tasks
    row_of = {tuple(np.round(d, 12)): i for i, d in enumerate(delta)}
    for d_shot, _, d_rest, _ in tasks:
        shot_texts = {
            t
            for d in d_shot
            for t in (
                chosen[row_of[tuple(np.round(d, 12))]],
                rejected[row_of[tuple(np.round(d, 12))]],
            )
        }
        for d in d_rest:
            i = row_of[tuple(np.round(d, 12))]
            assert chosen[i] not in shot_texts and rejected[i] not in shot_texts
    assert len(make_tasks([(delta, target)], 0)) > len(
        tasks
    )  # without texts: held-out pairs of any kind


def test_difference_space_holds_users_and_round_trips(population, newcomers, tmp_path):
    model = get_backend("hier")({**FAST, "rank": 2, "space_dim": 4})
    model.fit(population.data)
    state = model.state_dict()
    assert state["space"].shape == (population.data.dim, 4 + 1)
    loaded = get_backend("hier").load(model.save(tmp_path / "hier_space"))
    np.testing.assert_array_equal(loaded.space, state["space"].astype(np.float64))
    shots = newcomers.data.for_user("new0").subset(np.arange(10))
    np.testing.assert_allclose(
        loaded.embed_user(shots).vector, model.embed_user(shots).vector, atol=1e-5
    )
    # the user's weights lie in the population reward plus the span of the 4 components
    q = state["space"].astype(np.float64)
    w = model.embed_user(shots).vector
    assert np.linalg.norm(w - q @ np.linalg.lstsq(q, w, rcond=None)[0]) < 1e-4 * np.linalg.norm(w)
