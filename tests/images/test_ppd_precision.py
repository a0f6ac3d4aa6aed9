"""Half precision (``dtype``): the tiny backbone and a tiny diffusers pipeline load, train with
Diffusion-DPO and sample in bfloat16 on the CPU (the code path of float16/bfloat16 on a GPU), the
adapter (master weights) and the loss stay float32, images come back float32; float32 stays the
default. Master weights and float16 loss scaling: tests/images/test_ppd_master_weights.py."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from persona_engine_ppd.checkpoint import build_model, load_model, save_model
from persona_engine_ppd.config import DPOConfig, ModelConfig
from persona_engine_ppd.precision import resolve_dtype
from persona_engine_ppd.sampling import initial_noise, sample_images
from persona_engine_ppd.trainer import _noise_scheduler, dpo_batch_loss, finetune_ppd
from ppd_support import (
    USER_DIM,
    perturb_adapter,
    pipeline_config,
    small_task,
    tiny_config,
    write_pairs_file,
)

from persona_engine.cli import cli
from persona_engine.engine import Engine

BF16 = torch.bfloat16


def _dtypes(module):
    return {p.dtype for p in module.parameters()}


def _split(model):
    """(backbone's dtypes, adapter's dtypes)."""
    return _dtypes(model.backbone), _dtypes(model.adapter)


def test_dtype_names_resolve_and_auto_is_float32_without_cuda():
    assert resolve_dtype("float32") is torch.float32
    assert resolve_dtype("float16") is torch.float16 and resolve_dtype("bfloat16") is BF16
    assert resolve_dtype("auto", "cpu") is torch.float32
    with pytest.raises(ValueError, match="unknown dtype"):
        resolve_dtype("float8")
    with pytest.raises(ValueError, match="dtype"):
        ModelConfig(dtype="half")


def test_float32_is_the_default(pipeline_dir):
    assert ModelConfig().dtype == "float32"
    torch.set_num_threads(1)
    assert _dtypes(build_model(tiny_config(), USER_DIM)) == {torch.float32}
    assert _dtypes(build_model(pipeline_config(pipeline_dir), USER_DIM)) == {torch.float32}


def test_a_pipeline_loads_in_bfloat16(pipeline_dir):
    model = build_model(pipeline_config(pipeline_dir, dtype="bfloat16"), USER_DIM)
    backbone = model.backbone
    for part in (backbone.unet, backbone.vae, backbone.text_encoder):
        assert _dtypes(part) == {BF16}, type(part).__name__
    assert _dtypes(model.adapter) == {torch.float32}  # master weights
    assert model.dtype == BF16
    noise = initial_noise(model, 3, seed=5)
    assert noise.dtype == BF16 and noise.shape == (3, 4, 4, 4)


def test_the_tiny_backbone_in_bfloat16_starts_from_the_float32_weights():
    full = build_model(tiny_config(), USER_DIM, seed=3)
    half = build_model(tiny_config(), USER_DIM, seed=3, dtype="bfloat16")
    assert _split(half) == ({BF16}, {torch.float32})
    for (name, a), (_, b) in zip(full.named_parameters(), half.named_parameters(), strict=True):
        assert torch.equal(a.to(b.dtype), b), name


@pytest.mark.parametrize("backbone", ["tiny", "pipeline"])
def test_diffusion_dpo_trains_the_adapter_in_bfloat16(backbone, pipeline_dir):
    torch.set_num_threads(1)
    cfg = (
        tiny_config().model_copy(update={"dtype": "bfloat16"})
        if backbone == "tiny"
        else pipeline_config(pipeline_dir, dtype="bfloat16")
    )
    model = build_model(cfg, USER_DIM)
    pool, pairs, feats = small_task()
    images = torch.from_numpy(pool.images[:4]) * 2.0 - 1.0
    sched = _noise_scheduler(model)
    model.freeze_backbone()
    loss, _ = dpo_batch_loss(
        model,
        sched,
        images[:2],
        images[2:],
        [pool.prompts[0], pool.prompts[1]],
        torch.from_numpy(feats[:2]),
        beta=100.0,
        t_range=(0, 100),
        user_dropout=0.0,
        gen=torch.Generator().manual_seed(0),
    )
    # the loss is float32; the zero-initialised adapter is exactly the reference: log 2
    assert loss.dtype == torch.float32 and loss.item() == pytest.approx(np.log(2), abs=1e-6)
    before = {k: v.clone() for k, v in model.adapter.state_dict().items()}
    result = finetune_ppd(
        model,
        pool.images,
        pool.prompts,
        feats,
        pairs,
        DPOConfig(steps=3, batch_size=4, lr=0.05, warmup_steps=0),
    )
    assert all(np.isfinite(h["loss"]) for h in result.history)
    after = model.adapter.state_dict()
    assert _split(model) == ({BF16}, {torch.float32})
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert all(torch.isfinite(v.float()).all() for v in after.values())


@pytest.mark.parametrize("backbone", ["tiny", "pipeline"])
def test_bfloat16_sampling_gives_finite_float32_images_close_to_float32(backbone, pipeline_dir):
    torch.set_num_threads(1)
    cfg = tiny_config() if backbone == "tiny" else pipeline_config(pipeline_dir)
    full = build_model(cfg, USER_DIM, seed=2)
    perturb_adapter(full)
    half = build_model(cfg, USER_DIM, seed=2, dtype="bfloat16")
    half.load_state_dict(full.state_dict())
    assert _split(half) == ({BF16}, {torch.float32})
    prompts = ["circle", "square"] if backbone == "tiny" else ["a cat", "a dog"]
    users = np.random.default_rng(1).normal(size=(2, USER_DIM)).astype(np.float32)
    kw = {"steps": 3, "guidance_scale": 2.0, "text_guidance_scale": 3.0, "seed": 4}
    ref = sample_images(full, prompts, users, **kw)
    out = sample_images(half, prompts, users, **kw)
    assert out.dtype == torch.float32 and out.shape == (2, 3, 8, 8)
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    assert (out - ref).abs().mean() < 0.05  # the same computation, at bfloat16's resolution
    base = sample_images(half, prompts, None, **kw)
    assert torch.isfinite(base).all() and not torch.equal(base, out)


def test_a_bfloat16_model_saves_float32_weights_and_loads_in_either(tmp_path):
    cfg = tiny_config().model_copy(update={"dtype": "bfloat16"})
    model = build_model(cfg, USER_DIM)
    perturb_adapter(model)
    path = save_model(model, cfg, tmp_path / "m")
    from safetensors.torch import load_file

    assert {v.dtype for v in load_file(str(path / "adapter.safetensors")).values()} == {
        torch.float32
    }
    loaded, loaded_cfg, _ = load_model(path)
    assert loaded_cfg.dtype == "bfloat16" and _split(loaded) == ({BF16}, {torch.float32})
    as_float, _, _ = load_model(path, dtype="float32")
    assert _dtypes(as_float) == {torch.float32}
    for (name, a), (_, b) in zip(
        model.named_parameters(), as_float.named_parameters(), strict=True
    ):
        assert torch.equal(a.float(), b), name


def test_persona_ppd_train_and_generate_take_dtype(tmp_path, pipeline_dir):
    pairs, lines = write_pairs_file(tmp_path)
    config = tmp_path / "dpo.json"
    config.write_text(json.dumps({"batch_size": 2, "warmup_steps": 0, "lr": 0.05}))
    enc = json.dumps({"image_size": 8, "dim": USER_DIM})
    args = ["ppd", "train", "--pairs", str(pairs), "--backbone", str(pipeline_dir), "--quiet"]
    args += ["--encoder", "tiny-image", "--encoder-config", enc, "--config", str(config)]
    args += ["--steps", "2", "--work", str(tmp_path / "work"), "--dtype", "bfloat16"]
    res = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    engine = Engine()
    (rec,) = engine.store.models("ppd")
    _, cfg, _ = load_model(rec.path)
    assert cfg.dtype == "bfloat16"
    engine.generator("ppd").onboard(engine, "new", [{**lines[0], "user_id": "new"}])
    out = tmp_path / "out"
    args = ["ppd", "generate", "new", "a cat", "--out", str(out), "--n", "2", "--dtype"]
    res = CliRunner().invoke(cli, [*args, "bfloat16"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == ["new-0.png", "new-1.png"]
    res = CliRunner().invoke(cli, [*args, "float64"])
    assert res.exit_code != 0 and "float64" in res.output


def test_persona_ppd_train_synthetic_takes_dtype(tmp_path):
    steps = {"steps": 2, "batch_size": 4, "warmup_steps": 0}
    recipe = {
        "pool_size": 100,
        "train_users": 2,
        "pairs_per_user": 5,
        "encoder_dim": USER_DIM,
        "model": tiny_config().model_dump(mode="json"),
        "encoder_training": steps,
        "pretrain": steps,
        "dpo": {**steps, "lr": 0.05},
    }
    config = tmp_path / "recipe.json"
    config.write_text(json.dumps(recipe))
    args = ["ppd", "train-synthetic", "--config", str(config), "--quiet", "--dtype", "bfloat16"]
    res = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    (rec,) = Engine().store.models("ppd")
    model, cfg, meta = load_model(rec.path)
    assert cfg.dtype == "bfloat16" and _split(model) == ({BF16}, {torch.float32})
    assert np.isfinite(meta["metrics"]["dpo_loss"])
