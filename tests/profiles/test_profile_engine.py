"""Engine: similar users, cold start, attribute prior, active queries, online updates, versions,
deletion, export/import; on a synthetic population of two taste groups. The tests marked
``@ALL_BACKENDS`` run on the stand-in ``lowrank-laplace`` and on the shipped ``hier`` and ``lore``;
the others on the stand-in."""

from __future__ import annotations

import json

import numpy as np
import pytest

from persona_engine.errors import ConflictError, InvalidInputError, NotFoundError, UnknownUserError
from persona_engine.retrieval import ProfileIndex
from persona_engine.schemas import Comparison

from .conftest import BACKENDS, REFIT, TRAINED_USERS

ALL_BACKENDS = pytest.mark.parametrize("trained", BACKENDS, indirect=True)


@ALL_BACKENDS
def test_similar_users_come_from_the_same_taste_group(trained, population):
    same = []
    for u in range(10):
        near = trained.similar_users(population.user_id(u), 5)
        assert len(near) == 5 and population.user_id(u) not in [s.user_id for s in near]
        groups = [population.group(int(s.user_id[1:])) for s in near]
        assert groups[0] == population.group(u)  # the nearest user shares the taste
        same += [g == population.group(u) for g in groups]
    assert np.mean(same) >= 0.9  # half the population has the other taste
    assert len(trained.profile_index()) == TRAINED_USERS
    with pytest.raises(UnknownUserError):
        trained.similar_users("nobody")


@ALL_BACKENDS
def test_cold_start_never_fails_for_unknown_users(trained, prompt):
    rec, backend, state, source = trained.user_state("brand-new")
    assert source == "prior" and np.isfinite(state.vector).all()
    assert state.vector.shape == (backend.vector_dim,) and backend.vector_dim > 0
    scores = trained.score("brand-new", prompt, ["item-000001", "item-000002", "item-000003"])
    assert len(scores) == 3 and all(np.isfinite(scores))
    np.testing.assert_allclose(state.vector, backend.prior().vector, atol=1e-6)


def test_cold_start_with_bt_has_no_vectors_but_scores(trained, prompt):
    trained.train("bt", {"training": {"epochs": 5}}, rederive=False)
    assert len(trained.score("brand-new", prompt, ["item-000001", "item-000002"])) == 2
    with pytest.raises(InvalidInputError, match="personalized backend"):
        trained.similar_users(trained.store.user_ids()[0])


@ALL_BACKENDS
def test_neighbour_prior_from_three_answers_moves_towards_the_users_group(trained, population):
    """A user with three comparisons: the neighbour rule weighs population profiles by them."""
    rec, backend = trained.load_model()
    hits = 0
    for u in range(TRAINED_USERS, TRAINED_USERS + 10):
        uid = population.user_id(u)
        data = trained.preference_data(
            trained.store.comparisons(uid)[:3], encoder=trained.model_encoder(rec)
        )
        state, rule = trained.cold_start.state(uid, rec, backend, data)
        assert rule == "neighbours"
        mean_same = np.mean(
            [
                backend.users[population.user_id(v)].vector
                for v in range(TRAINED_USERS)
                if population.group(v) == population.group(u)
            ],
            axis=0,
        )
        mean_other = np.mean(
            [
                backend.users[population.user_id(v)].vector
                for v in range(TRAINED_USERS)
                if population.group(v) != population.group(u)
            ],
            axis=0,
        )
        hits += np.linalg.norm(state.vector - mean_same) < np.linalg.norm(state.vector - mean_other)
    assert hits >= 8
    single = trained.onboard(
        "solo",
        [Comparison(user_id="solo", prompt="p", chosen="item-000001", rejected="item-000002")],
    )
    assert single.source == "prior" and single.n_comparisons == 1


@ALL_BACKENDS
def test_attribute_prior_beats_population_prior_when_attributes_carry_the_group(
    trained, population
):
    for u in range(population.n_users):
        trained.set_user_attributes(
            population.user_id(u),
            {"group": f"g{population.group(u)}", "noise": ["x", "y", "z"][u % 3]},
        )
    rec, backend = trained.load_model()
    prior = trained.fit_attribute_prior()
    assert (
        prior is not None and prior.n_users == TRAINED_USERS and "group=g0" in prior.encoder.columns
    )
    trained.update_profiles(
        [population.user_id(u) for u in range(TRAINED_USERS, population.n_users)]
    )
    err_attr, err_pop = [], []
    for u in range(TRAINED_USERS, population.n_users):
        uid = population.user_id(u)
        truth = np.asarray(trained.profile(uid).vector)
        state, rule = trained.cold_start.prior(uid, rec, backend)
        assert rule == "attributes"
        err_attr.append(np.linalg.norm(state.vector - truth))
        err_pop.append(np.linalg.norm(backend.prior().vector - truth))
    assert np.mean(err_attr) < 0.8 * np.mean(err_pop)
    trained.set_user_attributes("stranger", {"group": "unknown-value"})
    assert trained.cold_start.prior("stranger", rec, backend)[1] == "population"


@ALL_BACKENDS
def test_next_queries_returns_valid_unanswered_pairs(trained, population, prompt):
    uid = population.user_id(TRAINED_USERS + 1)
    answered = trained.store.comparisons(uid)[0]
    items = [answered.chosen, answered.rejected] + [f"item-{i:06d}" for i in range(350, 362)]
    queries = trained.next_queries(uid, items, n=4, prompt=prompt)
    assert len(queries) == 4 and len({(q.a, q.b) for q in queries}) == 4
    for q in queries:
        assert q.a in items and q.b in items and q.a != q.b and q.information >= 0
        assert {q.a, q.b} != {answered.chosen, answered.rejected}
    pairs = trained.next_queries(
        "brand-new", [("item-000001", "item-000002"), ("item-000003", "item-000004")], n=5
    )
    assert len(pairs) == 2
    with pytest.raises(InvalidInputError):
        trained.next_queries(uid, ["only-one"], n=1)
    with pytest.raises(InvalidInputError):
        trained.next_queries(uid, items, n=0)
    methods = ["population"]
    if trained.load_model()[1].prior().uncertainty is not None:
        methods.append("posterior")  # a backend with a posterior (lore reports none)
    for method in methods:
        chosen = trained.next_queries(uid, items, n=2, prompt=prompt, method=method)
        assert len(chosen) == 2 and all(q.a in items and q.b in items for q in chosen)
    with pytest.raises(InvalidInputError, match="unknown method"):
        trained.next_queries(uid, items, n=1, method="oracle")


def _pairs_by_group_margin(population, n_agree: int) -> tuple[tuple[str, str], list, tuple]:
    """Among pairs of the items 350-399: the pair on which the two taste groups disagree most
    surely (their true reward margins have opposite signs, the smaller as large as can be),
    ``n_agree`` pairs on which they agree most surely, and the pair closest to a coin flip for
    both groups (both margins as small as can be)."""
    idx = np.arange(350, 400)
    feats = population.features[idx]
    diff = feats[:, None, :] - feats[None, :, :]  # (50, 50, d)
    margin = 3.0 * np.einsum("abd,gd->gab", diff, population.directions)  # (groups, 50, 50)
    sure = np.minimum(abs(margin[0]), abs(margin[1]))
    agree = np.sign(margin[0]) == np.sign(margin[1])
    a, b = np.triu_indices(len(idx), 1)
    pick = [(a[k], b[k]) for k in np.argsort(-sure[a, b], kind="stable")]
    items = population.items

    def pair(i: int, j: int) -> tuple[str, str]:
        return items[idx[i]], items[idx[j]]

    disagree = next(pair(i, j) for i, j in pick if not agree[i, j])
    agreeing = [pair(i, j) for i, j in pick if agree[i, j]][:n_agree]
    flat = np.argmin(np.maximum(abs(margin[0]), abs(margin[1]))[a, b])
    return disagree, agreeing, pair(a[flat], b[flat])


@ALL_BACKENDS
def test_next_query_for_a_new_user_is_the_pair_the_taste_groups_disagree_on(
    trained, population, prompt
):
    """Before any answer the user may belong to either group: only a pair the groups answer
    differently tells which. Pairs everyone answers alike come after it, and so does a pair
    whose answer is a coin flip for everyone (uncertain, yet it tells nothing about the user)."""
    disagree, agreeing, coin_flip = _pairs_by_group_margin(population, 4)
    queries = trained.next_queries(
        "brand-new", [*agreeing, coin_flip, disagree], n=6, prompt=prompt
    )
    assert (queries[0].a, queries[0].b) == disagree
    assert queries[0].information > 0.4 and max(q.information for q in queries[1:]) < 0.1
    flip = next(q for q in queries if (q.a, q.b) == coin_flip)
    assert flip.entropy > 0.5  # as uncertain as the disagreement, and far less informative


def _embedded(engine, model_id: str, user_id: str) -> np.ndarray:
    """The user's vector as the model embeds all of their stored comparisons."""
    rec, backend = engine.load_model(model_id)
    comps = engine.store.comparisons(user_id)
    return backend.embed_user(
        engine.preference_data(comps, encoder=engine.model_encoder(rec))
    ).vector


@ALL_BACKENDS
def test_online_update_changes_profile_and_index(trained, population, prompt):
    uid = population.user_id(3)
    before = np.asarray(trained.profile(uid).vector)
    trained.profile_index()  # built before the update, so it has to follow it
    extra = [
        Comparison(user_id=uid, prompt=prompt, chosen=f"item-{i:06d}", rejected=f"item-{i + 1:06d}")
        for i in range(300, 340, 2)
    ]
    assert trained.record(extra, update_profile=True) == 20
    after = trained.profile(uid)
    assert (
        after.source == "onboarded"
        and after.n_comparisons == 40
        and after.model_id == trained.model_record().id
    )
    assert not np.allclose(before, after.vector)
    # re-embedded from all 40 answers (the model itself is not refitted)
    np.testing.assert_allclose(after.vector, _embedded(trained, after.model_id, uid), atol=1e-4)
    index = trained.profile_index()
    _, vec = index.vectors([uid])
    np.testing.assert_allclose(vec[0], after.vector, rtol=1e-6)
    assert trained.similar_users(uid, 1)[0].user_id != uid


@ALL_BACKENDS
def test_refit_rederives_profiles_per_version(trained, population):
    onboarded = population.user_id(TRAINED_USERS + 2)
    before = trained.onboard(onboarded)
    v1 = trained.model_record()
    name = v1.backend
    idx1 = trained.profile_index(v1.id)
    assert onboarded in idx1
    v2 = trained.train(name, REFIT[name], users=[population.user_id(u) for u in range(50)])
    assert v2.id == f"{name}-v2" and trained.model_record().id == v2.id
    _, backend2 = trained.load_model(v2.id)
    for uid in (onboarded, population.user_id(70)):  # onboarded under v1; trained in v1, not v2
        prof = trained.profile(uid)
        assert prof.model_id == v2.id and prof.source == "onboarded"
        # re-derived by the new model from the user's comparisons, not carried over from v1
        np.testing.assert_allclose(prof.vector, _embedded(trained, v2.id, uid), atol=1e-4)
    old = trained.profile(onboarded, model=v1.id)  # the old version is untouched
    np.testing.assert_array_equal(old.vector, before.vector)
    idx2 = trained.profile_index()
    assert idx2 is not idx1 and idx2.dim == backend2.vector_dim
    assert onboarded in idx2 and population.user_id(70) in idx2
    assert trained.stale_users() == []
    v3 = trained.train(
        name, REFIT[name], users=[population.user_id(u) for u in range(20)], rederive=False
    )
    assert (
        onboarded in trained.stale_users(v3.id) and trained.store.profile(onboarded, v3.id) is None
    )


def _mentions(engine, needle: str) -> list[str]:
    """Every (table, column) of the store whose text mentions ``needle``."""
    conn = engine.store.db.conn
    hits = []
    for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall():
        for col in [r[1] for r in conn.execute(f"PRAGMA table_info('{table}')").fetchall()]:
            n = conn.execute(
                f'SELECT count(*) FROM "{table}" WHERE CAST("{col}" AS TEXT) LIKE ?',
                (f"%{needle}%",),
            ).fetchone()[0]
            if n:
                hits.append(f"{table}.{col}")
    return hits


def test_delete_user_leaves_nothing(trained, population):
    uid = population.user_id(5)
    index = trained.profile_index()
    rec, backend = trained.load_model()
    _, vec = index.vectors([uid])
    assert uid in backend.users and _mentions(trained, uid)
    counts = trained.delete_user(uid)
    assert counts["comparisons"] == 20 and counts["profiles"] == 1 and counts["index_entries"] == 1
    assert _mentions(trained, uid) == []
    assert uid not in trained.profile_index() and uid not in backend.users
    stored = trained.profile_index()._flat_storage()
    assert not np.any(np.all(np.isclose(stored, vec[0]), axis=1))  # the vector is gone from memory
    saved = trained._indexes.path(rec.id)
    # the privacy window: the old file still holds them (a tombstone hides them) until compaction
    assert ProfileIndex.saved_holds(saved, uid) and (saved / "tombstones.jsonl").exists()
    assert uid not in ProfileIndex.load(saved)
    assert trained.compact_profile_indexes() == [rec.id]
    assert not ProfileIndex.saved_holds(saved, uid) and not (saved / "tombstones.jsonl").exists()
    assert (
        uid
        not in json.loads(
            (trained.home / "models" / "lowrank-laplace" / "v1" / "config.json").read_text()
        )["users"]
    )
    with pytest.raises(UnknownUserError):
        trained.delete_user(uid)


def test_export_import_round_trip(trained, population, tmp_path):
    uid = population.user_id(7)
    trained.set_user_attributes(uid, {"language": "fr"})
    doc = trained.export_profile(uid)
    path = tmp_path / "p.json"
    path.write_text(doc.model_dump_json())
    trained.delete_user(uid)
    stored = trained.import_profile(json.loads(path.read_text()))
    assert len(stored) == 1 and stored[0].source == "imported"
    again = trained.profile(uid)
    np.testing.assert_allclose(again.vector, doc.profiles[0].vector)
    assert trained.store.user(uid)["attributes"] == {"language": "fr"}
    assert uid in trained.profile_index()
    copy = trained.import_profile(doc, as_user="twin")
    assert copy[0].user_id == "twin" and trained.similar_users("twin", 1)[0].user_id == uid
    bad = doc.model_dump(mode="json")
    bad["profiles"][0]["vector"] = [0.0, 1.0]
    with pytest.raises(InvalidInputError, match="4-dimensional"):
        trained.import_profile(bad)
    bad = doc.model_dump(mode="json")
    bad["models"]["lowrank-laplace-v1"]["trained_at"] = "2001-01-01T00:00:00+00:00"
    with pytest.raises(ConflictError):
        trained.import_profile(bad)
    bad = doc.model_dump(mode="json")
    bad["profiles"][0]["model_id"] = "nope-v9"
    with pytest.raises(NotFoundError, match="nope-v9"):
        trained.import_profile(bad)
    with pytest.raises(InvalidInputError):
        trained.import_profile({"user_id": "x", "format": "something-else"})
