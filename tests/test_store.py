import json
import sqlite3

import numpy as np
import pytest
from sqlite_utils import Database

from persona_engine.errors import NotFoundError, UnknownUserError
from persona_engine.schemas import Comparison, ModelRecord, UserProfile
from persona_engine.store import Store, migrations


def comp(user="u1", chosen="good answer", rejected="bad answer", prompt="q"):
    return Comparison(user_id=user, prompt=prompt, chosen=chosen, rejected=rejected)


def test_blank_db_migrates_to_latest_schema():
    store = Store(Database(memory=True))
    tables = set(store.db.table_names())
    assert {"users", "items", "comparisons", "features", "models", "profiles", "online_eval"} <= tables
    assert [m.name for m in migrations.applied(store.db)] == [
        "m001_initial",
        "m002_pair_features",
        "m003_online_eval",
    ]
    assert store.db["features"].pks == ["encoder", "prompt_hash", "hash"]
    assert store.db["comparisons"].columns_dict["strength"] is float
    # migrating again is a no-op
    migrations.apply(store.db)
    assert len(migrations.applied(store.db)) == 3


def test_file_store_uses_wal(tmp_path):
    store = Store(tmp_path / "x.db")
    assert store.db.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.integrity_check() == "ok"


def test_add_comparisons_is_idempotent_and_hashes_items():
    store = Store()
    added, dup = store.add_comparisons([comp(), comp(chosen="other")])
    assert (added, dup) == (2, 0)
    added, dup = store.add_comparisons([comp(), comp(chosen="other")])
    assert (added, dup) == (0, 2)
    # prompt + 3 distinct responses
    assert store.db["items"].count == 4
    rows = store.comparisons("u1")
    assert [r.chosen for r in rows] == ["good answer", "other"]
    assert store.count_comparisons() == 2


def test_failed_transaction_keeps_earlier_data():
    store = Store()
    store.add_comparisons([comp()])
    with pytest.raises(sqlite3.IntegrityError):
        with store.transaction() as conn:
            conn.execute(
                "INSERT INTO users(id, tenant, attributes, created_at) VALUES ('u9','', '{}', 'now')"
            )
            conn.execute(
                "INSERT INTO users(id, tenant, attributes, created_at) VALUES ('u9','', '{}', 'now')"
            )
    assert not store.has_user("u9")
    assert store.count_comparisons() == 1


def test_features_roundtrip_float32_blobs():
    store = Store()
    v = np.array([1.5, -2.0, 3.25], dtype=np.float32)
    store.put_features("enc", {"h1": v})
    got = store.get_features("enc", ["h1", "missing"])
    assert list(got) == ["h1"]
    np.testing.assert_array_equal(got["h1"], v)
    blob = store.db.conn.execute("SELECT vector FROM features").fetchone()[0]
    assert blob == v.astype("<f4").tobytes()


def test_model_registry_versions_and_activation():
    store = Store()
    assert store.next_model_version("bt") == 1
    store.add_model(ModelRecord(id="bt-v1", backend="bt", version=1, path="/p1", encoder="e"))
    store.add_model(ModelRecord(id="bt-v2", backend="bt", version=2, path="/p2", encoder="e"))
    assert store.active_model("bt").id == "bt-v2"
    store.activate_model("bt-v1")
    assert store.active_model("bt").id == "bt-v1"
    assert [m.id for m in store.models("bt")] == ["bt-v1", "bt-v2"]
    with pytest.raises(NotFoundError):
        store.model("nope-v1")


def test_profiles_and_delete_user_remove_everything():
    store = Store()
    store.add_comparisons([comp(), comp(user="u2", chosen="shared", rejected="bad answer")])
    store.add_model(ModelRecord(id="m-v1", backend="m", version=1, path="/p", encoder="e"))
    store.put_profiles(
        [
            UserProfile(
                user_id="u1", model_id="m-v1", backend="m", vector=[0.5, 1.0], weights={"a": 1.0}
            )
        ]
    )
    p = store.profile("u1", "m-v1")
    assert p.vector == [0.5, 1.0] and p.weights == {"a": 1.0}
    store.put_features(
        "enc", {c.chosen_hash: np.ones(2, np.float32) for c in store.comparisons("u1")}
    )
    counts = store.delete_user("u1")
    assert counts["comparisons"] == 1 and counts["profiles"] == 1 and counts["users"] == 1
    assert store.profile("u1", "m-v1") is None
    with pytest.raises(UnknownUserError):
        store.user("u1")
    # "good answer" was only u1's: item and its cached features are gone; "bad answer" is still u2's
    texts = {r["text"] for r in store.db["items"].rows}
    assert "good answer" not in texts and "bad answer" in texts
    assert store.count_features() == 0
    assert json.loads(json.dumps(store.status()))["counts"]["users"] == 1
