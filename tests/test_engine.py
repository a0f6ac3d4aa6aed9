import numpy as np
import pytest

from persona_engine import Engine
from persona_engine.errors import InvalidInputError, NoModelError, UnknownUserError


def make_engine(tmp_path):
    return Engine(tmp_path / "home", encoder="hashing", encoder_config={"dim": 64})


def seed_comparisons(engine, users=6, per_user=30, contrarians=()):
    """Users prefer kind words to rude ones, except the ``contrarians`` (indices), who prefer the
    rude ones: a personalized model must tell them apart."""
    rng = np.random.default_rng(0)
    words_good = ["kind", "helpful", "clear", "polite", "thoughtful"]
    words_bad = ["rude", "vague", "insulting", "sloppy", "hostile"]
    rows = []
    for u in range(users):
        for i in range(per_user):
            g = " ".join(rng.choice(words_good, 3))
            b = " ".join(rng.choice(words_bad, 3))
            chosen, rejected = (b, g) if u in contrarians else (g, b)
            rows.append(
                {
                    "user_id": f"user{u}",
                    "prompt": "reply",
                    "chosen": f"{chosen} {i}",
                    "rejected": f"{rejected} {i}",
                }
            )
    engine.record(rows)
    return rows


def test_train_onboard_score_rank_delete(tmp_path):
    engine = make_engine(tmp_path)
    seed_comparisons(engine, users=8, contrarians=(0, 4))
    rec = engine.train("hier")  # the default personalized backend: onboarding changes the ranking
    assert rec.id == "hier-v1" and rec.active
    assert (tmp_path / "home" / "models" / "hier" / "v1" / "model.safetensors").exists()
    shots = {
        "nice": [("kind clear polite", "rude hostile vague"), ("helpful polite", "sloppy rude")],
        "contrarian": [
            ("rude hostile vague", "kind clear polite"),
            ("sloppy rude", "helpful polite"),
        ],
    }
    for user, pairs in shots.items():
        comps = [{"prompt": "reply", "chosen": c, "rejected": r} for c, r in pairs]
        prof = engine.onboard(user, comps)
        assert prof.model_id == "hier-v1" and prof.n_comparisons == 2
    candidates = ["hostile rude", "kind helpful"]
    assert engine.rank("nice", "reply", candidates)[0][0] == "kind helpful"
    # the population mostly prefers kind words; two comparisons turn the ranking round for this user
    assert engine.rank("contrarian", "reply", candidates)[0][0] == "hostile rude"
    prior = engine.score("stranger", "reply", candidates)  # an unknown user: the population prior
    assert len(prior) == 2 and prior[1] > prior[0]
    counts = engine.delete_user("contrarian")
    assert counts["comparisons"] == 2 and counts["profiles"] == 1
    with pytest.raises(UnknownUserError):
        engine.profile("contrarian")
    # a second training run is a new version and becomes active
    assert engine.train("bt").id == "bt-v1"
    assert engine.train("hier").id == "hier-v2"
    assert engine.model_record().id == "hier-v2"


def test_engine_errors(tmp_path):
    engine = make_engine(tmp_path)
    with pytest.raises(InvalidInputError, match="no comparisons"):
        engine.train("bt")
    with pytest.raises(NoModelError):
        engine.score("u", "p", ["a"])
    seed_comparisons(engine, users=2, per_user=10)
    engine.train("bt")
    with pytest.raises(InvalidInputError, match="non-empty"):
        engine.score("u", "p", [])
    with pytest.raises(InvalidInputError):
        engine.onboard("x", [{"user_id": "someone-else", "chosen": "a", "rejected": "b"}])
    with pytest.raises(InvalidInputError, match="no comparisons"):
        engine.onboard("ghost")
    with pytest.raises(UnknownUserError):
        engine.delete_user("ghost")


def test_quickstart_real_data(shared_data, tmp_path):
    """The README's main job on a slice of POPQUORN, with the model-free encoder to stay fast."""
    engine = Engine(tmp_path / "home", encoder="hashing", encoder_config={"dim": 2048})
    engine.ingest(shared_data / "popquorn" / "pairs.jsonl", limit=6000)
    users = sorted(engine.store.comparison_counts())
    held = users[-8:]
    engine.train("bt", users=users[:-8])
    test = [c for u in held for c in engine.store.comparisons(u)]
    correct = sum(
        s[0] > s[1] for s in (engine.score("h", c.prompt, [c.chosen, c.rejected]) for c in test)
    )
    assert correct / len(test) > 0.55
