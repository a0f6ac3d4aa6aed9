"""The feature cache keys a (prompt, response) pair by both hashes for an encoder that reads the
prompt and by the response alone for one that does not; old stores migrate with their rows."""

from __future__ import annotations

import numpy as np
import pytest
from hf_tiny_models import save_tiny_model
from persona_engine_encoders import HFEncoder
from sqlite_utils import Database

from persona_engine import Engine
from persona_engine.encoders.cache import candidate_features, comparison_arrays, encode_cached
from persona_engine.encoders.hashing import HashingEncoder
from persona_engine.schemas import content_hash
from persona_engine.store import Store
from persona_engine.store.migrations import migrations


@pytest.fixture(scope="module")
def causal_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-causal")


class CountingHF(HFEncoder):
    calls = 0

    def embed_pairs(self, prompts, responses):
        CountingHF.calls += len(responses)
        return super().embed_pairs(prompts, responses)


def _rows(store: Store) -> list[tuple[str, str]]:
    return [
        tuple(r) for r in store.db.conn.execute("SELECT prompt_hash, hash FROM features").fetchall()
    ]


def test_same_response_under_two_prompts_is_two_rows_for_a_prompt_reader(causal_dir):
    store = Store()
    enc = CountingHF({"model": str(causal_dir)})
    feats = candidate_features(store, enc, "tell me about cats", ["red", "blue"])[1]
    candidate_features(store, enc, "what is the best colour", ["red"])
    pairs = [(p, h) for p, h in _rows(store) if h]
    assert len(pairs) == 3
    assert {p for p, _ in pairs} == {
        content_hash("tell me about cats"),
        content_hash("what is the best colour"),
    }
    # nothing is encoded twice: a second ask reads the cache
    CountingHF.calls = 0
    again = candidate_features(
        store, CountingHF({"model": str(causal_dir)}), "tell me about cats", ["blue", "red"]
    )[1]
    assert CountingHF.calls == 0
    np.testing.assert_array_equal(again[::-1], feats)


def test_same_response_under_two_prompts_is_one_row_for_a_response_encoder():
    store = Store()
    enc = HashingEncoder({"dim": 16})
    candidate_features(store, enc, "tell me about cats", ["red"])
    candidate_features(store, enc, "what is the best colour", ["red"])
    rows = _rows(store)
    assert all(p == "" for p, _ in rows)
    assert sorted(h for _, h in rows) == sorted(
        content_hash(t) for t in ("red", "tell me about cats", "what is the best colour")
    )


def test_comparison_arrays_give_pair_and_prompt_features(causal_dir):
    store = Store()
    enc = HFEncoder({"model": str(causal_dir)})
    texts = {content_hash(t): t for t in ("tell me about cats", "cats", "dogs")}
    p, c, r = comparison_arrays(
        store,
        enc,
        [content_hash("tell me about cats")],
        [content_hash("cats")],
        [content_hash("dogs")],
        texts,
    )
    assert p.shape == (1, enc.prompt_dim) and c.shape == r.shape == (1, enc.dim)
    np.testing.assert_allclose(
        c[0, : enc.embedding_dim], enc.full_pass_features("tell me about cats", "cats"), atol=1e-5
    )


def test_store_made_before_pair_features_migrates_with_its_rows(tmp_path):
    path = tmp_path / "old.db"
    db = Database(path)
    migrations.apply(db, stop_before="m002_pair_features")
    vec = np.arange(18, dtype=np.float32)
    db.execute(
        "INSERT INTO features(encoder, hash, dim, vector) VALUES (?,?,?,?)",
        [
            "hashing:d16-bi+log_chars+log_words",
            content_hash("red"),
            18,
            vec.astype("<f4").tobytes(),
        ],
    )
    db.conn.commit()
    db.close()
    store = Store(path)
    enc = HashingEncoder({"dim": 16})
    got = store.get_features(enc.id, [content_hash("red")])
    np.testing.assert_array_equal(got[content_hash("red")], vec)
    # the migrated row serves a prompt-free encoder as before: nothing is re-encoded
    assert encode_cached(store, enc, ["red"])[0].tolist() == vec.tolist()
    assert "m002_pair_features" in [m.name for m in migrations.applied(store.db)]


def test_engine_scores_depend_on_the_prompt_with_a_prompt_reader(causal_dir, tmp_path):
    """The right answer depends on the prompt only: a response-only encoder cannot rank both
    prompts right, a prompt reader through Engine.train/score does."""
    config = {"model": str(causal_dir), "scalar_features": []}
    engine = Engine(tmp_path / "home", encoder="hf", encoder_config=config)
    rows = []
    for i in range(12):
        rows.append(
            {
                "user_id": f"u{i}",
                "prompt": "tell me about cats",
                "chosen": "cats",
                "rejected": "dogs",
            }
        )
        rows.append(
            {
                "user_id": f"u{i}",
                "prompt": "tell me about dogs",
                "chosen": "dogs",
                "rejected": "cats",
            }
        )
    engine.record(rows)
    engine.train("bt", {"training": {"epochs": 200}})
    cats = engine.score("u0", "tell me about cats", ["cats", "dogs"])
    dogs = engine.score("u0", "tell me about dogs", ["cats", "dogs"])
    assert cats[0] > cats[1] and dogs[1] > dogs[0]
