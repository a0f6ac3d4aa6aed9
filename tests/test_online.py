"""Online (prequential) evaluation: each new comparison is scored under the active model before
it is stored, and the report built from those outcomes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from persona_engine import Engine
from persona_engine.errors import InvalidInputError
from persona_engine.online import online_report

GOOD = ["kind", "helpful", "clear", "polite", "thoughtful"]
BAD = ["rude", "vague", "insulting", "sloppy", "hostile"]


def pairs(user: str, n: int, *, contrarian: bool = False, start: int = 0, seed: int = 0):
    """``n`` comparisons of kind against rude words (the contrarian prefers the rude ones)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(start, start + n):
        g = " ".join(rng.choice(GOOD, 3)) + f" {i}"
        b = " ".join(rng.choice(BAD, 3)) + f" {i}"
        chosen, rejected = (b, g) if contrarian else (g, b)
        rows.append({"user_id": user, "prompt": "reply", "chosen": chosen, "rejected": rejected})
    return rows


@pytest.fixture
def engine(tmp_path):
    engine = Engine(tmp_path / "home", encoder="hashing", encoder_config={"dim": 64})
    for u in range(8):
        engine.record(pairs(f"user{u}", 30, contrarian=u in (0, 4), seed=u))
    assert engine.store.count_comparisons() == 240
    # nothing to score with before a model exists: no outcomes, every comparison stored
    assert engine.store.online_outcomes() == []
    engine.train("hier")
    return engine


def test_each_new_comparison_is_scored_before_it_is_stored(engine):
    new = pairs("user1", 3, start=100, seed=11)
    before = [engine.score("user1", "reply", [c["chosen"], c["rejected"]]) for c in new]
    engine.record(new, update_profile=True)  # the profile moves only after the scoring
    rows = engine.store.online_outcomes(user_id="user1")
    assert len(rows) == 3
    for row, (chosen, rejected) in zip(rows, before):
        assert row["model_id"] == "hier-v1" and row["state"] == "profile"
        assert row["margin"] == pytest.approx(chosen - rejected, abs=1e-5)
        assert row["correct"] == int(chosen > rejected)
    # 30 comparisons before the first, then one more before each next one (same batch)
    assert [r["n_before"] for r in rows] == [30, 31, 32]
    assert all(r["new_items"] for r in rows)
    after = engine.score("user1", "reply", [new[0]["chosen"], new[0]["rejected"]])
    assert after != before[0]  # the update happened, and the stored margin is the one before it


def test_a_comparison_already_stored_is_never_scored_again(engine):
    new = pairs("user2", 2, start=200, seed=12)
    engine.record(new)
    engine.record(new)  # re-sent: stored once, one outcome
    engine.record(pairs("user2", 1, seed=2))  # stored before the model existed: not scored
    rows = engine.store.online_outcomes(user_id="user2")
    assert len(rows) == 2 and engine.store.count_comparisons("user2") == 32
    # scored, then stored by someone else before this write lands (the service scores before
    # its writer stores): the outcome is dropped, since the comparison was no longer new
    late = pairs("user2", 1, start=250, seed=17)
    scored = engine.online.outcomes(engine.validate_comparisons(late))
    assert scored.n_scored == 1
    Engine(engine.home, encoder="hashing", encoder_config={"dim": 64}, online_eval=False).record(
        late
    )
    assert engine.record(late, outcomes=scored) == 0
    assert len(engine.store.online_outcomes(user_id="user2")) == 2


def test_new_items_and_cold_start_users(engine):
    first = pairs("newcomer", 1, contrarian=True, start=300, seed=13)[0]
    reuse = {**first, "rejected": "completely new text"}  # the chosen text was seen before
    engine.record([first, reuse])
    rows = engine.store.online_outcomes(user_id="newcomer")
    assert [r["n_before"] for r in rows] == [0, 1]
    assert [r["new_items"] for r in rows] == [1, 0]
    assert {r["state"] for r in rows} == {"prior"}
    # the population prior prefers kind words: a contrarian's first answer is mispredicted
    assert rows[0]["correct"] == 0


def test_ingest_scores_too_and_evaluation_can_be_switched_off(engine, tmp_path, monkeypatch):
    path = tmp_path / "more.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in pairs("user3", 4, start=400, seed=14)))
    report = engine.ingest(path)
    assert report.added == 4 and len(engine.store.online_outcomes(user_id="user3")) == 4
    monkeypatch.setenv("PERSONA_ENGINE_ONLINE_EVAL", "0")
    off = Engine(engine.home, encoder="hashing", encoder_config={"dim": 64})
    assert not off.online.enabled
    off.record(pairs("user5", 4, start=500, seed=15))
    assert engine.store.online_outcomes(user_id="user5") == []
    assert engine.store.count_comparisons("user5") == 34


def test_a_scoring_failure_never_costs_the_write(engine, monkeypatch, caplog):
    _, backend = engine.load_model()

    def broken(*args, **kwargs):
        raise RuntimeError("model file unreadable")

    monkeypatch.setattr(backend, "reward_batch", broken)
    added = engine.record(pairs("user6", 2, start=600, seed=16))
    assert added == 2 and engine.store.count_comparisons("user6") == 32
    assert engine.online.errors == 1 and "online evaluation skipped" in caplog.text
    assert engine.store.online_outcomes(user_id="user6") == []


def test_report_curve_worst_users_and_offline_warning(engine):
    for u in range(8):  # the hier profiles know the two contrarians: all predicted well
        engine.record(pairs(f"user{u}", 10, contrarian=u in (0, 4), start=700, seed=20 + u))
    engine.record(pairs("fresh", 12, contrarian=True, start=800, seed=30))
    report = engine.online_report(resamples=200)
    assert report["active_model"] == "hier-v1" and len(report["models"]) == 1
    m = report["models"][0]
    assert m["overall"]["n"] == 92 and m["overall"]["users"] == 9
    lo, hi = m["overall"]["ci"]
    assert lo < m["overall"]["accuracy"] < hi
    buckets = {b["answers"]: b["all"] for b in m["by_answers"]}
    assert [buckets[k]["n"] for k in ("0", "1-4", "5-19", "20+")] == [1, 4, 7, 80]
    # a newcomer scored on the population prior (one batch: one state) gets their taste wrong
    assert buckets["5-19"]["accuracy"] == 0.0 and buckets["20+"]["accuracy"] > 0.9
    assert m["worst_users"][0]["user_id"] == "fresh"
    assert m["warning"] is None and m["offline"] is None
    for i in range(5):  # five more contrarian newcomers: the last 25 outcomes all go wrong
        engine.record(pairs(f"fresh{i}", 5, contrarian=True, start=900, seed=40 + i))
    engine.set_offline_figure("hier-v1", 0.8, ci=(0.75, 0.85), source="test bench")
    warned = engine.online_report(window=25, resamples=200)["models"][0]
    assert warned["window"]["accuracy"] == 0.0 and warned["offline"]["accuracy"] == 0.8
    assert "below its offline figure 0.800 (test bench)" in warned["warning"]
    assert engine.online_report(resamples=200)["models"][0]["warning"] is None  # whole history
    engine.set_offline_figure("hier-v1", 0.0, source="test")
    assert engine.online_report(window=25, resamples=200)["models"][0]["warning"] is None


def test_report_bad_options_and_filters(engine):
    engine.record(pairs("user7", 3, start=900, seed=40))
    with pytest.raises(InvalidInputError, match="--since must be a date"):
        online_report(engine, since="last tuesday")
    with pytest.raises(InvalidInputError, match="window"):
        online_report(engine, window=0)
    with pytest.raises(InvalidInputError, match="inside its CI"):
        engine.set_offline_figure(None, 0.5, ci=(0.6, 0.7))
    assert online_report(engine, since="2999-01-01")["models"] == []
    assert online_report(engine, since="7d")["models"][0]["overall"]["n"] == 3
    assert online_report(engine, tenant="other")["models"] == []


def test_delete_user_removes_their_outcomes(engine):
    engine.record(pairs("user1", 2, start=1000, seed=50))
    assert engine.delete_user("user1")["online_outcomes"] == 2
    assert engine.store.online_outcomes(user_id="user1") == []


def test_cli_eval_online(engine, monkeypatch):
    from persona_engine.cli import cli

    monkeypatch.setenv("PERSONA_ENGINE_HOME", str(engine.home))
    engine.record(pairs("user1", 5, start=1100, seed=60))
    runner = CliRunner()
    out = runner.invoke(cli, ["eval", "online", "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["models"][0]["overall"]["n"] == 5
    text = runner.invoke(cli, ["eval", "online"])
    assert text.exit_code == 0 and "hier-v1 (active)" in text.output and "20+" in text.output
    bad = runner.invoke(cli, ["eval", "online", "--since", "soon"])
    assert bad.exit_code == 1 and "Error: --since must be a date" in bad.output
    set_fig = runner.invoke(
        cli, ["eval", "offline", "hier-v1", "--accuracy", "0.7", "--source", "bench"]
    )
    assert set_fig.exit_code == 0, set_fig.output
    assert engine.store.model("hier-v1").metrics["offline"]["accuracy"] == 0.7
