"""The bestofn generator: N samples, the highest-reward one wins."""

from __future__ import annotations

import pytest
from gen_tiny_lm import PROMPT, grammar_responses

from persona_engine.errors import InvalidInputError


def config(tiny_lm_dir, **extra):
    return {
        "lm": str(tiny_lm_dir),
        "n": 6,
        "max_new_tokens": 12,
        "temperature": 1.0,
        "top_p": 1.0,
        "seed": 5,
        **extra,
    }


def test_picks_the_highest_scoring_candidate(tiny_lm_dir):
    from persona_engine.engine import Engine

    def redness(prompt, texts):
        return [t.split().count("red") - 0.01 * len(t) for t in texts]

    result = Engine().generate(
        None, PROMPT, generator="bestofn", config=config(tiny_lm_dir), scorer=redness
    )
    cands, scores = result.info["candidates"], result.info["scores"]
    assert len(cands) >= 2 and scores == redness(PROMPT, cands)
    assert result.texts[0] == cands[max(range(len(cands)), key=lambda i: scores[i])]


def test_ranks_with_the_users_reward_model(tiny_lm_dir):
    """Two users of a personalized model, one who likes red things and one who likes blue things,
    get different winners from the same N samples: each the one their own reward ranks first."""
    from persona_engine.engine import Engine

    engine = Engine(encoder="hashing")
    reds = [t for t in grammar_responses("sys_red", 60, seed=1) if "red" in t.split()]
    blues = [t for t in grammar_responses("sys_blue", 60, seed=2) if "blue" in t.split()]
    rows = []
    for u in range(6):  # even users like red, odd users blue
        for r, b in list(zip(reds, blues))[u * 8 : u * 8 + 20]:
            chosen, rejected = (r, b) if u % 2 == 0 else (b, r)
            rows.append(
                {"user_id": f"u{u}", "prompt": PROMPT, "chosen": chosen, "rejected": rejected}
            )
    engine.record(rows)
    engine.train("hier")
    picks = {}
    for user in ("u0", "u1"):
        result = engine.generate(
            user,
            PROMPT,
            generator="bestofn",
            config=config(tiny_lm_dir, n=12, system_prompt="sys_neutral"),
        )
        cands = result.info["candidates"]
        scores = engine.score(user, PROMPT, cands)
        assert result.info["scores"] == pytest.approx(scores)
        assert result.texts[0] == cands[max(range(len(cands)), key=lambda i: scores[i])]
        picks[user] = (result.texts[0], cands)
    (red_pick, cands0), (blue_pick, cands1) = picks["u0"], picks["u1"]
    assert cands0 == cands1  # the same seeded samples, ranked by two users' rewards
    assert any("red" in c.split() for c in cands0) and any("blue" in c.split() for c in cands0)
    assert "red" in red_pick.split() and "blue" in blue_pick.split()


def test_needs_something_to_rank_with(tiny_lm_dir):
    from persona_engine.engine import Engine

    with pytest.raises(InvalidInputError, match="user"):
        Engine().generate(None, PROMPT, generator="bestofn", config=config(tiny_lm_dir))
    with pytest.raises(InvalidInputError, match="callable"):
        Engine().generate(None, PROMPT, generator="bestofn", config=config(tiny_lm_dir), scorer=3)
