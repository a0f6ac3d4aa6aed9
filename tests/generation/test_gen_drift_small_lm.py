"""Drift as designed: a separate, smaller LM (``small_lm=PATH``) steers the larger frozen one."""

from __future__ import annotations

import pytest
from gen_tiny_lm import PROMPT, WORDS, make_tokenizer, rates, train_tiny_lm

from persona_engine.errors import InvalidInputError

N = 48


@pytest.fixture(scope="module")
def small_lm_dir(tmp_path_factory):
    """A smaller LM (hidden 32 vs the base's 64) trained on the same grammar and tokenizer."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, tokenizer = train_tiny_lm(seed=1, steps=400, hidden=32, lr=3e-3)
    finally:
        torch.set_num_threads(threads)
    path = tmp_path_factory.mktemp("small_lm") / "tiny-llama-small"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def drift(tiny_lm_dir, tiny_vocab_path, **cfg):
    from persona_engine_drift import DriftGenerator

    return DriftGenerator(
        {
            "lm": str(tiny_lm_dir),
            "attributes": [str(tiny_vocab_path)],
            "max_new_tokens": 12,
            "do_sample": True,
            "repetition_penalty": 1.0,
            "seed": 3,
            **cfg,
        }
    )


def test_the_small_lm_steers_the_base(tiny_lm, tiny_lm_dir, tiny_vocab_path, small_lm_dir):
    from persona_engine_drift.steering import DriftLogitsProcessor

    from persona_engine.lm import DecodingConfig, collect_texts, decode_tokens, load_lm, wrap_lm

    gen = drift(tiny_lm_dir, tiny_vocab_path, small_lm=str(small_lm_dir), beta=1.0)
    lm, slm = gen.models()
    assert lm is tiny_lm and slm.model.config.hidden_size == 32 < lm.model.config.hidden_size
    cfg = DecodingConfig(max_new_tokens=12, do_sample=True, repetition_penalty=1.0, seed=3)
    base = rates(
        collect_texts(lm, decode_tokens(lm, [[lm.chat_ids(PROMPT, "sys_neutral")]] * N, cfg))
    )
    red = rates(gen.generate_batch([PROMPT] * N, [{"red": 1.0}] * N))
    blue = rates(gen.generate_batch([PROMPT] * N, [{"blue": 1.0}] * N))
    assert red["red"] > base["red"] + 0.3 and blue["blue"] > base["blue"] + 0.3, (base, red, blue)
    assert min(red["fluent"], blue["fluent"]) >= 0.9
    # the steering term is the small LM's: the same decode with its rows run by hand
    import torch

    rows = [[slm.chat_ids(PROMPT, s) for s in ("sys_neutral", "sys_red")]] * N

    def by_hand(steerer):
        proc = DriftLogitsProcessor(steerer, rows, torch.ones((N, 1)), 1.0)
        ctx = [[lm.chat_ids(PROMPT, "sys_neutral")]] * N
        return collect_texts(lm, decode_tokens(lm, ctx, cfg, processors=[proc]))

    ours = gen.generate_batch([PROMPT] * N, [{"red": 1.0}] * N)
    assert ours == by_hand(load_lm(str(small_lm_dir)))
    assert ours != by_hand(wrap_lm(lm.model, lm.tokenizer, "base-as-steerer"))


def test_a_small_lm_with_another_tokenizer_is_a_clear_error(
    tmp_path, tiny_lm_dir, tiny_vocab_path, small_lm_dir
):
    from persona_engine.lm import load_lm

    other = tmp_path / "other-tokenizer"
    load_lm(str(small_lm_dir)).model.save_pretrained(other)
    swapped = [*WORDS]
    swapped[WORDS.index("red")], swapped[WORDS.index("blue")] = "blue", "red"
    make_tokenizer(swapped).save_pretrained(other)
    gen = drift(tiny_lm_dir, tiny_vocab_path, small_lm=str(other))
    with pytest.raises(InvalidInputError, match="share one tokenizer.*2 tokens"):
        gen.generate_batch([PROMPT], [{"red": 1.0}])


def test_small_lm_is_a_generator_setting_not_a_request_option(
    tiny_lm_dir, tiny_vocab_path, small_lm_dir
):
    from persona_engine.engine import Engine

    config = {"lm": str(tiny_lm_dir), "attributes": [str(tiny_vocab_path)], "max_new_tokens": 4}
    with pytest.raises(InvalidInputError, match="generator settings"):
        Engine().generate(
            None, PROMPT, generator="drift", config=config, small_lm=str(small_lm_dir)
        )
    result = Engine().generate(
        None,
        PROMPT,
        generator="drift",
        config={**config, "small_lm": str(small_lm_dir), "small_lm_device": "cpu"},
        weights={"red": 1},
    )
    assert result.texts[0]
