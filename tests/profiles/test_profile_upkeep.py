"""Index upkeep off the request path (queries apply a bounded share of the log, never prune or
save; the writer applies its own writes; a maintenance thread does the rest) and fast deletion
(tombstones, then compaction; the saved file read back)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from persona_engine.retrieval import ProfileIndex, ProfileIndexes
from persona_engine.retrieval import sync as sync_module
from persona_engine.retrieval.sync import log_head
from persona_engine.schemas import ModelRecord, UserProfile
from persona_engine.store import Store


def _store(path):
    store = Store(path)
    store.add_model(ModelRecord(id="m-v1", backend="m", version=1, path="/p", encoder="e"))
    return store


def _put(store, vectors):
    store.put_profiles(
        UserProfile(user_id=u, model_id="m-v1", backend="m", vector=list(map(float, v)))
        for u, v in vectors.items()
    )


def _saved_file(path):
    """(user ids, every stored vector) as the saved files hold them, tombstones not applied."""
    import faiss

    raw = faiss.read_index(str(path / "index.faiss"))
    users = np.load(path / "slots.npz")["users"].tolist()
    return users, raw.reconstruct_n(0, raw.ntotal)


def _holds(vectors, vec):
    return bool(np.any(np.all(np.isclose(vectors, vec), axis=1)))


def test_a_query_applies_a_bounded_share_and_never_prunes_or_saves(tmp_path, monkeypatch):
    store = _store(tmp_path / "p.db")
    _put(store, {f"u{i}": [i, 0] for i in range(20)})
    indexes = ProfileIndexes(store, tmp_path / "indexes")
    index = indexes.get("m-v1", 2)
    other = Store(tmp_path / "p.db")  # another process
    for i in range(10):
        _put(other, {f"late{i}": [100 + i, 0]})
    monkeypatch.setattr(sync_module, "QUERY_SYNC_ENTRIES", 3)
    monkeypatch.setattr(sync_module, "LOG_KEEP", 1)  # the log is far over its bound

    def forbidden(*args, **kwargs):
        raise AssertionError("a query pruned the log or saved the index")

    monkeypatch.setattr(store, "prune_change_log_through", forbidden)
    monkeypatch.setattr(indexes, "save", forbidden)
    seq = index.meta["seq"]
    indexes.get("m-v1", 2)
    assert index.meta["seq"] == seq + 3 and sum(f"late{i}" in index for i in range(10)) == 3
    assert indexes.sync_loaded() == 7  # what the maintenance thread (or the writer) applies
    assert all(f"late{i}" in index for i in range(10))


def test_a_process_sees_its_own_write_in_its_next_query(trained, population, monkeypatch):
    uid = population.user_id(3)
    index = trained.profile_index()
    other = Store(trained.store.path)  # a backlog from another process, past a query's share
    for i in range(5):
        other.put_profiles(
            [trained.store.profile(population.user_id(10 + i), index.meta["model_id"])]
        )
    monkeypatch.setattr(sync_module, "QUERY_SYNC_ENTRIES", 1)
    trained.store.add_comparisons(population.comparisons(3, 4)[:2])
    trained.update_profiles([uid])
    stored = trained.store.profile(uid, index.meta["model_id"]).vector
    assert index.meta["seq"] == log_head(trained.store)  # the writer applied everything
    _, vec = trained.profile_index().vectors([uid])
    np.testing.assert_allclose(vec[0], stored, rtol=1e-6)


def test_writes_prune_a_chunk_only_without_a_maintenance_thread(tmp_path, monkeypatch):
    store = _store(tmp_path / "p.db")
    indexes = ProfileIndexes(store, tmp_path / "indexes")
    indexes.get("m-v1", 2)
    for i in range(30):
        _put(store, {f"u{i}": [i, 0]})
    monkeypatch.setattr(sync_module, "LOG_KEEP", 2)
    monkeypatch.setattr(sync_module, "WRITE_PRUNE_CHUNK", 4)
    indexes.after_write()
    assert store.change_log_pruned_through() == 4
    upkeep = indexes.start_maintenance(interval_s=0.05)
    try:
        indexes.after_write()  # the thread prunes now, not the writer
        deadline = time.monotonic() + 5
        while store.change_log_pruned_through() < log_head(store) - 2:
            assert time.monotonic() < deadline, "the maintenance thread did not prune"
            time.sleep(0.02)
    finally:
        indexes.stop_maintenance()
    assert upkeep.rounds >= 1


def test_the_maintenance_thread_applies_other_processes_writes(tmp_path):
    store = _store(tmp_path / "p.db")
    _put(store, {"a": [0, 0]})
    indexes = ProfileIndexes(store, tmp_path / "indexes")
    index = indexes.get("m-v1", 2)
    indexes.start_maintenance(interval_s=0.05)
    try:
        _put(Store(tmp_path / "p.db"), {"b": [1, 1]})
        deadline = time.monotonic() + 5
        while "b" not in index:  # no query: the thread did it
            assert time.monotonic() < deadline, "the maintenance thread did not catch up"
            time.sleep(0.02)
    finally:
        indexes.stop_maintenance()


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_delete_tombstones_then_compaction_leaves_no_vector_on_disk(tmp_path, kind):
    store = _store(tmp_path / "p.db")
    rng = np.random.default_rng(0)
    vectors = {f"u{i}": rng.normal(size=4) for i in range(40)}
    _put(store, vectors)
    indexes = ProfileIndexes(store, tmp_path / "indexes", config={"kind": kind})
    index = indexes.get("m-v1", 4)
    path = indexes.path("m-v1")
    store.delete_profile("u7")
    assert indexes.purge_user("u7") == ["m-v1"]
    assert "u7" not in index and not _holds(index.vectors()[1], vectors["u7"])
    (stone,) = [json.loads(line) for line in (path / "tombstones.jsonl").read_text().splitlines()]
    assert stone["user_id"] == "u7" and len(stone["rowids"]) == 1
    assert stone["seq"] == log_head(store)
    # before compaction: still in the old file, never returned
    users, raw = _saved_file(path)
    assert "u7" in users and _holds(raw, vectors["u7"])
    fresh = ProfileIndexes(store, tmp_path / "indexes", config={"kind": kind})
    loaded = fresh.get("m-v1", 4)
    assert "u7" not in loaded
    hits = loaded.search(vectors["u7"], 40)[0]
    assert "u7" not in {h.user_id for h in hits} and len(hits) == 39
    # after compaction: gone from every file
    assert indexes.compact() == ["m-v1"]
    users, raw = _saved_file(path)
    assert "u7" not in users and not _holds(raw, vectors["u7"])
    assert not (path / "tombstones.jsonl").exists()
    assert len(ProfileIndex.load(path)) == 39


def test_a_saved_index_not_in_memory_gets_its_tombstone_and_a_late_save_keeps_it(tmp_path):
    store = _store(tmp_path / "p.db")
    _put(store, {"a": [0, 0], "b": [1, 0], "c": [2, 0]})
    indexes = ProfileIndexes(store, tmp_path / "indexes")
    stale = indexes.get("m-v1", 2)  # seq before the deletion below
    cold = ProfileIndexes(store, tmp_path / "indexes")  # another process: nothing loaded
    store.delete_profile("b")
    assert cold.purge_user("b") == []
    assert "b" not in ProfileIndex.load(indexes.path("m-v1"))
    indexes.save(stale)  # a copy that has not seen the deletion keeps the tombstone
    assert ProfileIndex.saved_holds(indexes.path("m-v1"), "b")
    assert "b" not in ProfileIndex.load(indexes.path("m-v1"))
    indexes.sync(stale)
    indexes.save(stale)  # caught up: the tombstone goes, and so does the vector
    assert not ProfileIndex.saved_holds(indexes.path("m-v1"), "b")
    assert not (indexes.path("m-v1") / "tombstones.jsonl").exists()


def test_maintenance_compacts_once_tombstones_pass_their_bound(tmp_path, monkeypatch):
    store = _store(tmp_path / "p.db")
    _put(store, {f"u{i}": [i, 0] for i in range(10)})
    indexes = ProfileIndexes(store, tmp_path / "indexes")
    indexes.get("m-v1", 2)
    monkeypatch.setattr(sync_module, "TOMBSTONE_BOUND", 2)
    for user in ("u1", "u2"):
        store.delete_profile(user)
        indexes.purge_user(user)
        assert indexes.maintain()["compacted"] == (1 if user == "u2" else 0)
    users, _ = _saved_file(indexes.path("m-v1"))
    assert "u1" not in users and "u2" not in users
