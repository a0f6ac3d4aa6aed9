from pathlib import Path

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


def test_quickstart_real_data(shared_data, tmp_path, capsys):
    """The README's main job (examples/quickstart.py) on a slice of POPQUORN, with the model-free
    encoder to stay fast: its printed figures show onboarding at work. With onboarding broken (the
    shots ignored, the prior returned) ``hier - its prior`` is exactly 0 and this fails."""
    import re
    import runpy

    quickstart = runpy.run_path(str(Path(__file__).parents[1] / "examples" / "quickstart.py"))
    args = ["--data", str(shared_data / "popquorn" / "pairs.jsonl"), "--home", str(tmp_path)]
    assert quickstart["main"]([*args, "--encoder", "hashing", "--limit", "6000"]) == 0
    out = capsys.readouterr().out

    def gain(kind, other):
        m = re.search(
            rf"{kind} hier - {other}: ([+-][0-9.]+) \(95% CI ([+-][0-9.]+) to ([+-][0-9.]+)", out
        )
        assert m, out
        return tuple(float(x) for x in m.groups())

    # (a) the same comments, side by side, for two held-out annotators
    ranking = out.split("(a) ")[1].split("(b) ")[0].strip().splitlines()
    assert re.match(r"annotator \S+ +annotator \S+$", ranking[1].strip()), ranking
    assert [line.split(".")[0].strip() for line in ranking[2:]] == ["1", "2", "3", "4", "5", "6"]
    # (b) onboarding moves the held-out annotators' scores the right way on the pairs it can reach
    d, lo, hi = gain("reused", "its prior")
    assert d >= 0.04 and lo > 0, out
    assert gain("reused", "bt")[1] > 0, out
    # on new texts it must not cost much (the measured gain there is small, its CI spans 0)
    assert gain("new", "bt")[0] > -0.07 and gain("new", "its prior")[0] > -0.07, out
    # (c)
    assert "BENCHMARKS.md" in out
