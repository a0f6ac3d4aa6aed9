"""PAD as published on the tiny LM: the reward head trained by DPO on preference pairs, each
labelled with a preference vector, from a JSONL file or from the users' stored comparisons."""

from __future__ import annotations

import json
import math
import random
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from click.testing import CliRunner
from gen_tiny_lm import PROMPT, grammar_responses, rates

from persona_engine.errors import InvalidInputError

N = 48


def colour_pairs(n: int, seed: int = 0) -> list[dict]:
    """``n`` pairs per colour: preference ``red`` prefers answers with the token red, ``blue``
    answers with blue; everything else is drawn alike on both sides."""
    rng = random.Random(seed)
    pool = grammar_responses("sys_neutral", 600, seed=seed)
    rows = []
    for colour in ("red", "blue"):
        has = [t for t in pool if colour in t.split()]
        lacks = [t for t in pool if colour not in t.split()]
        rows += [
            {
                "prompt": PROMPT,
                "chosen": rng.choice(has),
                "rejected": rng.choice(lacks),
                "preference": colour,
            }
            for _ in range(n)
        ]
    return rows


def dpo_config(**overrides):
    from persona_engine_pad.trainer import PadTrainConfig

    from persona_engine.config import TrainingConfig

    # beta = 1: at the usual 0.1 the margin saturates only once the rewards are ~10x larger, and
    # on this tiny grammar the blue channel then also rewarded run-on text (fluency 0.02)
    training = TrainingConfig(epochs=8, batch_size=16, lr=1e-2, val_fraction=0.2, patience=3)
    settings = {"rank": 4, "beta": 1.0, "preference_prompt": False, **overrides}
    return PadTrainConfig(objective="dpo", training=training, **settings)


@pytest.fixture(scope="module")
def dpo_trained(tiny_lm_dir, tiny_vocab_path, tmp_path_factory):
    """A head trained by DPO on 2 x 48 colour pairs read from a JSONL file."""
    from persona_engine_drift.attributes import load_vocabulary
    from persona_engine_pad.pairs import read_pairs
    from persona_engine_pad.trainer import train_reward_head

    from persona_engine.lm import load_lm

    path = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in colour_pairs(48)))
    lm, vocab = load_lm(str(tiny_lm_dir)), load_vocabulary(str(tiny_vocab_path))
    pairs = read_pairs(path, vocab)
    assert {p.preference["red"] if "red" in p.preference else 0 for p in pairs} == {0, 1.0}
    return train_reward_head(lm, vocab, dpo_config(), pairs=pairs)


def test_dpo_lowers_the_loss_and_trains_only_the_labelled_channels(dpo_trained):
    head, meta = dpo_trained
    m = meta["metrics"]
    assert meta["objective"] == "dpo" and sorted(meta["trained"]) == ["blue", "red"]
    assert m["loss_before"] == pytest.approx(math.log(2), abs=1e-4)  # an untrained head: R = 0
    assert m["train_loss"] < 0.5 * math.log(2) and m["val_loss"] < 0.7 * math.log(2), m
    assert m["train_accuracy"] > 0.9 and m["val_accuracy"] > 0.8, m
    for name in ("pos", "neg", "short", "long"):  # no pair weights them: still exactly zero
        assert torch.count_nonzero(head.up[head.attributes.index(name)]) == 0


def next_token_probs(lm, head, preference: str | None) -> torch.Tensor:
    """PAD's next-token distribution after "the" (where the colour is chosen), neutral prompt."""
    from persona_engine_pad.processor import PADLogitsProcessor

    ids = torch.tensor([lm.chat_ids(PROMPT, "sys_neutral") + lm.text_ids("the")])
    W = torch.zeros((1, len(head.attributes)))
    if preference:
        W[0, head.attributes.index(preference)] = 1.0
    with torch.no_grad():
        out = lm.model(input_ids=ids, output_hidden_states=True)
    proc = PADLogitsProcessor(lm, head, W, rm_weight=1.0, top_k=10)
    proc.observe_hidden(out.hidden_states[-1][:, -1])
    return torch.softmax(proc(ids, out.logits[:, -1]), -1)[0]


def test_preference_raises_its_token_over_the_base_and_the_other_preference(tiny_lm, dpo_trained):
    head, _ = dpo_trained
    tok = tiny_lm.tokenizer.convert_tokens_to_ids
    base, red, blue = (next_token_probs(tiny_lm, head, p) for p in (None, "red", "blue"))
    # measured: P(red) 0.36 base -> 1.00 with red, 1e-8 with blue; P(blue) alike
    assert red[tok("red")] > base[tok("red")] + 0.2 and red[tok("red")] > blue[tok("red")] + 0.3
    assert blue[tok("blue")] > base[tok("blue")] + 0.2
    assert blue[tok("blue")] > red[tok("blue")] + 0.3


def pad(tiny_lm_dir, tiny_vocab_path, head, meta, **cfg):
    from persona_engine_pad import PadGenerator

    gen = PadGenerator(
        {
            "lm": str(tiny_lm_dir),
            "attributes": [str(tiny_vocab_path)],
            "max_new_tokens": 12,
            "do_sample": True,
            "repetition_penalty": 1.0,
            "preference_prompt": False,
            "rm_weight": 1.0,
            "seed": 3,
            **cfg,
        }
    )
    gen.set_head(head, meta)
    return gen


def test_decoding_with_the_dpo_head_moves_each_user_towards_their_colour(
    tiny_lm, tiny_lm_dir, tiny_vocab_path, dpo_trained
):
    from persona_engine.lm import DecodingConfig, collect_texts, decode_tokens

    cfg = DecodingConfig(max_new_tokens=12, do_sample=True, repetition_penalty=1.0, seed=3)
    ctx = [[tiny_lm.chat_ids(PROMPT, "sys_neutral")]] * N
    base = rates(collect_texts(tiny_lm, decode_tokens(tiny_lm, ctx, cfg)))
    gen = pad(tiny_lm_dir, tiny_vocab_path, *dpo_trained)
    red = rates(gen.generate_batch([PROMPT] * N, ["red"] * N))
    blue = rates(gen.generate_batch([PROMPT] * N, ["blue"] * N))
    assert red["red"] > base["red"] + 0.2 and blue["blue"] > base["blue"] + 0.2, (base, red, blue)
    assert red["blue"] < base["blue"] and blue["red"] < base["red"]
    assert min(red["fluent"], blue["fluent"]) >= 0.9


def test_concurrent_requests_on_one_model_decode_as_if_alone(
    tiny_lm_dir, tiny_vocab_path, dpo_trained
):
    """Two generators (two service configs) on the one shared model, different users at once."""
    a = pad(tiny_lm_dir, tiny_vocab_path, *dpo_trained)
    b = pad(tiny_lm_dir, tiny_vocab_path, *dpo_trained, rm_weight=0.8)
    jobs = [(a, "red"), (b, "blue"), (a, "blue"), (b, "red")] * 3
    alone = [g.generate_batch([PROMPT] * 3, [p] * 3) for g, p in jobs]
    with ThreadPoolExecutor(4) as pool:
        together = list(
            pool.map(lambda job: job[0].generate_batch([PROMPT] * 3, [job[1]] * 3), jobs)
        )
    assert together == alone


def red_and_blue_users(engine, n: int = 24) -> None:
    rows = colour_pairs(n)
    for user, colour in (("alice", "red"), ("bob", "blue")):
        engine.record(
            [
                {
                    "user_id": user,
                    "prompt": r["prompt"],
                    "chosen": r["chosen"],
                    "rejected": r["rejected"],
                }
                for r in rows
                if r["preference"] == colour
            ]
        )


def test_pairs_from_the_store_carry_each_users_vector(tiny_lm_dir, tiny_vocab_path, tiny_vocab):
    from persona_engine_drift.generator import DriftGenerator
    from persona_engine_pad.pairs import store_pairs

    from persona_engine.engine import Engine

    engine = Engine()
    red_and_blue_users(engine)
    pairs, info = store_pairs(engine.store, tiny_vocab, given={"alice": "red", "bob": {"blue": 1}})
    stored = sum(len(engine.store.comparisons(u)) for u in ("alice", "bob"))  # duplicates merged
    assert len(pairs) == stored > 40 and {p.user_id: p.preference for p in pairs} == {
        "alice": {"red": 1.0},
        "bob": {"blue": 1.0},
    }
    drift = DriftGenerator({"lm": str(tiny_lm_dir), "attributes": [str(tiny_vocab_path)]})
    pairs, info = store_pairs(
        engine.store, tiny_vocab, users=["alice"], fit=lambda u: drift.fit_weights(engine, u)[0]
    )
    fitted = info["alice"]["preference"]
    assert {p.user_id for p in pairs} == {"alice"} and max(fitted, key=fitted.get) == "red"
    with pytest.raises(InvalidInputError, match="unknown users"):
        store_pairs(engine.store, tiny_vocab, given={"carol": "red"})


def test_pad_train_cli_from_store_and_its_errors(tmp_path, tiny_lm_dir, tiny_vocab_path):
    from persona_engine.cli import cli
    from persona_engine.engine import Engine

    red_and_blue_users(Engine())
    base = ["pad-train", "--lm", str(tiny_lm_dir), "-a", str(tiny_vocab_path)]
    res = CliRunner().invoke(cli, base)
    assert res.exit_code == 1 and "--pairs" in res.output and "Traceback" not in res.output
    out = tmp_path / "head"
    res = CliRunner().invoke(
        cli,
        [
            *base,
            "--from-store",
            "--user-preference",
            "alice=red",
            "--user-preference",
            'bob={"blue": 1}',
            "--epochs",
            "2",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    info = json.loads((out / "head.json").read_text())
    assert info["objective"] == "dpo" and sorted(info["trained"]) == ["blue", "red"]
    assert info["sources"]["users"]["bob"]["preference"] == {"blue": 1.0}
    assert info["metrics"]["train_loss"] < info["metrics"]["loss_before"]
    res = CliRunner().invoke(cli, ["pad-train", "--help"])
    assert "--objective" in res.output and "distill" in res.output and "DPO" in res.output
