"""The diffusers-pipeline backbone (the Stable Diffusion code path: VAE latents, a CLIP text
encoder, guidance on the prompt), on a tiny randomly initialised pipeline saved locally.
Stable Diffusion 1.5 itself needs its weights and a GPU; this runs the same code on CPU."""

from __future__ import annotations

import numpy as np
import torch
from persona_engine_ppd import register_model
from persona_engine_ppd.checkpoint import build_model, load_model, save_model
from persona_engine_ppd.config import AdapterConfig, DPOConfig, ModelConfig
from persona_engine_ppd.sampling import sample_images
from persona_engine_ppd.synthetic import FeatureScale, label_pairs, render_shapes, simulate_users
from persona_engine_ppd.trainer import finetune_ppd

from persona_engine.engine import Engine


def _cfg(path):
    return ModelConfig(
        backbone="pipeline",
        pipeline_path=str(path),
        adapter=AdapterConfig(n_tokens=2),
        encoder_config={"image_size": 8, "dim": 6},
    )


def test_pipeline_backbone_trains_samples_and_round_trips(pipeline_dir, tmp_path):
    torch.set_num_threads(1)
    model = build_model(_cfg(pipeline_dir), 6)
    assert (
        model.backbone.kind == "pipeline"
        and model.backbone.latent_shape == (4, 4, 4)
        and model.backbone.image_size == 8
    )
    users = np.random.default_rng(0).normal(size=(2, 6)).astype(np.float32)
    base = sample_images(model, ["a cat", "a dog"], None, steps=2, text_guidance_scale=3.0, seed=1)
    same = sample_images(
        model,
        ["a cat", "a dog"],
        users,
        steps=2,
        guidance_scale=2.0,
        text_guidance_scale=3.0,
        seed=1,
    )
    assert base.shape == (2, 3, 8, 8) and torch.equal(base, same)  # zero-initialised adapter
    rng = np.random.default_rng(0)
    pool = render_shapes(32, size=8, rng=rng)
    z = FeatureScale.fit(pool.images)(pool.images)
    pairs = label_pairs(pool, z, simulate_users(2, rng=rng), 4, rng=rng)
    feats = rng.normal(size=(32, 6)).astype(np.float32)
    result = finetune_ppd(
        model,
        pool.images,
        pool.prompts,
        feats,
        pairs,
        DPOConfig(steps=2, batch_size=2, lr=0.05, warmup_steps=0),
    )
    assert result.history[-1]["loss"] > 0
    after = sample_images(
        model,
        ["a cat", "a dog"],
        users,
        steps=2,
        guidance_scale=2.0,
        text_guidance_scale=3.0,
        seed=1,
    )
    assert not torch.equal(base, after)
    path = save_model(model, _cfg(pipeline_dir), tmp_path / "ppd-sd")
    assert sorted(p.name for p in path.iterdir()) == [
        "adapter.safetensors",
        "ppd.json",
    ]  # the pipeline is referenced, not copied
    loaded, cfg, _ = load_model(path)
    again = sample_images(
        loaded,
        ["a cat", "a dog"],
        users,
        steps=2,
        guidance_scale=2.0,
        text_guidance_scale=3.0,
        seed=1,
    )
    assert torch.allclose(after, again, atol=1e-5)
    engine = Engine(tmp_path / "home")
    register_model(engine, path)
    out = engine.generate(
        None, "a cat", generator="ppd", n_images=1, steps=2, user_vector=users[0].tolist()
    )
    assert out.images[0].size == (8, 8) and out.info["backbone"] == "pipeline"
