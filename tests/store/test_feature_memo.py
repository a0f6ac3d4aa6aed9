"""The in-memory layer over the feature cache (persona_engine.store.memo)."""

from __future__ import annotations

import numpy as np

from persona_engine.encoders.cache import encode_cached
from persona_engine.encoders.hashing import HashingEncoder
from persona_engine.schemas import Comparison
from persona_engine.store import Store
from persona_engine.store.memo import FeatureMemo


def test_memo_stays_within_its_budget_and_answers_in_order():
    memo = FeatureMemo(max_bytes=10 * 64)  # ten vectors of 16 float32
    for i in range(8):
        memo.put_many("enc", 16, {("", f"h{i}"): np.full(16, i, dtype=np.float32)})
    keys = [("", "h3"), ("", "h0"), ("", "h3")]
    np.testing.assert_array_equal(memo.stack("enc", 16, keys)[:, 0], [3, 0, 3])
    assert memo.stack("enc", 16, [("", "h3"), ("", "nope")]) is None  # not all remembered
    assert memo.stack("other-encoder", 16, keys) is None
    assert memo.stack("enc", 8, keys) is None  # another width is another block
    assert set(memo.get_many("enc", 16, [("", "h1"), ("", "nope")])) == {("", "h1")}
    for i in range(8, 25):  # past the budget: the block starts again
        memo.put_many("enc", 16, {("", f"h{i}"): np.full(16, i, dtype=np.float32)})
        assert memo._bytes <= memo.max_bytes
    assert 0 < len(memo) <= 10
    assert memo.stack("enc", 16, [("", "h24")])[0, 0] == 24
    off = FeatureMemo(max_bytes=0)
    off.put_many("enc", 16, {("", "h"): np.zeros(16, dtype=np.float32)})
    assert len(off) == 0


class CountingStore(Store):
    reads = 0

    def get_pair_features(self, encoder, keys):
        self.reads += 1
        return super().get_pair_features(encoder, keys)


def test_cached_features_are_read_from_the_store_once_then_from_memory():
    store = CountingStore()
    enc = HashingEncoder({"dim": 16})
    first = encode_cached(store, enc, ["red", "blue"])  # encoded and stored
    store.__dict__["_feature_memo"] = FeatureMemo()  # a new process: nothing in memory yet
    again = encode_cached(store, enc, ["blue", "red"])
    reads = store.reads
    third = encode_cached(store, enc, ["red", "blue"])
    assert store.reads == reads  # answered from memory
    np.testing.assert_array_equal(again[::-1], first)
    np.testing.assert_array_equal(third, first)
    # with the memo off every call reads the store
    store.__dict__["_feature_memo"] = FeatureMemo(max_bytes=0)
    encode_cached(store, enc, ["red"])
    encode_cached(store, enc, ["red"])
    assert store.reads == reads + 2


def test_deleting_a_user_empties_the_memo():
    store = Store()
    store.add_comparisons([Comparison(user_id="u", prompt="q", chosen="red", rejected="blue")])
    encode_cached(store, HashingEncoder({"dim": 16}), ["red", "blue"])
    assert len(store.feature_memo) == 2
    store.delete_user("u")
    assert len(store.feature_memo) == 0
