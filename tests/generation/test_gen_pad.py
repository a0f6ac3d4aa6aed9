"""The pad generator on the tiny LM: the head, its distill training, direction, and no leakage
(the published dpo objective: test_gen_pad_dpo.py)."""

from __future__ import annotations

import pytest
import torch
from gen_tiny_lm import PROMPT, rates

from persona_engine.errors import InvalidInputError, NoModelError

N = 48


@pytest.fixture(scope="module")
def trained(tiny_lm_dir, tiny_vocab_path):
    """A head with 'red' and 'neg' channels trained by distill (and the others untrained)."""
    from persona_engine_drift.attributes import load_vocabulary
    from persona_engine_pad.trainer import PadTrainConfig, train_reward_head

    from persona_engine.config import TrainingConfig
    from persona_engine.lm import load_lm

    lm, vocab = load_lm(str(tiny_lm_dir)), load_vocabulary(str(tiny_vocab_path))
    cfg = PadTrainConfig(
        objective="distill",
        train_attributes=["red", "neg"],
        samples=8,
        max_new_tokens=12,
        temperature=1.0,
        rank=4,
        training=TrainingConfig(epochs=30, batch_size=256, lr=1e-2, val_fraction=0.2, patience=5),
    )
    head, meta = train_reward_head(lm, vocab, cfg, prompts=[PROMPT])
    return head, meta


def pad(tiny_lm_dir, tiny_vocab_path, head=None, meta=None, **cfg):
    from persona_engine_pad import PadGenerator

    gen = PadGenerator(
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
    if head is not None:
        gen.set_head(head, meta)
    return gen


def plain(lm, system, **cfg):
    from persona_engine.lm import DecodingConfig, collect_texts, decode_tokens

    config = DecodingConfig(
        **{"max_new_tokens": 12, "do_sample": True, "repetition_penalty": 1.0, "seed": 3, **cfg}
    )
    return collect_texts(lm, decode_tokens(lm, [[lm.chat_ids(PROMPT, system)]] * N, config))


def test_untrained_head_is_exactly_the_prompted_base(
    tiny_lm, tiny_lm_dir, tiny_vocab_path, tiny_vocab
):
    from persona_engine_pad.head import PersonalizedRewardHead

    head = PersonalizedRewardHead(tiny_lm.model.config.hidden_size, tiny_vocab.names, rank=4)
    gen = pad(tiny_lm_dir, tiny_vocab_path, head, {"trained": tiny_vocab.names}, do_sample=False)
    h = torch.randn(5, tiny_lm.model.config.hidden_size)
    rows = torch.randn(5, 4, tiny_lm.model.config.hidden_size)
    assert torch.equal(
        head.token_rewards(h, rows, torch.randn(5, 4)), torch.zeros(5, len(tiny_vocab.names), 4)
    )
    ours = gen.generate_batch([PROMPT] * 2, ["red", "neg"])
    assert ours == [plain(tiny_lm, s, do_sample=False)[0] for s in ("sys_red", "sys_neg")]


def test_training_touches_only_its_own_channel(trained, tiny_vocab):
    head, meta = trained
    assert meta["trained"] == ["red", "neg"]
    for name in ("red", "neg"):
        assert meta["metrics"][name]["val_explained"] > 0.3
    for name in ("blue", "pos", "short", "long"):  # never trained: still exactly zero
        assert torch.count_nonzero(head.up[head.attributes.index(name)]) == 0


def test_reward_moves_the_target_beyond_prompting_without_leaking(
    tiny_lm, tiny_lm_dir, tiny_vocab_path, trained
):
    head, meta = trained
    base = rates(plain(tiny_lm, "sys_neutral"))
    gen = pad(tiny_lm_dir, tiny_vocab_path, head, meta, rm_weight=1.0)
    # the head alone (base not prompted) moves the target
    red_only = rates(gen.generate_batch([PROMPT] * N, ["red"] * N, preference_prompt=False))
    assert red_only["red"] > base["red"] + 0.2
    # with the preference prompt, PAD goes beyond prompt-only (same seeds, so the gap is the head's;
    # measured: red 0.875 -> 1.0, bad 0.65 -> 0.83), and stays fluent
    for attr, system, measure in (("red", "sys_red", "red"), ("neg", "sys_neg", "bad")):
        prompted = rates(plain(tiny_lm, system))
        ours = rates(gen.generate_batch([PROMPT] * N, [attr] * N))
        assert ours[measure] > prompted[measure] + 0.1, (attr, prompted, ours)
        assert ours["fluent"] >= 0.9
    # no leakage: the red user's sentiment and the negative user's colour stay at the base rates
    red_user = rates(gen.generate_batch([PROMPT] * N, ["red"] * N))
    neg_user = rates(gen.generate_batch([PROMPT] * N, ["neg"] * N))
    assert abs(red_user["bad"] - base["bad"]) < 0.15 and abs(red_user["very"] - base["very"]) < 0.3
    assert abs(neg_user["red"] - base["red"]) < 0.15 and abs(neg_user["very"] - base["very"]) < 0.3


def test_users_in_one_batch_do_not_affect_each_other(tiny_lm_dir, tiny_vocab_path, trained):
    head, meta = trained
    gen = pad(tiny_lm_dir, tiny_vocab_path, head, meta, do_sample=False)
    together = gen.generate_batch(
        [PROMPT, PROMPT, PROMPT], ["red", "neg", {"red": 0.5, "neg": 0.5}]
    )
    alone = [gen.generate_batch([PROMPT], [p])[0] for p in ("red", "neg", {"red": 0.5, "neg": 0.5})]
    assert together == alone


def test_processor_works_inside_transformers_generate(
    tiny_lm, tiny_lm_dir, tiny_vocab_path, trained
):
    from persona_engine_pad.processor import PADLogitsProcessor
    from transformers import LogitsProcessorList

    head, meta = trained
    gen = pad(tiny_lm_dir, tiny_vocab_path, head, meta, do_sample=False)
    ids = tiny_lm.chat_ids(PROMPT, "sys_red")
    W = torch.zeros((1, len(head.attributes)))
    W[0, head.attributes.index("red")] = 1.0
    with PADLogitsProcessor(tiny_lm, head, W, rm_weight=0.8, top_k=10) as proc:
        out = tiny_lm.model.generate(
            torch.tensor([ids]),
            logits_processor=LogitsProcessorList([proc]),
            max_new_tokens=12,
            do_sample=False,
            pad_token_id=0,
        )
    text = tiny_lm.decode(out[0, len(ids) :].tolist())
    assert text == gen.generate_batch([PROMPT], ["red"])[0]


def test_save_load_and_errors(tmp_path, tiny_lm, tiny_vocab, tiny_lm_dir, tiny_vocab_path, trained):
    from persona_engine_pad.trainer import load_head, save_head

    from persona_engine.engine import Engine
    from persona_engine.lm import wrap_lm

    head, meta = trained
    path = save_head(head, tmp_path / "head", lm=tiny_lm, vocab=tiny_vocab, meta=meta)
    loaded, info = load_head(path, lm=tiny_lm, vocab=tiny_vocab)
    assert all(
        torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), head.state_dict().values())
    )
    with pytest.raises(NoModelError, match="retrain"):
        load_head(path, lm=wrap_lm(tiny_lm.model, tiny_lm.tokenizer, "other"), vocab=tiny_vocab)
    engine = Engine()
    config = {"lm": str(tiny_lm_dir), "attributes": [str(tiny_vocab_path)], "max_new_tokens": 8}
    with pytest.raises(NoModelError, match="pad-train"):
        engine.generate(None, PROMPT, generator="pad", config=config, preference="red")
    config["head"] = str(path)
    result = engine.generate(None, PROMPT, generator="pad", config=config, preference="red")
    assert result.info["preference"] == {"red": 1.0} and result.texts[0]
    with pytest.raises(NoModelError, match="no trained channel"):
        engine.generate(None, PROMPT, generator="pad", config=config, preference="blue")
    with pytest.raises(InvalidInputError, match="unknown attribute"):
        engine.generate(None, PROMPT, generator="pad", config=config, preference={"purple": 1})
    with pytest.raises(InvalidInputError, match="preference"):
        engine.generate(None, PROMPT, generator="pad", config=config)


def test_head_initialisation_is_seeded():
    import torch
    from persona_engine_pad.head import PersonalizedRewardHead

    a = PersonalizedRewardHead(6, ["x", "y"], rank=2, seed=3)
    torch.randn(100)  # whatever ran before must not matter
    b = PersonalizedRewardHead(6, ["x", "y"], rank=2, seed=3)
    c = PersonalizedRewardHead(6, ["x", "y"], rank=2, seed=4)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.down[0], c.down[0])
