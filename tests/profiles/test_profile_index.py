"""ProfileIndex: add/update/remove/search against brute force, approximate recall, persistence."""

from __future__ import annotations

import numpy as np
import pytest

from persona_engine.errors import InvalidInputError, NotFoundError
from persona_engine.retrieval import FaissRuntime, ProfileIndex, faiss_runtime


def brute_force(ids, vecs, query, k, metric="l2"):
    if metric == "l2":
        d = ((vecs - query) ** 2).sum(axis=1)
    else:
        d = -(vecs @ query)
    return [ids[i] for i in np.argsort(d, kind="stable")[:k]]


def clustered(n, dim, seed=0, groups=12):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((groups, dim)) * 2
    return (centers[rng.integers(0, groups, n)] + 0.6 * rng.standard_normal((n, dim))).astype(
        np.float32
    )


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_flat_search_matches_brute_force(metric):
    x = clustered(500, 6, seed=1)
    ids = [f"u{i}" for i in range(len(x))]
    index = ProfileIndex(6, {"metric": metric})
    index.add(ids, x)
    assert index.kind == "flat" and len(index) == 500
    for q in x[:20]:
        got = [s.user_id for s in index.search(q, 7)[0]]
        assert got == brute_force(ids, x, q, 7, metric)


def test_update_and_remove_follow_brute_force():
    rng = np.random.default_rng(2)
    x = clustered(300, 5, seed=2)
    ids = [f"u{i}" for i in range(300)]
    index = ProfileIndex(5)
    index.add(ids, x)
    # update 40 users, remove 30
    moved = rng.choice(300, 40, replace=False)
    x[moved] = rng.standard_normal((40, 5)).astype(np.float32) * 3
    index.add([ids[i] for i in moved], x[moved])
    gone = set(rng.choice(300, 30, replace=False).tolist())
    assert index.remove([ids[i] for i in gone] + ["never-there"]) == 30
    keep = [i for i in range(300) if i not in gone]
    kept_ids, kept_x = [ids[i] for i in keep], x[keep]
    assert len(index) == 270 and sorted(index.user_ids()) == sorted(kept_ids)
    for q in rng.standard_normal((25, 5)).astype(np.float32) * 2:
        assert [s.user_id for s in index.search(q, 10)[0]] == brute_force(kept_ids, kept_x, q, 10)
    _, stored = index.vectors([ids[moved[0]]])
    np.testing.assert_allclose(stored[0], x[moved[0]])


def test_search_user_excludes_self_and_handles_small_populations():
    index = ProfileIndex(3)
    index.add(["a", "b", "c"], [[0, 0, 0], [1, 0, 0], [5, 5, 5]])
    assert [s.user_id for s in index.search_user("a", 10)] == ["b", "c"]
    with pytest.raises(NotFoundError):
        index.search_user("zzz")
    assert ProfileIndex(3).search([0, 0, 0], 5) == [[]]


def test_removed_vectors_are_scrubbed_from_memory():
    x = clustered(400, 4, seed=3)
    for kind in ("flat", "hnsw"):
        index = ProfileIndex(4, {"kind": kind})
        index.add([f"u{i}" for i in range(400)], x)
        slot = index._user_slot["u7"]
        index.remove(["u7"])
        stored = index._flat_storage()[slot]
        assert not np.allclose(stored, x[7]), kind
        assert "u7" not in index and all(s.user_id != "u7" for s in index.search(x[7], 20)[0])


def test_hnsw_recall_against_exact_and_compaction():
    x = clustered(4000, 16, seed=4)
    index = ProfileIndex(16, {"kind": "hnsw", "hnsw_m": 16, "hnsw_ef_search": 64})
    index.add([f"u{i}" for i in range(len(x))], x)
    queries = x[::40]
    recall = index.recall_at_k(queries, 10)
    assert recall >= 0.95
    # measured recall is what the definition says
    truth = index.exact_search(queries, 10)
    got = index.search(queries, 10)
    manual = np.mean([len(set(t) & {s.user_id for s in g}) / 10 for t, g in zip(truth, got)])
    assert recall == pytest.approx(manual)
    # tombstones past compact_fraction trigger a rebuild without them
    index.remove([f"u{i}" for i in range(0, 1200)])
    assert index.n_dead == 0 and index.n_slots == len(index) == 2800
    assert index.recall_at_k(x[1200::40], 10) >= 0.95


def test_auto_switches_to_approximate_above_threshold_and_back():
    x = clustered(700, 8, seed=5)
    index = ProfileIndex(8, {"approximate_above": 500})
    index.add([f"u{i}" for i in range(300)], x[:300])
    assert index.kind == "flat"
    index.add([f"u{i}" for i in range(300, 700)], x[300:])
    assert index.kind == "hnsw" and len(index) == 700
    index.remove([f"u{i}" for i in range(500)])
    assert index.kind == "flat" and len(index) == 200


def test_ivf_add_update_remove():
    x = clustered(3000, 8, seed=6)
    index = ProfileIndex(8, {"kind": "ivf", "ivf_nprobe": 16})
    index.add([f"u{i}" for i in range(3000)], x)
    assert index.recall_at_k(x[::60], 10) >= 0.9
    index.remove(["u1", "u2"])
    index.add(["u3"], [np.full(8, 50.0)])
    assert "u1" not in index and index.search(np.full(8, 50.0), 1)[0][0].user_id == "u3"
    assert len(index) == 2998


def test_zero_dim_and_bad_vectors_are_clear_errors():
    with pytest.raises(InvalidInputError, match="personalized backend"):
        ProfileIndex(0)
    index = ProfileIndex(3)
    with pytest.raises(InvalidInputError, match="3 values"):
        index.add(["a"], [[1.0, 2.0]])
    with pytest.raises(InvalidInputError, match="NaN"):
        index.add(["a"], [[1.0, np.nan, 0.0]])
    with pytest.raises(InvalidInputError):
        index.search([0, 0, 0], 0)


def test_save_load_round_trip(tmp_path):
    x = clustered(1500, 8, seed=7)
    index = ProfileIndex(8, {"kind": "hnsw"})
    index.add([f"u{i}" for i in range(1500)], x, rowids=np.arange(1500) + 10)
    index.remove(["u5"])
    index.meta = {"model_id": "m-v1", "seq": 42}
    index.save(tmp_path / "idx")
    loaded = ProfileIndex.load(tmp_path / "idx")
    assert loaded.kind == "hnsw" and len(loaded) == 1499 and loaded.meta["seq"] == 42
    assert loaded.rowid("u9") == 19
    assert ProfileIndex.saved_holds(tmp_path / "idx", "u9") and not ProfileIndex.saved_holds(
        tmp_path / "idx", "u5"
    )
    for q in x[:10]:
        assert [s.user_id for s in loaded.search(q, 5)[0]] == [
            s.user_id for s in index.search(q, 5)[0]
        ]


def test_cosine_metric_distances():
    index = ProfileIndex(2, {"metric": "cosine"})
    index.add(["a", "b", "c"], [[1, 0], [10, 1], [0, 3]])
    res = index.search([2, 0], 3)[0]
    assert [s.user_id for s in res] == ["a", "b", "c"]
    assert res[0].distance == pytest.approx(0.0, abs=1e-6) and res[2].distance == pytest.approx(
        1.0, abs=1e-6
    )


class CloningRuntime(FaissRuntime):
    """Stands in for a GPU: 'moving' an index to the device clones it, so the mirror logic runs."""

    moves: int = 0

    @property
    def on_gpu(self) -> bool:
        return True

    def to_device(self, index):
        self.moves += 1
        return self.faiss.clone_index(index)


def test_gpu_mirror_logic_with_a_cloning_runtime():
    runtime = CloningRuntime(faiss=faiss_runtime("cpu").faiss)
    x = clustered(600, 4, seed=8)
    index = ProfileIndex(4, runtime=runtime)
    assert index.recommended_kind(10**6) == "flat" and index.recommended_kind(10**7) == "ivf"
    index.add([f"u{i}" for i in range(600)], x)
    first = index.search(x[0], 3)[0]
    assert first[0].user_id == "u0" and runtime.moves == 1
    index.search(x[1], 3)
    assert runtime.moves == 1  # the mirror is reused until the index changes
    index.remove(["u0"])
    assert index.search(x[0], 3)[0][0].user_id != "u0" and index.n_dead == 0 and runtime.moves == 2
    with pytest.raises(InvalidInputError, match="GPU HNSW"):
        ProfileIndex(4, {"kind": "hnsw"}, runtime=runtime)


def test_hnsw_headroom_keeps_the_index_as_it_was_and_adds_still_land() -> None:
    """After a build (and after a load) HNSW gets spare capacity so the next add does not copy
    the whole graph; the graph, the vectors and every answer stay what they were."""
    import faiss

    from persona_engine.retrieval.index import hnsw_headroom

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 8)).astype(np.float32)
    index = faiss.IndexHNSWFlat(8, 16)
    index.add(x)
    sizes = [int(index.hnsw.neighbors.size()), int(index.hnsw.offsets.size())]
    before = index.search(x[:50], 5)
    hnsw_headroom(index, faiss)
    assert [int(index.hnsw.neighbors.size()), int(index.hnsw.offsets.size())] == sizes
    assert index.ntotal == 2000
    after = index.search(x[:50], 5)
    np.testing.assert_array_equal(after[1], before[1])
    new = rng.normal(size=(3, 8)).astype(np.float32)
    index.add(new)
    found = index.search(new, 1)[1][:, 0]
    np.testing.assert_array_equal(found, [2000, 2001, 2002])
    np.testing.assert_array_equal(index.search(x[:50], 5)[1][:, 0], before[1][:, 0])
