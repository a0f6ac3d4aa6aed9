"""Helpers of the PPD tests: a tiny UNet (8x8 images) built from a config in code (a module with
a unique name: several test folders have a ``conftest.py``, so ``from conftest import ...`` would
pick whichever was imported first)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from persona_engine_ppd.config import AdapterConfig, ModelConfig, TinyUNetConfig  # noqa: E402

USER_DIM = 6


def tiny_config(**adapter) -> ModelConfig:
    return ModelConfig(
        tiny=TinyUNetConfig(
            image_size=8,
            block_out_channels=[8, 16],
            norm_num_groups=4,
            attention_head_dim=4,
            cross_attention_dim=8,
        ),
        adapter=AdapterConfig(n_tokens=2, **adapter),
        encoder_config={"image_size": 8, "dim": USER_DIM},
        num_train_timesteps=100,
    )


def build_tiny(seed: int = 0, **adapter):
    from persona_engine_ppd.checkpoint import build_model

    torch.set_num_threads(1)
    return build_model(tiny_config(**adapter), USER_DIM, seed=seed)


def pipeline_config(path, **kw) -> ModelConfig:
    """A PPD model over the local diffusers pipeline at ``path`` (SD- or SDXL-style)."""
    return ModelConfig(
        backbone="pipeline",
        pipeline_path=str(path),
        adapter=AdapterConfig(n_tokens=2),
        encoder_config={"image_size": 8, "dim": USER_DIM},
        **kw,
    )


def toy_recipe(*, train_users: int, encoder_steps: int, steps: int) -> dict:
    """A synthetic recipe small enough for a test: 120 shapes of 8x8, 5 pairs per training user,
    ``encoder_steps`` of encoder training and ``steps`` of pre-training and of DPO."""
    return {
        "pool_size": 120,
        "train_users": train_users,
        "pairs_per_user": 5,
        "model": {"tiny": {"image_size": 8, "block_out_channels": [8, 16]}},
        "encoder_training": {"steps": encoder_steps, "batch_size": 16, "warmup_steps": 0},
        "pretrain": {"steps": steps, "batch_size": 8, "warmup_steps": 0},
        "dpo": {"steps": steps, "batch_size": 4, "warmup_steps": 0},
    }


def small_task():
    """32 shapes, labelled pairs of 2 simulated users, random user embeddings per image."""
    from persona_engine_ppd.synthetic import (
        FeatureScale,
        label_pairs,
        render_shapes,
        simulate_users,
    )

    rng = np.random.default_rng(0)
    pool = render_shapes(32, size=8, rng=rng)
    z = FeatureScale.fit(pool.images)(pool.images)
    pairs = label_pairs(pool, z, simulate_users(2, rng=rng), 4, rng=rng)
    return pool, pairs, rng.normal(size=(32, USER_DIM)).astype(np.float32)


def perturb_adapter(model, seed: int = 1, std: float = 0.5) -> None:
    """Give the zero-initialised value projections non-zero weights (a 'trained' adapter)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for branch in model.adapter.branches.values():
            branch.to_v.weight.copy_(torch.randn(branch.to_v.weight.shape, generator=gen) * std)


def write_png(path, rgb: np.ndarray) -> str:
    """Save an (H, W, 3) float image in [0, 1] as PNG."""
    from PIL import Image

    Image.fromarray((np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)).save(path)
    return str(path)


def write_pairs_file(folder) -> tuple[str, list[dict]]:
    """A pairs JSONL of 6 comparisons of two users over 12 rendered shapes saved as PNG files
    (``persona ppd train --pairs``'s input): its path and its lines."""
    import json

    from persona_engine_ppd.synthetic import render_shapes

    imgs = render_shapes(12, size=8, rng=np.random.default_rng(0)).images
    lines = []
    for k in range(6):
        a = write_png(folder / f"{k}a.png", imgs[2 * k].transpose(1, 2, 0))
        b = write_png(folder / f"{k}b.png", imgs[2 * k + 1].transpose(1, 2, 0))
        lines.append({"user_id": f"u{k % 2}", "prompt": "a cat", "chosen": a, "rejected": b})
    pairs = folder / "pairs.jsonl"
    pairs.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return str(pairs), lines


def held_out_dpo(model, images, prompts, pairs, user_embeddings, *, beta, seed=7, repeats=4):
    """The Diffusion-DPO loss and implicit accuracy of ``model`` on ``pairs`` (indices into
    ``images`` (n, 3, S, S) in [0, 1]), each pair conditioned on its user's row of
    ``user_embeddings``, written out here rather than taken from the trainer, with noise and
    timesteps (the upper half of the schedule) drawn from ``seed``: the same draws for every model.

    Per pair, with one noise and timestep for both images, and the v-prediction errors
    ``e = mean ||v - v_theta(x_t)||^2`` of the policy (user-conditioned) and of the reference (no
    user): ``inside = -beta/2 ((e_w - e_l) - (ref_w - ref_l))``, the loss ``-log sigmoid(inside)``
    and the accuracy the share of pairs with ``inside > 0`` (a tie counts half).
    """
    from diffusers import DDPMScheduler

    sched = DDPMScheduler.from_config(model.scheduler_config)
    n_t = sched.config.num_train_timesteps
    assert sched.config.prediction_type == "v_prediction"
    gen = torch.Generator().manual_seed(seed)
    data = torch.from_numpy(np.asarray(images, dtype=np.float32)) * 2.0 - 1.0
    b = len(pairs)
    users = torch.from_numpy(np.asarray(user_embeddings, dtype=np.float32)[pairs.user])
    text = model.backbone.encode_prompts([prompts[i] for i in pairs.chosen])
    losses, accuracies = [], []
    with torch.no_grad():
        tokens = model.adapter.tokens(users)
        for _ in range(repeats):
            noise = torch.randn((b, *data.shape[1:]), generator=gen)
            t = torch.randint(n_t // 2, n_t, (b,), generator=gen)
            w, lose = data[pairs.chosen], data[pairs.rejected]
            policy = _v_error(model, sched, w, noise, t, text, tokens) - _v_error(
                model, sched, lose, noise, t, text, tokens
            )
            reference = _v_error(model, sched, w, noise, t, text, None) - _v_error(
                model, sched, lose, noise, t, text, None
            )
            inside = -0.5 * beta * (policy - reference)
            losses.append(float(torch.nn.functional.softplus(-inside).mean()))
            accuracies.append(float(((inside > 0).float() + 0.5 * (inside == 0).float()).mean()))
    return float(np.mean(losses)), float(np.mean(accuracies))


def _v_error(model, sched, x0, noise, t, text, user_tokens):
    """Per image: the mean squared error of the model's v-prediction at ``x_t``."""
    v = sched.get_velocity(x0, noise, t)
    pred = model.predict(sched.add_noise(x0, noise, t), t, text, user_tokens)
    return (pred - v).pow(2).flatten(1).mean(dim=1)


def _tiny_tokenizer(root):
    """A letter-level CLIP tokenizer (8 tokens) written under ``root``."""
    import json

    from transformers import CLIPTokenizer

    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = {
        "<|startoftext|>": 0,
        "<|endoftext|>": 1,
        **{c: i + 2 for i, c in enumerate(letters)},
        **{c + "</w>": i + 28 for i, c in enumerate(letters)},
    }
    (root / "vocab.json").write_text(json.dumps(vocab))
    (root / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(root / "vocab.json"), str(root / "merges.txt"), model_max_length=8)


def _tiny_clip_config(vocab_size: int, hidden: int, layers: int = 2, **kw):
    """A tiny CLIP text encoder's config; its start, end and padding tokens are those of
    :func:`_tiny_tokenizer` (the pooled output is read at the end token)."""
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        max_position_embeddings=8,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        **kw,
    )


def _tiny_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        latent_channels=4,
        norm_num_groups=4,
        sample_size=8,
    )


def _tiny_unet(cross_attention_dim: int, **kw):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=4,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        norm_num_groups=4,
        attention_head_dim=4,
        **kw,
    )


def build_tiny_pipeline(root):
    """A tiny randomly initialised Stable Diffusion pipeline (8x8 images, 4x4x4 latents), saved
    under ``root / "pipe"``; returns that directory."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline
    from transformers import CLIPTextModel

    torch.manual_seed(0)
    tokenizer = _tiny_tokenizer(root)
    pipe = StableDiffusionPipeline(
        vae=_tiny_vae(),
        text_encoder=CLIPTextModel(_tiny_clip_config(len(tokenizer), 16, layers=1)),
        tokenizer=tokenizer,
        unet=_tiny_unet(16),
        scheduler=DDIMScheduler(num_train_timesteps=100, clip_sample=False, steps_offset=1),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(root / "pipe")
    return root / "pipe"


#: The tiny SDXL pipeline: token states of 8 + 16 channels, a pooled projection of 8, time ids
#: embedded in 4 channels each (the UNet's added embedding takes 4 * 6 + 8 = 32 numbers).
SDXL_HIDDEN = (8, 16)
SDXL_PROJECTION = 8
SDXL_TIME_DIM = 4


def build_tiny_sdxl_pipeline(root):
    """A tiny randomly initialised SDXL-style pipeline (two CLIP text encoders, the second with a
    projection; a UNet with ``addition_embed_type="text_time"``; 8x8 images, 4x4x4 latents),
    saved under ``root / "pipe"``; returns that directory."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(0)
    tokenizer = _tiny_tokenizer(root)
    pipe = StableDiffusionXLPipeline(
        vae=_tiny_vae(),
        text_encoder=CLIPTextModel(_tiny_clip_config(len(tokenizer), SDXL_HIDDEN[0])),
        text_encoder_2=CLIPTextModelWithProjection(
            _tiny_clip_config(len(tokenizer), SDXL_HIDDEN[1], projection_dim=SDXL_PROJECTION)
        ),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=_tiny_unet(
            sum(SDXL_HIDDEN),
            addition_embed_type="text_time",
            addition_time_embed_dim=SDXL_TIME_DIM,
            projection_class_embeddings_input_dim=SDXL_TIME_DIM * 6 + SDXL_PROJECTION,
        ),
        scheduler=EulerDiscreteScheduler(
            num_train_timesteps=100, steps_offset=1, timestep_spacing="leading"
        ),
        add_watermarker=False,
    )
    pipe.save_pretrained(root / "pipe")
    return root / "pipe"
