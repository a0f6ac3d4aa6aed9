"""One behaviour, two stores: every test here runs on SQLite and on PostgreSQL (see conftest)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from persona_engine.errors import NotFoundError, UnknownUserError
from persona_engine.retrieval import ProfileIndex, ProfileIndexes
from persona_engine.retrieval.sync import log_head, prune_change_log
from persona_engine.schemas import Comparison, ModelRecord, UserProfile, content_hash
from persona_engine.store.base import TABLES
from persona_engine.store.online import OnlineOutcomes


def comp(user="u1", chosen="good answer", rejected="bad answer", prompt="q"):
    return Comparison(user_id=user, prompt=prompt, chosen=chosen, rejected=rejected)


def model(store, n=1, backend="m"):
    return store.add_model(
        ModelRecord(id=f"{backend}-v{n}", backend=backend, version=n, path="/p", encoder="e")
    )


def put(store, model_id, vectors):
    store.put_profiles(
        UserProfile(user_id=u, model_id=model_id, backend="m", vector=list(map(float, v)))
        for u, v in vectors.items()
    )


def outcomes(comps: list[Comparison], model_id="m-v1", margin=0.5, state="prior", scored=None):
    """Outcomes of a batch: every comparison scored, or those at the positions ``scored``."""
    scored = range(len(comps)) if scored is None else scored
    margins = np.full(len(comps), np.nan)
    states: list[str | None] = [None] * len(comps)
    for i in scored:
        margins[i], states[i] = margin, state
    return OnlineOutcomes(model_id, margins, states)


def test_blank_store_migrates_and_opening_again_is_a_no_op(store, connect):
    status = store.status()
    assert set(status["counts"]) == set(TABLES) and not any(status["counts"].values())
    assert status["migrations"] and store.integrity_check() == "ok"
    store.add_comparisons([comp()])
    again = connect()  # migrates again: nothing to do, nothing lost
    assert again.status()["migrations"] == status["migrations"]
    assert again.count_comparisons() == 1


def test_add_comparisons_is_idempotent_and_hashes_items(store):
    assert store.add_comparisons([comp(), comp(chosen="other")]) == (2, 0)
    assert store.add_comparisons([comp(), comp(chosen="other"), comp(chosen="third")]) == (1, 2)
    assert store.add_comparisons([comp(chosen="x"), comp(chosen="x")]) == (1, 1)  # within a batch
    assert store.status()["counts"]["items"] == 6  # prompt + 5 distinct responses
    rows = store.comparisons("u1")
    assert [r.chosen for r in rows] == ["good answer", "other", "third", "x"]
    assert rows[0].chosen_hash == content_hash("good answer") and rows[0].tie is False
    assert store.count_comparisons() == 4 and store.count_comparisons("nobody") == 0


def test_failed_transaction_keeps_earlier_data(store):
    store.add_comparisons([comp()])
    insert = "INSERT INTO users(id, tenant, attributes, created_at) VALUES ('u9', '', '{}', 'now')"
    with pytest.raises(Exception, match="(?i)unique"):
        with store.transaction() as conn:
            conn.execute(insert)
            conn.execute(insert)
    assert not store.has_user("u9")
    assert store.count_comparisons() == 1


def test_users_tenants_attributes_and_reads_by_user(store):
    store.add_comparisons([comp("a"), comp("b", chosen="other")], tenant="shop")
    store.add_comparisons([comp("c")])
    store.upsert_user("a", attributes={"age": 30})
    store.upsert_user("a")  # no attributes: keeps the stored ones
    assert store.user("a")["attributes"] == {"age": 30} and store.user("a")["tenant"] == "shop"
    assert store.user("a")["n_comparisons"] == 1
    assert store.user_ids("shop") == ["a", "b"] and store.user_ids() == ["a", "b", "c"]
    assert store.user_attributes()["a"] == {"age": 30}
    with pytest.raises(UnknownUserError):
        store.user("zed")
    assert [c.user_id for c in store.comparisons(users=["c", "a", "c"])] == ["a", "c"]
    assert store.comparisons("a", users=["b"]) == []
    keys = store.comparison_keys(["b"])
    assert [tuple(k) for k in keys] == [
        ("b", content_hash("q"), content_hash("other"), content_hash("bad answer"), 1.0, 0, "text")
    ]
    assert store.comparison_counts() == {"a": 1, "b": 1, "c": 1}
    assert store.item_texts([content_hash("other"), "missing"]) == {content_hash("other"): "other"}


def test_feature_cache_round_trips_float32_bytes(store):
    v = np.array([1.5, -2.0, 3.25], dtype=np.float32)
    store.put_features("enc", {"h1": v})
    store.put_pair_features("enc", {("p1", "h1"): v * 2, ("p1", ""): v * 3})
    got = store.get_features("enc", ["h1", "missing"])
    assert list(got) == ["h1"]
    np.testing.assert_array_equal(got["h1"], v)
    pairs = store.get_pair_features("enc", [("p1", "h1"), ("p1", ""), ("", "h1"), ("p2", "h1")])
    assert set(pairs) == {("p1", "h1"), ("p1", ""), ("", "h1")}
    np.testing.assert_array_equal(pairs[("p1", "")], v * 3)
    store.put_features("enc", {"h1": v + 1})  # replaces
    np.testing.assert_array_equal(store.get_features("enc", ["h1"])["h1"], v + 1)
    assert store.get_features("other", ["h1"]) == {}
    with store.transaction() as conn:
        blob = conn.execute("SELECT vector FROM features WHERE prompt_hash = ''").fetchone()[0]
    assert bytes(blob) == (v + 1).astype("<f4").tobytes()
    assert store.count_features() == 3 and store.count_features("enc") == 3


def test_model_registry_versions_metrics_and_activation(store):
    assert store.next_model_version("bt") == 1
    model(store, 1, "bt")
    model(store, 2, "bt")
    model(store, 1, "hier")
    assert store.next_model_version("bt") == 3
    assert store.active_model("bt").id == "bt-v2" and store.active_model().id == "hier-v1"
    store.activate_model("bt-v1")
    assert store.active_model("bt").id == "bt-v1"
    assert [m.active for m in store.models("bt")] == [True, False]  # one active per backend
    assert [m.id for m in store.models("bt")] == ["bt-v1", "bt-v2"]
    store.set_model_metrics("bt-v2", {"accuracy": 0.75})
    assert store.model("bt-v2").metrics == {"accuracy": 0.75}
    inactive = store.add_model(
        ModelRecord(id="bt-v3", backend="bt", version=3, path="/p", encoder="e"), activate=False
    )
    assert not inactive.active and store.active_model("bt").id == "bt-v1"
    for call in (store.model, store.activate_model, lambda m: store.set_model_metrics(m, {})):
        with pytest.raises(NotFoundError):
            call("nope-v1")


def test_profiles_row_ids_and_lookups(store):
    model(store, 1)
    model(store, 2)
    put(store, "m-v1", {"a": [1, 0], "b": [0, 1]})
    put(store, "m-v2", {"a": [2, 2]})
    rowids, ids, mat = store.profile_rows("m-v1")
    assert ids == ["a", "b"] and mat.dtype == np.float32 and mat.tolist() == [[1, 0], [0, 1]]
    put(store, "m-v1", {"a": [5, 5]})  # an upsert keeps the row id
    again, ids2, mat2 = store.profile_rows("m-v1", [int(rowids[0])])
    assert again.tolist() == [rowids[0]] and ids2 == ["a"] and mat2.tolist() == [[5, 5]]
    assert store.profile("a", "m-v1").vector == [5.0, 5.0] and store.profile("z", "m-v1") is None
    assert [p.user_id for p in store.profiles("m-v1")] == ["a", "b"]
    assert store.profile_model_ids("a") == ["m-v1", "m-v2"]
    assert store.profile_users("m-v1") == ["a", "b"]
    assert store.profile_users("m-v1", without="m-v2") == ["b"]
    vecs = store.profile_vectors("m-v1", ["b", "nobody"])
    assert list(vecs) == ["b"] and vecs["b"][0].tolist() == [0, 1]
    assert store.count_profiles() == 3 and store.count_profiles("m-v1") == 2
    assert store.delete_profile("a", "m-v1") == 1 and store.count_profiles() == 2
    assert store.delete_profile("a") == 1 and store.profile_model_ids("a") == []


def test_change_log_records_every_profile_write_whoever_writes(store, connect):
    model(store, 1)
    model(store, 2)
    store.install_change_log()
    start = log_head(store)
    put(store, "m-v1", {"a": [0, 0], "b": [1, 0]})
    rowids, ids, _ = store.profile_rows("m-v1")
    row = dict(zip(ids, rowids.tolist()))
    head = log_head(store)
    assert head > start
    assert sorted(store.changed_profile_rows("m-v1", start, head)) == sorted(row.values())
    other = connect()  # another connection: its writes are logged too
    put(other, "m-v1", {"b": [2, 2]})
    put(other, "m-v2", {"c": [3, 3]})
    other.delete_profile("a", "m-v1")
    assert sorted(store.changed_profile_rows("m-v1", head, log_head(store))) == sorted(row.values())
    assert len(store.changed_profile_rows("m-v2", head, log_head(store))) == 1
    # pruning: the oldest entries go, the pruned mark moves
    total = log_head(store)
    assert prune_change_log(store, keep=1, chunk=2) == 2
    assert store.change_log_pruned_through() == 2 and log_head(store) == total


def test_profile_index_follows_writes_from_another_connection(store, connect, tmp_path):
    model(store, 1)
    put(store, "m-v1", {"a": [0, 0], "b": [1, 0], "c": [9, 9]})
    indexes = ProfileIndexes(store, tmp_path / "indexes")
    index = indexes.get("m-v1", 2)
    assert sorted(index.user_ids()) == ["a", "b", "c"]
    other = connect()
    put(other, "m-v1", {"b": [9, 9.5], "d": [0.1, 0]})
    other.delete_profile("c")
    index = indexes.get("m-v1", 2)
    assert sorted(index.user_ids()) == ["a", "b", "d"]
    assert [s.user_id for s in index.search([9, 9.5], 1)[0]] == ["b"]
    _, vec = index.vectors(["b"])
    np.testing.assert_allclose(vec[0], [9, 9.5])


def test_online_outcomes_only_beside_new_comparisons(store):
    first, second = comp(), comp(chosen="other")
    assert store.add_comparisons([first], outcomes=outcomes([first])) == (1, 0)
    # the first comparison is re-sent (scored by a newer model): stored already, so it keeps its
    # first outcome; the second is new. A re-sent comparison first in the batch makes the store
    # read the new rows' ids back instead of counting them.
    added = store.add_comparisons(
        [first, second], outcomes=outcomes([first, second], "m-v2", margin=-1)
    )
    assert added == (1, 1)
    rows = store.online_outcomes()
    assert [(r["model_id"], r["margin"], r["correct"], r["user_id"]) for r in rows] == [
        ("m-v1", 0.5, 1, "u1"),
        ("m-v2", -1.0, 0, "u1"),
    ]
    assert {"user_id", "n_before", "new_items", "state", "created_at"} <= set(rows[0])
    assert len(store.online_outcomes(model_id="m-v2", user_id="u1", tenant="")) == 1
    assert store.online_outcomes(since="9999") == [] and store.online_outcomes(tenant="x") == []
    # a comparison sent twice in one batch keeps one outcome, and one not scored keeps none
    third, fourth = comp(chosen="third"), comp(chosen="fourth")
    batch = [third, fourth, third]
    store.add_comparisons(batch, outcomes=outcomes(batch, "m-v3", scored=[0, 2]))
    assert [r["model_id"] for r in store.online_outcomes()] == ["m-v1", "m-v2", "m-v3"]
    with pytest.raises(ValueError, match="2 outcomes for a batch of 1"):
        store.add_comparisons([comp(chosen="fifth")], outcomes=outcomes([first, second]))


def test_outcome_history_facts_follow_the_order_comparisons_were_stored(store):
    """n_before and new_items: the user's comparisons stored before this one (by id), computed
    on read, then kept by complete_outcomes with the same values."""
    a = comp(chosen="a1", rejected="a2")
    b = comp(chosen="b1", rejected="b2")  # new responses, 1 before
    c = comp(chosen="a1", rejected="c2")  # a1 seen in a: not new, 2 before
    other = comp(user="u2", chosen="b1", rejected="a2")  # u2 never saw them: new, 0 before
    tie = Comparison(user_id="u1", prompt="q", chosen="t1", rejected="t2", tie=True)
    store.add_comparisons([a, b], outcomes=outcomes([a, b]))
    store.add_comparisons([tie, c, other], outcomes=outcomes([tie, c, other], scored=[1, 2]))
    d = comp(chosen="t1", rejected="d2")  # t1 was in the tie: not new; 4 before (the tie counts)
    store.add_comparisons([d], outcomes=outcomes([d]))
    want = [(0, 1), (1, 1), (3, 0), (0, 1), (4, 0)]

    def facts():
        return [(r["n_before"], r["new_items"]) for r in store.online_outcomes()]

    assert [r["user_id"] for r in store.online_outcomes()] == ["u1", "u1", "u1", "u2", "u1"]
    assert facts() == want
    assert store.complete_outcomes(limit=2) == 2
    assert store.complete_outcomes() == 3
    assert store.complete_outcomes() == 0
    assert facts() == want


def test_delete_user_removes_everything_of_the_user(store):
    mine, shared = comp(), comp(user="u2", chosen="shared", rejected="bad answer")
    store.add_comparisons([mine, shared], outcomes=outcomes([mine, shared]))
    model(store, 1)
    store.put_profiles(
        [UserProfile(user_id="u1", model_id="m-v1", backend="m", vector=[0.5, 1.0], weights={})]
    )
    store.put_features("enc", {content_hash("good answer"): np.ones(2, np.float32)})
    store.put_pair_features("enc", {(content_hash("q"), content_hash("good answer")): np.ones(2)})
    counts = store.delete_user("u1")
    assert counts == {
        "comparisons": 1,
        "profiles": 1,
        "online_outcomes": 1,
        "users": 1,
        "items": 1,  # "good answer" only; the prompt and "bad answer" are still u2's
    }
    assert store.profile("u1", "m-v1") is None and not store.has_user("u1")
    assert store.online_outcomes(user_id="u1") == [] and len(store.online_outcomes()) == 1
    assert store.item_texts([content_hash("good answer")]) == {}
    assert store.count_features() == 0
    assert json.loads(json.dumps(store.status()))["counts"]["users"] == 1
    assert store.integrity_check() == "ok"
    assert store.delete_user("u1")["users"] == 0  # again: nothing left to delete


def test_api_keys_and_tenants_are_shared_by_every_connection(store, connect):
    store.add_api_key("k1", "digest", tenant="shop", name="web", created_at="2026-01-01T00:00:00")
    store.add_comparisons([comp("alice")], tenant="shop")
    store.upsert_user("bob")
    other = connect()  # another process would see the same
    assert other.api_key("k1") == {
        "id": "k1",
        "hash": "digest",
        "tenant": "shop",
        "name": "web",
        "created_at": "2026-01-01T00:00:00",
        "revoked_at": None,
    }
    assert other.user_tenants(["alice", "bob", "nobody"]) == {"alice": "shop", "bob": ""}
    assert other.count_users("shop") == 1 and other.count_users() == 2
    assert other.revoke_api_key("k1", "2026-01-02") == 1 and store.revoke_api_key("k1", "x") == 0
    assert [k["revoked_at"] for k in store.api_keys()] == ["2026-01-02"]
    assert store.revoke_api_key("no-such-key", "x") == 0 and store.api_key("no-such-key") is None


def test_a_named_lock_has_one_holder_until_released(store, connect):
    release = store.try_lock("training")
    assert release is not None
    assert connect().try_lock("training") is None  # held, whoever asks
    release()
    again = connect().try_lock("training")
    assert again is not None
    again()


def test_model_files_travel_with_the_registry_where_the_store_keeps_them(
    store, tmp_path, monkeypatch
):
    monkeypatch.setattr("persona_engine.store.postgres_replicas.CHUNK_BYTES", 1000)  # 26 chunks
    saved = tmp_path / "saved"
    (saved / "sub").mkdir(parents=True)
    (saved / "config.json").write_text('{"users": ["u1"]}')
    (saved / "sub" / "model.safetensors").write_bytes(bytes(range(256)) * 100)
    store.add_model(
        ModelRecord(id="m-v1", backend="m", version=1, path=str(saved), encoder="e"),
        files=saved,
    )
    if not store.keeps_model_files:  # SQLite: the files stay where training saved them
        assert store.model_files_digest("m-v1") is None
        return
    digest = store.model_files_digest("m-v1")
    store.write_model_files("m-v1", tmp_path / "copy")
    assert (tmp_path / "copy" / "sub" / "model.safetensors").read_bytes() == bytes(range(256)) * 100
    (saved / "config.json").write_text('{"users": []}')
    store.put_model_files("m-v1", saved)
    assert store.model_files_digest("m-v1") not in (None, digest)


def test_deleted_users_are_tombstoned_then_compacted_away(store, tmp_path):
    """Fast deletion on either store: gone from memory at once, hidden in the saved file by a
    tombstone until compaction, then gone from the file too."""
    model(store, 1)
    put(store, "m-v1", {"a": [0, 0], "b": [5, 5], "c": [9, 9]})
    indexes = ProfileIndexes(store, tmp_path / "indexes")
    index = indexes.get("m-v1", 2)
    path = indexes.path("m-v1")
    store.delete_user("b")
    assert indexes.purge_user("b") == ["m-v1"] and "b" not in index
    assert ProfileIndex.saved_holds(path, "b")  # the window: still in the old file ...
    assert "b" not in ProfileIndexes(store, tmp_path / "indexes").get("m-v1", 2)  # ... never read
    assert indexes.compact() == ["m-v1"] and not ProfileIndex.saved_holds(path, "b")
    assert not (path / "tombstones.jsonl").exists()


def test_a_query_applies_at_most_its_share_of_the_log(store, connect, tmp_path, monkeypatch):
    from persona_engine.retrieval import sync

    model(store, 1)
    put(store, "m-v1", {"a": [0, 0]})
    indexes = ProfileIndexes(store, tmp_path / "indexes")
    index = indexes.get("m-v1", 2)
    other = connect()
    for i in range(6):
        put(other, "m-v1", {f"n{i}": [i, i]})
    monkeypatch.setattr(sync, "QUERY_SYNC_ENTRIES", 2)
    indexes.get("m-v1", 2)
    assert len(index) == 3
    indexes.after_write()  # the writer's side (or the maintenance thread) takes in the rest
    assert len(index) == 7
