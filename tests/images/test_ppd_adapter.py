"""The user adapter: zero-initialised (the base model is unchanged), on every cross-attention
layer, user-embedding dropout."""

from __future__ import annotations

import pytest
import torch
from persona_engine_ppd.model import UserAttnProcessor, cross_attention_layers
from ppd_support import USER_DIM, build_tiny, perturb_adapter

from persona_engine.errors import InvalidInputError


def _prompts(model, n):
    return model.backbone.encode_prompts(["square", "circle"] * (n // 2))


def test_untrained_adapter_leaves_the_base_model_unchanged(tiny_model, inputs):
    x, t = inputs
    users = torch.randn(4, USER_DIM)
    with torch.no_grad():
        text = _prompts(tiny_model, 4)
        tiny_model.adapter.detach(tiny_model.unet)  # the plain diffusers UNet
        assert not any(
            isinstance(m.processor, UserAttnProcessor)
            for m in cross_attention_layers(tiny_model.unet).values()
        )
        base = tiny_model.unet(x, t, encoder_hidden_states=text).sample
        tiny_model.adapter.attach(tiny_model.unet)
        personalized = tiny_model.predict(x, t, text, tiny_model.adapter.tokens(users))
        null = tiny_model.predict(x, t, text, tiny_model.adapter.tokens(torch.zeros_like(users)))
    assert torch.equal(base, personalized)  # bit for bit, whatever the user
    assert torch.equal(base, null)
    perturb_adapter(tiny_model)
    with torch.no_grad():
        trained = tiny_model.predict(x, t, text, tiny_model.adapter.tokens(users))
        off = tiny_model.predict(x, t, text, None)
    assert not torch.allclose(base, trained, atol=1e-4)  # the branch does act once trained
    assert torch.equal(base, off)  # and tokens=None is still exactly the base (the DPO reference)


def test_a_branch_on_every_cross_attention_layer(tiny_model):
    layers = cross_attention_layers(tiny_model.unet)
    assert len(layers) >= 3  # down block, mid block, up block
    assert all(name.endswith("attn2") for name in layers)
    assert sorted(layers) == tiny_model.adapter.layer_names
    assert all(isinstance(m.processor, UserAttnProcessor) for m in layers.values())
    for branch in tiny_model.adapter.branches.values():
        assert torch.count_nonzero(branch.to_v.weight) == 0
        assert torch.count_nonzero(branch.to_k.weight) > 0


def test_only_the_adapter_is_trainable_after_freezing(tiny_model):
    tiny_model.freeze_backbone()
    trainable = {n for n, p in tiny_model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("adapter.") for n in trainable)


def test_user_dropout_zeroes_whole_user_embeddings():
    model = build_tiny()
    users = torch.randn(4000, USER_DIM)
    with torch.no_grad():
        null = model.adapter.projector(torch.zeros(1, USER_DIM))
        kept = model.adapter.tokens(users, dropout=0.0)
        all_dropped = model.adapter.tokens(users[:10], dropout=0.999999)
        half = model.adapter.tokens(users, dropout=0.5, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(kept, model.adapter.projector(users))
    assert torch.allclose(all_dropped, null.expand_as(all_dropped))
    is_null = torch.isclose(half, null.expand_as(half), atol=1e-6).flatten(1).all(dim=1)
    assert 0.45 < is_null.float().mean().item() < 0.55


def test_null_user_tokens_are_learnable_not_zero(tiny_model):
    with torch.no_grad():
        null = tiny_model.adapter.tokens(torch.zeros(2, USER_DIM))
    assert null.shape == (2, 2, 8)
    assert torch.equal(null[0], null[1])


def test_wrong_user_embedding_width_is_a_clear_error(tiny_model):
    with pytest.raises(InvalidInputError, match="shape"):
        tiny_model.adapter.tokens(torch.zeros(2, USER_DIM + 1))
