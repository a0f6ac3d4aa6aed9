"""The reward benchmark: protocol invariants, metrics, the engine path, and a tiny end-to-end run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from persona_engine.bench.metrics import (
    UserCounts,
    bootstrap_ci,
    correct,
    paired_difference,
    paired_difference_ci,
    summarize,
)
from persona_engine.bench.protocol import (
    ProtocolConfig,
    split_by_comparison,
    split_by_text,
    split_seen_by_text,
    texts_of,
)
from persona_engine.errors import InvalidInputError


def _rows(
    counts: dict[str, int], pool: int, seed: int = 0
) -> tuple[list[str], list[str], list[str]]:
    """Shuffled rows of users with ``counts`` comparisons, each drawing its two texts from a pool
    of ``pool`` texts of its own (so comparisons of one user share texts often)."""
    rng = np.random.default_rng(seed)
    rows = []
    for u, n in counts.items():
        for _ in range(n):
            a, b = rng.choice(pool, 2, replace=False)
            rows.append((u, f"{u}/t{a}", f"{u}/t{b}"))
    rows = [rows[i] for i in rng.permutation(len(rows))]
    return [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]


COUNTS = {f"u{i}": n for i, n in enumerate([20, 25, 40, 41, 60, 19, 5, 33, 50, 22, 30, 45, 80, 70])}


def test_unseen_test_set_shares_no_text_with_any_candidate_shot():
    owners, ch, rj = _rows(COUNTS, pool=60)
    split = split_by_text(owners, ch, rj, ProtocolConfig(seed=3))
    assert split.unseen_users and split.counts["unseen_dropped"] > 0  # the rule had work to do
    for u in split.unseen_users:
        pool, test = split.unseen_pool[u], split.unseen_test[u]
        assert len(pool) == 20 and len(test) >= 5
        assert not texts_of(pool, ch, rj) & texts_of(test, ch, rj)
        assert all(owners[i] == u for i in [*pool, *test])
        for k in (1, 5, 10, 20):
            assert list(split.shots(u, k)) == list(pool[:k])  # k shots extend the k-1 shots
    # every other comparison of the user that shares no text with the shots is in the test set
    for u in split.unseen_users:
        known = texts_of(split.unseen_pool[u], ch, rj)
        rest = [i for i, o in enumerate(owners) if o == u and i not in set(split.unseen_pool[u])]
        clean = [i for i in rest if ch[i] not in known and rj[i] not in known]
        assert sorted(split.unseen_test[u]) == sorted(clean)
    # users below min_comparisons, and unseen users left with too small a test set, are out
    everyone = set(split.seen_users) | set(split.unseen_users)
    assert "u5" not in everyone and "u6" not in everyone
    left_out = split.counts["unseen_left_out_users"]
    assert len(everyone) + left_out == sum(n >= 20 for n in COUNTS.values())
    assert any("left out" in n for n in split.notes)


def test_seen_test_pairs_share_no_text_with_training_pairs():
    owners, ch, rj = _rows(COUNTS, pool=60)
    split = split_by_text(owners, ch, rj, ProtocolConfig(seed=1, test_fraction=0.3))
    assert sum(len(split.seen_test[u]) > 0 for u in split.seen_users) >= 4
    dropped = 0
    for u in split.seen_users:
        train, test = split.seen_train[u], split.seen_test[u]
        assert not texts_of(train, ch, rj) & texts_of(test, ch, rj)
        mine = {i for i, o in enumerate(owners) if o == u}
        assert set(train) | set(test) <= mine and not set(train) & set(test)
        dropped += len(mine) - len(train) - len(test)
    assert dropped == split.counts["seen_dropped"] > 0
    assert split.counts["seen_train"] == len(split.train_rows())
    assert "dropped" in " ".join(split.notes)
    # dense users (60 pairs over 12 texts): still no shared text, and a test share near the target
    owners, ch, rj = _rows({f"d{i}": 60 for i in range(8)}, pool=12)
    for i in range(8):
        rows = np.array([j for j, o in enumerate(owners) if o == f"d{i}"])
        train, test, drop = split_seen_by_text(rows, ch, rj, 0.3, np.random.default_rng(i))
        assert len(train) and len(test) and len(drop)
        assert not texts_of(train, ch, rj) & texts_of(test, ch, rj)
        assert sorted([*train, *test, *drop]) == sorted(rows)
        assert 0.1 < len(test) / (len(train) + len(test)) < 0.6


def test_seeds_change_the_split_and_a_user_split_ignores_other_users():
    owners, ch, rj = _rows(COUNTS, pool=60)
    a = split_by_text(owners, ch, rj, ProtocolConfig(seed=1))
    b = split_by_text(owners, ch, rj, ProtocolConfig(seed=1))
    assert a.seen_users == b.seen_users and a.unseen_users == b.unseen_users
    assert all(np.array_equal(a.unseen_pool[u], b.unseen_pool[u]) for u in a.unseen_users)
    c = split_by_text(owners, ch, rj, ProtocolConfig(seed=2))
    assert a.seen_users != c.seen_users
    both = set(a.unseen_users) & set(c.unseen_users)
    assert both and all(not np.array_equal(a.unseen_pool[u], c.unseen_pool[u]) for u in both)
    both = set(a.seen_users) & set(c.seen_users)
    assert any(not np.array_equal(a.seen_test[u], c.seen_test[u]) for u in both)
    # a user's split does not depend on the other users in the file
    more_o, more_c, more_r = _rows({"extra": 30}, pool=60, seed=5)
    d = split_by_text(owners + more_o, ch + more_c, rj + more_r, ProtocolConfig(seed=1))
    for u in set(a.unseen_users) & set(d.unseen_users):
        assert np.array_equal(a.unseen_pool[u], d.unseen_pool[u])


def test_old_split_by_comparison_keeps_the_same_users():
    owners, ch, rj = _rows(COUNTS, pool=60)
    cfg = ProtocolConfig(seed=3)
    old, new = split_by_comparison(owners, cfg, ch, rj), split_by_text(owners, ch, rj, cfg)
    assert old.seen_users == new.seen_users
    fresh = 0
    for u in old.seen_users:
        train, test = set(old.seen_train[u]), set(old.seen_test[u])
        assert not train & test and len(train) == round(0.7 * COUNTS[u])
        known = texts_of(old.seen_train[u], ch, rj)
        fresh += sum(ch[i] not in known and rj[i] not in known for i in test)
    # the old split's seen test pairs mostly repeat texts the user was trained on
    assert old.counts["seen_test_new_items"] == fresh < old.counts["seen_test"]


def test_max_per_user_and_chunks():
    owners, ch, rj = _rows({"a": 200, "b": 180}, pool=400)
    split = split_by_text(owners, ch, rj, ProtocolConfig(chunk_users=40))
    users = split.seen_users + split.unseen_users
    assert {u.split("#")[0] for u in users} == {"a", "b"}
    assert all(owners[r] == split.user_of_row[r].split("#")[0] for r in split.used_rows())
    capped = split_by_text(owners, ch, rj, ProtocolConfig(max_per_user=60, min_test=1))
    for u in capped.seen_users:
        assert len(capped.seen_train[u]) + len(capped.seen_test[u]) <= 60
    with pytest.raises(InvalidInputError, match="chunk_users"):
        split_by_text(*_rows({"a": 100}, pool=200))


def test_per_user_accuracy_differs_from_pooled():
    # one user right on their one test pair, one wrong on all nine
    counts = UserCounts.from_scores({"a": np.array([1.0]), "b": np.zeros(9)})
    assert counts.per_user_accuracy() == pytest.approx(0.5)
    assert counts.accuracy() == pytest.approx(0.1)
    s = summarize([counts, counts])
    assert s["per_user"] == pytest.approx(0.5) and s["pooled"] == pytest.approx(0.1)
    assert s["per_seed"] == {"per_user": [0.5, 0.5], "pooled": [0.1, 0.1]}


def test_slope_interval_comes_from_paired_user_differences():
    rng = np.random.default_rng(0)
    at_1, at_20 = [], []
    for seed in range(2):
        users = [f"s{seed}u{i}" for i in range(40)]
        hits = rng.integers(0, 9, len(users)).astype(float)  # users differ widely at k=1
        total = np.full(len(users), 10.0)
        at_1.append(UserCounts(users, hits, total))
        at_20.append(UserCounts(users, hits + 1.0, total))  # every user gains exactly 0.1
    slope = paired_difference(at_20, at_1)
    assert slope["diff"] == pytest.approx(0.1)
    assert slope["ci95"] == pytest.approx([0.1, 0.1])  # unpaired, the spread of users would show
    assert slope["per_seed"] == pytest.approx([0.1, 0.1])
    lo, hi = summarize(at_1)["per_user_ci95"]
    assert hi - lo > 0.1
    with pytest.raises(ValueError):
        paired_difference(at_20, list(reversed(at_1)))


def test_metrics():
    assert correct(np.array([1.0, -2.0, 0.0])).tolist() == [1.0, 0.0, 0.5]
    rng = np.random.default_rng(0)
    per_user = {f"u{i}": (rng.random(rng.integers(5, 30)) < 0.7).astype(float) for i in range(40)}
    counts = UserCounts.from_scores(per_user)
    acc = counts.accuracy()
    lo, hi = bootstrap_ci(counts)
    assert lo < acc < hi and hi - lo < 0.2
    assert paired_difference_ci(counts, counts) == [0.0, 0.0]
    worse = UserCounts(counts.users, counts.hits * 0.5, counts.total)
    assert paired_difference_ci(counts, worse)[0] > 0
    # a second seed with other users widens nothing it should not: the mean is the seeds' mean
    other = UserCounts.from_scores({u: 1 - v for u, v in per_user.items()})
    s = summarize([counts, other])
    assert s["per_user"] == pytest.approx(
        (counts.per_user_accuracy() + other.per_user_accuracy()) / 2
    )
    assert summarize([UserCounts([], np.zeros(0), np.zeros(0))])["per_user_ci95"] is None


def _write_synthetic(path, n_users=24, per_user=40, seed=0):
    """Two groups of users with opposite tastes over fruit and vegetable sentences."""
    rng = np.random.default_rng(seed)
    adj = ("fresh", "ripe", "sweet", "big", "small", "green", "red", "old", "new", "local")
    fruit = [
        f"I would like a {a} {f} today"
        for a in adj
        for f in ("apple", "pear", "mango", "plum", "peach", "cherry", "lemon", "lime", "fig")
    ]
    veg = [
        f"I would like a {a} {v} today"
        for a in adj
        for v in ("carrot", "potato", "onion", "leek", "turnip", "radish", "beet", "kale", "yam")
    ]
    with open(path, "w") as fh:
        for u in range(n_users):
            likes, dislikes = (fruit, veg) if u % 2 == 0 else (veg, fruit)
            for _ in range(per_user):
                rec = {
                    "user_id": f"user{u}",
                    "prompt": "Pick one",
                    "chosen": likes[rng.integers(len(likes))],
                    "rejected": dislikes[rng.integers(len(dislikes))],
                }
                fh.write(json.dumps(rec) + "\n")


@pytest.fixture
def tiny_jsonl(tmp_path):
    path = tmp_path / "tiny.jsonl"
    _write_synthetic(path)
    return path


def _options(path, tmp_path, **kw):
    from persona_engine.bench.reward import RewardBenchOptions

    base = dict(
        data=path,
        backends=["bt", "per_user", "bt_residual"],
        shots=[1, 5, 10, 20],
        seeds=2,
        encoder="hashing",
        encoder_config={"dim": 64},
        cache=tmp_path / "cache.db",
        backend_options={
            "bt": {"training": {"epochs": 20}},
            "bt_residual": {"l2": 3.0, "bt": {"training": {"epochs": 20}}},
            "per_user": {"l2_grid": [1.0, 10.0]},
        },
    )
    base.update(kw)
    return RewardBenchOptions(**base)


def test_engine_onboard_gives_the_state_the_bench_scores(tiny_jsonl, tmp_path):
    from persona_engine.bench.engine_path import baselines_registered
    from persona_engine.bench.reward import _logits, check_options, prepare, run_seeds
    from persona_engine.engine import Engine
    from persona_engine.schemas import ModelRecord, UserProfile
    from persona_engine.store import Store

    opts = _options(tiny_jsonl, tmp_path, backends=["bt_residual"], seeds=1, old_split_seeds=0)
    check_options(opts)
    prepared = prepare(opts)
    try:
        runs = run_seeds(opts, prepared, keep_states=True)
    finally:
        prepared.cache.close()
    run, sd = runs["bt_residual"][0], prepared.seeds[0]
    model = run.model
    # an engine of our own, as a product would hold it, with the same model registered
    home = tmp_path / "product"
    store = Store(home / "persona.db")
    engine = Engine(home=home, store=store, encoder="hashing", encoder_config={"dim": 64})
    enc = engine.encoder()
    with baselines_registered():
        model.save(home / "m")
        store.add_model(
            ModelRecord(
                id="bt_residual-v1",
                backend="bt_residual",
                version=1,
                path=str(home / "m"),
                encoder=enc.id,
                data={"encoder_name": "hashing", "encoder_config": enc.config.model_dump()},
            ),
            activate=True,
        )
        store.put_profiles(
            UserProfile(
                user_id=u,
                model_id="bt_residual-v1",
                backend="bt_residual",
                vector=s.vector.tolist(),
            )
            for u, s in model.users.items()
        )
        checked = 0
        for u in sd.split.unseen_users[:3]:
            shots = [sd.comps[i] for i in sd.split.unseen_pool[u]]
            test = sd.split.unseen_test[u]
            hits = run.unseen
            for k in (1, 5, 20):
                profile = engine.onboard(
                    f"{u}@{k}", [c.model_copy(update={"user_id": f"{u}@{k}"}) for c in shots[:k]]
                )
                assert profile.source == ("prior" if k == 1 else "onboarded")
                store.delete_profile(f"{u}@{k}")  # the cold-start population: the fitted users
                np.testing.assert_allclose(
                    profile.vector, run.states[(u, k)].vector, rtol=1e-5, atol=1e-6
                )
                state = run.states[(u, k)]
                mine = correct(_logits(model, state, sd.data, test))
                i = hits[k].users.index(u)
                assert hits[k].hits[i] == mine.sum() and hits[k].total[i] == len(test)
                checked += 1
    store.close()
    assert checked == 9
    # the k = 1 state is the cold-start rule's, not the backend's own embedding of one shot
    one = sd.data.subset(sd.split.unseen_pool[sd.split.unseen_users[0]][:1])
    own = model.embed_user(one).vector
    assert not np.allclose(own, run.states[(sd.split.unseen_users[0], 1)].vector)


def test_end_to_end_with_hashing_encoder(tiny_jsonl, tmp_path, monkeypatch):
    from persona_engine.bench.report import markdown_report, plot_shots
    from persona_engine.bench.reward import run_reward_benchmark
    from persona_engine.encoders.hashing import HashingEncoder

    encoded = []
    original = HashingEncoder.embed
    monkeypatch.setattr(
        HashingEncoder,
        "embed",
        lambda self, texts: encoded.append(len(texts)) or original(self, texts),
    )
    opts = _options(tiny_jsonl, tmp_path)
    result = run_reward_benchmark(opts)
    assert result["seeds"] == [0, 1] and result["old_split_seeds"] == [0]
    assert [s["users"] for s in result["per_seed"]] == [{"seen": 12, "unseen": 12}] * 2
    res = result["results"]
    assert set(res) == {"bt", "per_user", "bt_residual"}
    for r in res.values():
        # the fixed test set: every k scores the same users on the same number of pairs
        sizes = {k: (tuple(s["users"]), tuple(s["comparisons"])) for k, s in r["unseen"].items()}
        assert len(set(sizes.values())) == 1
        assert list(sizes["1"][1]) == [s["comparisons"]["unseen_test"] for s in result["per_seed"]]
        for s in (*r["unseen"].values(), r["seen"]):
            assert 0 <= s["per_user"] <= 1 and 0 <= s["pooled"] <= 1
            assert len(s["per_seed"]["per_user"]) == 2
        assert r["seen_old_split"]["per_user"] is not None
        assert r["slope"]["per_seed"] == pytest.approx(
            [
                a - b
                for a, b in zip(
                    r["unseen"]["20"]["per_seed"]["per_user"],
                    r["unseen"]["1"]["per_seed"]["per_user"],
                )
            ]
        )
        assert r["onboard_ms_median"] > 0 and r["scores_per_s"] > 0
        assert len(r["fit_s_per_seed"]) == len(r["fit_metrics_per_seed"]) == 2
    # users of the two groups want opposite things: bt is near chance, a personalized model is not
    assert res["bt"]["unseen"]["20"]["per_user"] < 0.7
    assert res["bt_residual"]["unseen"]["20"]["per_user"] > 0.75
    assert res["bt_residual"]["delta_vs"]["bt"]["unseen"]["20"]["ci95"][0] > 0
    assert res["per_user"]["fit_metrics"]["l2"] in (1.0, 10.0)
    assert sum(encoded) > 0
    # the second run reads every feature from the cache, onboarding included
    encoded.clear()
    opts.backends = ["bt_residual"]
    again = run_reward_benchmark(opts)
    assert encoded == []
    assert again["results"]["bt_residual"]["unseen"] == res["bt_residual"]["unseen"]
    text = markdown_report(result)
    assert "| bt_residual |" in text and "slope" in text and "old split" in text
    assert plot_shots(result, tmp_path / "plot.png").stat().st_size > 1000


def test_cli(tiny_jsonl, tmp_path):
    from click.testing import CliRunner

    from persona_engine.cli import cli

    out = tmp_path / "result.json"
    args = [
        "bench",
        "reward",
        "--data",
        str(tiny_jsonl),
        "--backends",
        "bt,bt_residual",
        "--shots",
        "1,5",
        "--seeds",
        "1",
        "--old-split-seeds",
        "0",
        "--encoder",
        "hashing",
        "--encoder-option",
        "dim=32",
        "--out",
        str(out),
        "--cache",
        str(tmp_path / "c.db"),
        "--quiet",
        "-o",
        "bt_residual.l2=3.0",
        "-o",
        "bt_residual.bt.training.epochs=20",
        "-o",
        "bt.training.epochs=20",
    ]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert data["seeds"] == [0]
    assert data["results"]["bt_residual"]["fit_metrics"]["l2"] == 3.0
    assert data["results"]["bt_residual"]["seen_old_split"] is None
    assert out.with_suffix(".png").exists()
    assert "| bt_residual |" in res.output
    bad = CliRunner().invoke(
        cli,
        [
            "bench",
            "reward",
            "--data",
            str(tiny_jsonl),
            "--backends",
            "nope",
            "--encoder",
            "hashing",
        ],
    )
    assert bad.exit_code == 1 and "unknown backend 'nope'" in bad.output


def test_two_runs_compare_user_by_user_from_their_json():
    """A result's ``user_hits`` let two runs on the same seeds (e.g. two encoders) be compared
    per user: the paired interval is narrow where the unpaired one would not be."""
    from persona_engine.bench.metrics import UserCounts, paired_runs, summarize

    rng = np.random.default_rng(0)
    users = [f"u{i}" for i in range(40)]
    base = rng.uniform(0.3, 0.9, size=40)  # users differ a lot; run b is run a plus 0.1 each
    a = [UserCounts(users, np.round(base * 10), np.full(40, 10.0)) for _ in range(2)]
    b = [UserCounts(users, np.round(base * 10) + 1, np.full(40, 10.0)) for _ in range(2)]
    ja, jb = (json.loads(json.dumps(summarize(x))) for x in (a, b))
    got = paired_runs(jb["user_hits"], ja["user_hits"])
    assert got is not None
    assert got["diff"] == pytest.approx(0.1)
    assert got["ci95"] == pytest.approx([0.1, 0.1])
    # users only one run scored are left out of the pairing
    jb["user_hits"][0]["extra"] = [5.0, 10.0]
    assert paired_runs(jb["user_hits"], ja["user_hits"])["diff"] == pytest.approx(0.1)
