"""SDXL-style pipelines (two text encoders, ``added_cond_kwargs``), on a tiny randomly initialised
one saved locally: detected from the UNet's config, the untrained adapter is exactly the base,
Diffusion-DPO trains the adapter, sampling with a user runs, a saved model loads back, and a
pipeline without its second encoder is one clear error. SDXL itself needs its weights and a GPU;
this runs the same code on the CPU."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from persona_engine_ppd import register_model
from persona_engine_ppd.checkpoint import build_model, load_model, save_model
from persona_engine_ppd.config import DPOConfig
from persona_engine_ppd.model import TextCondition
from persona_engine_ppd.sampling import sample_images
from persona_engine_ppd.sdxl import SDXLBackbone
from persona_engine_ppd.trainer import _noise_scheduler, dpo_batch_loss, finetune_ppd
from ppd_support import SDXL_HIDDEN, SDXL_PROJECTION, USER_DIM, pipeline_config, small_task

from persona_engine.engine import Engine
from persona_engine.errors import PersonaEngineError

PROMPTS = ["a cat", "a dog"]
SAMPLE = {"steps": 2, "guidance_scale": 2.0, "text_guidance_scale": 3.0, "seed": 1}


def _users():
    return np.random.default_rng(0).normal(size=(2, USER_DIM)).astype(np.float32)


def test_an_sdxl_pipeline_is_read_with_both_encoders_and_added_conditioning(sdxl_pipeline_dir):
    torch.set_num_threads(1)
    model = build_model(pipeline_config(sdxl_pipeline_dir), USER_DIM)
    backbone = model.backbone
    assert isinstance(backbone, SDXLBackbone) and backbone.variant == "sdxl"
    assert backbone.latent_shape == (4, 4, 4) and backbone.image_size == 8
    text = backbone.encode_prompts(PROMPTS)
    assert isinstance(text, TextCondition)
    assert text.states.shape == (2, 8, sum(SDXL_HIDDEN))
    assert text.added["text_embeds"].shape == (2, SDXL_PROJECTION)
    assert text.added["time_ids"].tolist() == [[8.0, 8.0, 0.0, 0.0, 8.0, 8.0]] * 2
    # the pooled prompt reaches the UNet: another prompt's pooled embedding changes its output
    x, t = (
        torch.randn((2, 4, 4, 4), generator=torch.Generator().manual_seed(0)),
        torch.tensor([5, 50]),
    )
    swapped = TextCondition(
        text.states, {**text.added, "text_embeds": text.added["text_embeds"].flip(0)}
    )
    with torch.no_grad():
        assert not torch.allclose(
            model.predict(x, t, text, None), model.predict(x, t, swapped, None)
        )
    null = backbone.null_prompts(2)  # force_zeros_for_empty_prompt, as SDXL base
    assert not null.states.any() and not null.added["text_embeds"].any()


def test_the_untrained_adapter_leaves_sdxl_exactly_the_base(sdxl_pipeline_dir):
    torch.set_num_threads(1)
    model = build_model(pipeline_config(sdxl_pipeline_dir), USER_DIM)
    base = sample_images(model, PROMPTS, None, **SAMPLE)
    personal = sample_images(model, PROMPTS, _users(), **SAMPLE)
    assert base.shape == (2, 3, 8, 8) and torch.isfinite(base).all()
    assert torch.equal(base, personal)
    pool, _, feats = small_task()
    images = torch.from_numpy(pool.images[:4]) * 2.0 - 1.0
    model.freeze_backbone()
    loss, _ = dpo_batch_loss(
        model,
        _noise_scheduler(model),
        images[:2],
        images[2:],
        PROMPTS,
        torch.from_numpy(feats[:2]),
        beta=5000.0,
        t_range=(0, 100),
        user_dropout=0.0,
        gen=torch.Generator().manual_seed(0),
    )
    assert loss.item() == pytest.approx(np.log(2), abs=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_diffusion_dpo_trains_the_adapter_on_sdxl_and_sampling_follows(sdxl_pipeline_dir, dtype):
    torch.set_num_threads(1)
    model = build_model(pipeline_config(sdxl_pipeline_dir, dtype=dtype), USER_DIM)
    base = sample_images(model, PROMPTS, None, **SAMPLE)
    before = {k: v.clone() for k, v in model.adapter.state_dict().items()}
    pool, pairs, feats = small_task()
    result = finetune_ppd(
        model,
        pool.images,
        pool.prompts,
        feats,
        pairs,
        DPOConfig(steps=3, batch_size=2, lr=0.05, warmup_steps=0, gradient_checkpointing=True),
    )
    assert all(np.isfinite(h["loss"]) for h in result.history)
    after = model.adapter.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert {v.dtype for v in after.values()} == {torch.float32}
    personal = sample_images(model, PROMPTS, _users(), **SAMPLE)
    assert personal.dtype == torch.float32 and torch.isfinite(personal).all()
    assert not torch.equal(base, personal)
    assert torch.equal(base, sample_images(model, PROMPTS, None, **SAMPLE))  # adapter off: base


def test_an_sdxl_model_saves_and_loads_back(sdxl_pipeline_dir, tmp_path):
    torch.set_num_threads(1)
    cfg = pipeline_config(sdxl_pipeline_dir)
    model = build_model(cfg, USER_DIM)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # a "trained" adapter
        for p in model.adapter.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.3)
    users = _users()
    ours = sample_images(model, PROMPTS, users, **SAMPLE)
    path = save_model(model, cfg, tmp_path / "ppd-sdxl")
    assert sorted(p.name for p in path.iterdir()) == ["adapter.safetensors", "ppd.json"]
    assert json.loads((path / "ppd.json").read_text())["backbone_variant"] == "sdxl"
    loaded, _, _ = load_model(path)
    assert isinstance(loaded.backbone, SDXLBackbone)
    assert torch.allclose(ours, sample_images(loaded, PROMPTS, users, **SAMPLE), atol=1e-5)
    engine = Engine(tmp_path / "home")
    register_model(engine, path)
    out = engine.generate(
        None, "a cat", generator="ppd", n_images=1, steps=2, user_vector=users[0].tolist()
    )
    assert out.images[0].size == (8, 8) and out.info["backbone"] == "pipeline"


def test_an_sdxl_pipeline_without_its_second_encoder_is_one_clear_error(
    sdxl_pipeline_dir, tmp_path
):
    broken = tmp_path / "no-encoder-2"
    shutil.copytree(sdxl_pipeline_dir, broken)
    index = json.loads((broken / "model_index.json").read_text())
    index["text_encoder_2"] = [None, None]
    (broken / "model_index.json").write_text(json.dumps(index))
    shutil.rmtree(broken / "text_encoder_2")
    with pytest.raises(PersonaEngineError, match=r"lacks \['text_encoder_2'\].*both text encoders"):
        build_model(pipeline_config(broken), USER_DIM)


def test_a_float16_sdxl_keeps_its_vae_in_float32(sdxl_pipeline_dir):
    model = build_model(pipeline_config(sdxl_pipeline_dir, dtype="float16"), USER_DIM)
    assert model.backbone.vae.config.force_upcast  # SDXL's VAE overflows in float16
    assert {p.dtype for p in model.backbone.vae.parameters()} == {torch.float32}
    assert {p.dtype for p in model.backbone.unet.parameters()} == {torch.float16}
    assert {p.dtype for p in model.adapter.parameters()} == {torch.float32}
