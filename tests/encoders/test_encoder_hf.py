"""The ``hf`` encoder on tiny Hugging Face models built in code: chat-template rendering, prompt
truncation that never cuts the response, prefix reuse equal to full passes, a reward model's own
score among the features, and clear errors for bad input."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hf_tiny_models import save_tiny_model
from persona_engine_encoders import HFEncoder

from persona_engine.errors import InvalidInputError


@pytest.fixture(scope="module")
def causal_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-causal")


@pytest.fixture(scope="module")
def reward_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-rm", kind="reward", seed=1)


def test_pair_is_rendered_with_the_chat_template(causal_dir):
    enc = HFEncoder({"model": str(causal_dir)})
    tok = enc.tokenizer
    ids = enc.render_ids("what is the best colour", "red")
    text = tok.decode(ids)
    assert text.index("what is the best colour") < text.index("assistant") < text.index("red")
    expected = tok.apply_chat_template(
        [
            {"role": "user", "content": "what is the best colour"},
            {"role": "assistant", "content": "red"},
        ],
        tokenize=False,
    ).rstrip()
    assert ids == list(tok(expected, add_special_tokens=False)["input_ids"])


def test_long_prompt_is_cut_from_its_start_and_the_response_never(causal_dir):
    enc = HFEncoder({"model": str(causal_dir), "max_prompt_tokens": 3})
    words = "tell me about cats please tell me about dogs"
    response = " ".join(["very"] * 40) + " long reply"
    ids = enc.render_ids(words, response)
    full = enc._ids(response)
    head, mid, tail = enc._pieces
    assert ids[len(ids) - len(tail) - len(full) : len(ids) - len(tail)] == full
    kept = ids[len(head) : len(head) + 3]
    assert kept == enc._ids(words)[-3:]
    assert len(ids) == len(head) + 3 + len(mid) + len(full) + len(tail)


def test_prefix_reuse_equals_full_passes(causal_dir):
    enc = HFEncoder({"model": str(causal_dir), "mean_pool": True, "batch_size": 2})
    prompts = ["what is the best colour"] * 3 + ["tell me about cats"] * 2
    responses = ["red", "blue because i like it", "green", "not sure", "cats are very much a"]
    feats = enc.encode_pairs(prompts, responses)
    assert feats.shape == (5, enc.dim)
    for i, (p, r) in enumerate(zip(prompts, responses)):
        np.testing.assert_allclose(
            feats[i, : enc.embedding_dim], enc.full_pass_features(p, r), atol=1e-5
        )
    # the same response under another prompt has other features
    other = enc.encode_pairs(["tell me about cats"], ["red"])
    assert not np.allclose(other[0], feats[0])


def test_reward_model_score_is_a_feature(reward_dir):
    import torch

    enc = HFEncoder({"model": str(reward_dir)})
    assert enc.is_reward_model and enc.feature_names[enc.embedding_dim - 1] == "rm_score"
    feats = enc.encode_pairs(["what is the best colour"] * 2, ["red", "blue"])
    for j, r in enumerate(["red", "blue"]):
        ids = torch.tensor([enc.render_ids("what is the best colour", r)])
        with torch.no_grad():
            own = enc.model(input_ids=ids).logits[0, 0].item()
        assert feats[j, enc.embedding_dim - 1] == pytest.approx(own, abs=1e-5)
    assert HFEncoder({"model": str(reward_dir), "include_score": False}).embedding_dim == 32


def test_model_without_chat_template_falls_back_and_says_so_once(tmp_path):
    folder = save_tiny_model(tmp_path / "plain", chat_template=False)
    enc = HFEncoder({"model": str(folder)})
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        enc.encode_pairs(["tell me about cats", "tell me about dogs"], ["cats", "dogs"])
        enc.encode_pairs(["what is the best colour"], ["red"])
    assert [str(w.message) for w in seen if "chat template" in str(w.message)] == [
        "plain has no usable chat template; pairs are rendered as 'prompt\\n\\nresponse'"
    ]
    assert enc.tokenizer.decode(enc.render_ids("tell me", "cats")).split() == ["tell", "me", "cats"]


def test_missing_model_path_is_one_clear_error(tmp_path):
    with pytest.raises(InvalidInputError, match="no language model at"):
        HFEncoder({"model": str(tmp_path / "nowhere")}).encode_pairs(["a"], ["b"])


def test_layer_out_of_range_is_one_clear_error(causal_dir):
    with pytest.raises(InvalidInputError, match="layer 7 does not exist"):
        HFEncoder({"model": str(causal_dir), "layer": 7}).encode_pairs(["a"], ["b"])


def test_encoder_id_names_model_and_options(causal_dir, reward_dir):
    a = HFEncoder({"model": str(causal_dir)})
    assert a.id != HFEncoder({"model": str(causal_dir), "layer": 1}).id
    assert a.id != HFEncoder({"model": str(causal_dir), "mean_pool": True}).id
    assert a.id != HFEncoder({"model": str(reward_dir)}).id
