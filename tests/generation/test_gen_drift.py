"""The drift generator on the tiny LM: weights from comparisons, steering direction, both paths."""

from __future__ import annotations

import random

import numpy as np
import pytest
from gen_tiny_lm import PROMPT, grammar_responses, rates

from persona_engine.errors import InvalidInputError, UnknownUserError


def red_lover_comparisons(user: str = "u-red", n: int = 40, seed: int = 0) -> list[dict]:
    """A user who prefers answers mentioning red (and is indifferent to everything else)."""
    rng = random.Random(seed)
    pool = grammar_responses("sys_neutral", 400, seed=seed)
    red = [t for t in pool if "red" in t.split()]
    other = [t for t in pool if "red" not in t.split()]
    return [
        {
            "user_id": user,
            "prompt": PROMPT,
            "chosen": rng.choice(red),
            "rejected": rng.choice(other),
        }
        for _ in range(n)
    ]


def test_rewards_are_per_token_mean_log_ratios(tiny_lm, tiny_vocab):
    """r_i = mean_t [log p(y_t | s_i) - log p(y_t | s_base)]: a response's length does not scale it."""
    import torch
    from persona_engine_drift.rewards import attribute_rewards

    text = "the red car is very very good ."
    r = attribute_rewards(tiny_lm, tiny_vocab, [PROMPT], [text])[0]
    ids = tiny_lm.text_ids(text)

    def lp(system: str) -> float:
        pre = tiny_lm.chat_ids(PROMPT, system)
        with torch.no_grad():
            logits = tiny_lm.model(torch.tensor([pre + ids])).logits[0, len(pre) - 1 : -1]
        return float(torch.log_softmax(logits, -1).gather(-1, torch.tensor(ids)[:, None]).mean())

    assert r[tiny_vocab.names.index("red")] == pytest.approx(
        lp("sys_red") - lp("sys_neutral"), abs=1e-4
    )
    assert r[tiny_vocab.names.index("red")] > 0 > r[tiny_vocab.names.index("blue")]


def test_weights_from_comparisons_recover_the_right_attribute(tiny_lm, tiny_vocab):
    from persona_engine_drift.rewards import attribute_rewards, drift_weights, pairwise_accuracy

    comps = red_lover_comparisons(n=24)
    chosen = attribute_rewards(
        tiny_lm, tiny_vocab, [PROMPT] * len(comps), [c["chosen"] for c in comps]
    )
    rejected = attribute_rewards(
        tiny_lm, tiny_vocab, [PROMPT] * len(comps), [c["rejected"] for c in comps]
    )
    p = dict(zip(tiny_vocab.names, drift_weights(chosen, rejected)))
    assert max(p, key=lambda k: abs(p[k])) == "red" and p["red"] > 0.6
    assert abs(p["pos"]) < 0.3 and abs(p["neg"]) < 0.3  # the user does not care about sentiment
    assert pairwise_accuracy(np.array(list(p.values())), chosen, rejected) > 0.9
    # ties pull nowhere
    assert np.allclose(drift_weights(chosen, rejected, np.zeros(len(comps))), 0)


def drift(tiny_lm_dir, tiny_vocab_path, **cfg):
    from persona_engine_drift import DriftGenerator

    return DriftGenerator(
        {
            "lm": str(tiny_lm_dir),
            "attributes": [str(tiny_vocab_path)],
            "max_new_tokens": 12,
            "do_sample": True,
            "repetition_penalty": 1.0,
            "min_comparisons": 10,
            **cfg,
        }
    )


def test_steering_moves_the_target_beyond_prompting_and_apart(
    tiny_lm, tiny_lm_dir, tiny_vocab_path
):
    from persona_engine.lm import DecodingConfig, collect_texts, decode_tokens

    n = 60
    cfg = DecodingConfig(max_new_tokens=12, do_sample=True, repetition_penalty=1.0, seed=3)
    base = rates(
        collect_texts(
            tiny_lm, decode_tokens(tiny_lm, [[tiny_lm.chat_ids(PROMPT, "sys_neutral")]] * n, cfg)
        )
    )
    prompted = rates(
        collect_texts(
            tiny_lm, decode_tokens(tiny_lm, [[tiny_lm.chat_ids(PROMPT, "sys_blue")]] * n, cfg)
        )
    )
    gen = drift(tiny_lm_dir, tiny_vocab_path, beta=0.5, seed=3)
    blue = rates(gen.generate_batch([PROMPT] * n, [{"blue": 1.0}] * n))
    red = rates(gen.generate_batch([PROMPT] * n, [{"red": 1.0}] * n))
    # beyond prompting: more blue than the blue system prompt alone (same seeds; measured 0.98 vs
    # 0.87 at n = 60)
    assert blue["blue"] > base["blue"] + 0.3
    assert blue["blue"] > prompted["blue"] + 0.05, (prompted, blue)
    assert (
        red["red"] > base["red"] + 0.3 and red["blue"] < base["blue"] - 0.2
    )  # opposite users move apart
    assert (
        abs(blue["good"] - base["good"]) < 0.25 and blue["fluent"] >= 0.9
    )  # off-target and fluency
    # a mixed user: weights compose
    mixed = rates(gen.generate_batch([PROMPT] * n, [{"blue": 0.7, "neg": 0.7}] * n))
    assert mixed["blue"] > base["blue"] + 0.2 and mixed["bad"] > base["bad"] + 0.2


def test_processor_path_equals_the_shared_batch(tiny_lm, tiny_lm_dir, tiny_vocab_path):
    """A separate small LM (DriftLogitsProcessor) that happens to be the same model decodes the same."""
    import torch
    from persona_engine_drift.steering import DriftLogitsProcessor, drift_combine

    from persona_engine.lm import DecodingConfig, collect_texts, decode_tokens, wrap_lm

    slm = wrap_lm(tiny_lm.model, tiny_lm.tokenizer, "tiny-copy")
    W = torch.tensor([[0.8, -0.5], [0.0, 1.0]])
    systems = [["sys_neutral", "sys_red", "sys_neg"], ["sys_neutral", "sys_pos", "sys_short"]]
    steer = [[tiny_lm.chat_ids(PROMPT, s) for s in row] for row in systems]
    cfg = DecodingConfig(max_new_tokens=10)
    shared = collect_texts(
        tiny_lm, decode_tokens(tiny_lm, steer, cfg, combine=drift_combine(W, 0.7))
    )
    base = [[row[0]] for row in steer]
    proc = DriftLogitsProcessor(slm, steer, W, 0.7)
    separate = collect_texts(tiny_lm, decode_tokens(tiny_lm, base, cfg, processors=[proc]))
    assert shared == separate


def test_logits_processor_shifts_probability_toward_the_attribute(tiny_lm):
    import torch
    from persona_engine_drift.steering import DriftLogitsProcessor

    ctx = tiny_lm.chat_ids(PROMPT, "sys_neutral") + tiny_lm.text_ids("the")
    with torch.no_grad():
        scores = tiny_lm.model(torch.tensor([ctx])).logits[:, -1]
    red = tiny_lm.tokenizer.convert_tokens_to_ids("red")
    p0 = torch.softmax(scores, -1)[0, red]
    probs = []
    for beta in (2.0, 1.0, 0.5):
        rows = [[ctx, tiny_lm.chat_ids(PROMPT, "sys_red") + tiny_lm.text_ids("the")]]
        proc = DriftLogitsProcessor(tiny_lm, rows, torch.tensor([[1.0]]), beta)
        probs.append(float(torch.softmax(proc(torch.tensor([ctx]), scores), -1)[0, red]))
    assert p0 < probs[0] < probs[1] < probs[2]


def test_engine_generate_fits_the_users_weights(tiny_lm_dir, tiny_vocab_path):
    from persona_engine.engine import Engine

    engine = Engine()
    engine.record(red_lover_comparisons("alice", n=16))
    config = {
        "lm": str(tiny_lm_dir),
        "attributes": [str(tiny_vocab_path)],
        "max_new_tokens": 12,
        "repetition_penalty": 1.0,
    }
    result = engine.generate("alice", PROMPT, generator="drift", config=config)
    w = result.info["weights"]
    assert result.info["source"] == "comparisons" and max(w, key=lambda k: abs(w[k])) == "red"
    assert rates(result.texts)["red"] == 1.0
    # the rewards are cached in the store: a second fit scores nothing again
    before = engine.store.count_features()
    engine.generate("alice", PROMPT, generator="drift", config=config)
    assert engine.store.count_features() == before


def test_user_errors(tiny_lm_dir, tiny_vocab_path):
    from persona_engine.engine import Engine

    engine = Engine()
    config = {"lm": str(tiny_lm_dir), "attributes": [str(tiny_vocab_path)]}
    with pytest.raises(UnknownUserError):
        engine.generate("nobody", PROMPT, generator="drift", config=config)
    engine.record(red_lover_comparisons("bob", n=3))
    with pytest.raises(InvalidInputError, match="at least 10"):
        engine.generate("bob", PROMPT, generator="drift", config=config)
    with pytest.raises(InvalidInputError, match="unknown attribute"):
        engine.generate("bob", PROMPT, generator="drift", config=config, weights={"purple": 1})
    with pytest.raises(InvalidInputError, match="generator settings"):
        engine.generate(
            "bob", PROMPT, generator="drift", config=config, weights={"red": 1}, lm="smollm2"
        )
    with pytest.raises(InvalidInputError, match="beta"):
        engine.generate("bob", PROMPT, generator="drift", config={**config, "beta": 0})
