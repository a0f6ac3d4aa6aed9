"""ProfileIndexes follows the store's profiles table, whoever writes it."""

from __future__ import annotations

import numpy as np
import pytest

from persona_engine.errors import InvalidInputError
from persona_engine.retrieval import ProfileIndexes
from persona_engine.retrieval.sync import log_head, prune_change_log
from persona_engine.schemas import ModelRecord, UserProfile
from persona_engine.store import Store


def _store(path):
    store = Store(path)
    for v in (1, 2):
        store.add_model(
            ModelRecord(id=f"m-v{v}", backend="m", version=v, path="/nowhere", encoder="e")
        )
    return store


def _put(store, model_id, vectors):
    store.put_profiles(
        UserProfile(user_id=u, model_id=model_id, backend="m", vector=list(map(float, v)))
        for u, v in vectors.items()
    )


def test_index_follows_inserts_updates_deletes_from_another_connection(tmp_path):
    db = tmp_path / "p.db"
    store = _store(db)
    _put(store, "m-v1", {"a": [0, 0], "b": [1, 0], "c": [9, 9]})
    indexes = ProfileIndexes(store, tmp_path / "indexes")
    index = indexes.get("m-v1", 2)
    assert sorted(index.user_ids()) == ["a", "b", "c"]
    other = Store(db)  # e.g. another process
    _put(other, "m-v1", {"b": [9, 9.5], "d": [0.1, 0]})
    _put(other, "m-v2", {"e": [0, 0]})  # another model version: never in this index
    other.delete_profile("a")
    index = indexes.get("m-v1", 2)
    assert sorted(index.user_ids()) == ["b", "c", "d"]
    assert [s.user_id for s in index.search([0, 0], 3)[0]] == ["d", "c", "b"]
    _, vec = index.vectors(["b"])
    np.testing.assert_allclose(vec[0], [9, 9.5])
    assert indexes.get("m-v2", 2).user_ids() == ["e"]


def test_saved_index_is_loaded_and_caught_up(tmp_path):
    store = _store(tmp_path / "p.db")
    _put(store, "m-v1", {f"u{i}": [i, 0] for i in range(50)})
    ProfileIndexes(store, tmp_path / "indexes").get("m-v1", 2)
    _put(store, "m-v1", {"late": [100, 0]})
    fresh = ProfileIndexes(store, tmp_path / "indexes")
    index = fresh._load_saved("m-v1", 2)
    assert index is not None and "late" not in index  # loaded from disk, not rebuilt
    index = fresh.get("m-v1", 2)
    assert "late" in index and len(index) == 51


def test_pruned_log_forces_a_rebuild(tmp_path):
    store = _store(tmp_path / "p.db")
    _put(store, "m-v1", {"a": [0, 0]})
    indexes = ProfileIndexes(store, tmp_path / "indexes")
    indexes.get("m-v1", 2)
    for i in range(7):
        _put(store, "m-v2", {f"x{i}": [i, i]})
    _put(store, "m-v1", {"b": [1, 1]})
    assert prune_change_log(store, keep=2) > 0
    fresh = ProfileIndexes(store, tmp_path / "indexes")
    assert fresh._load_saved("m-v1", 2) is None  # it missed pruned changes
    assert sorted(fresh.get("m-v1", 2).user_ids()) == ["a", "b"]


def test_pruning_is_bounded_per_call(tmp_path):
    store = _store(tmp_path / "p.db")
    ProfileIndexes(store, tmp_path / "indexes").install()
    for i in range(30):
        _put(store, "m-v1", {f"u{i}": [i, i]})
    assert log_head(store) == 30
    # over 2 * keep entries: the oldest go, at most `chunk` per call, until at most 2 * keep remain
    assert [prune_change_log(store, keep=5, chunk=8) for _ in range(5)] == [8, 8, 8, 0, 0]
    left = store.db.conn.execute("SELECT count(*) FROM profile_changes").fetchone()[0]
    assert left == 6


def test_change_log_holds_no_user_ids(tmp_path):
    store = _store(tmp_path / "p.db")
    indexes = ProfileIndexes(store, tmp_path / "indexes")
    indexes.install()
    _put(store, "m-v1", {"secret-user": [1, 2]})
    store.delete_profile("secret-user")
    rows = store.db.conn.execute("SELECT * FROM profile_changes").fetchall()
    assert rows and all("secret-user" not in map(str, r) for r in rows)


def test_zero_dim_models_have_no_index(tmp_path):
    indexes = ProfileIndexes(_store(tmp_path / "p.db"), None)
    with pytest.raises(InvalidInputError, match="personalized backend"):
        indexes.get("m-v1", 0)


def test_delete_user_finds_orphans_by_probe_and_by_full_pass(tmp_path, monkeypatch):
    import persona_engine.store as store_module
    from persona_engine.schemas import Comparison

    store = Store(tmp_path / "p.db")
    shared = [
        Comparison(user_id=f"x{i}", prompt="p", chosen=f"shared {j}", rejected=f"shared {j + 1}")
        for i in range(30)
        for j in range(3)
    ]
    store.add_comparisons(shared)
    mine = [
        Comparison(user_id="me", prompt="p", chosen="shared 0", rejected="only mine"),
        Comparison(user_id="me", prompt="mine too", chosen="shared 1", rejected="shared 3"),
    ]
    store.add_comparisons(mine)
    monkeypatch.setattr(
        store_module, "PROBE_ROWS", 2
    )  # most look-ups miss the probe: the full pass decides
    counts = store.delete_user("me")
    assert counts["items"] == 2  # "only mine" and the prompt "mine too"
    texts = {r[0] for r in store.db.conn.execute("SELECT text FROM items")}
    assert (
        "only mine" not in texts
        and "mine too" not in texts
        and {"shared 0", "shared 1", "shared 3", "p"} <= texts
    )
    assert store.db.conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert store.db.conn.execute("PRAGMA foreign_key_check").fetchall() == []
