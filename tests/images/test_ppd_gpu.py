"""PPD on a CUDA device (``gpu`` marker; skipped where there is none; run them with
``benchmarks/gpu_smoke_ppd.sh``): Diffusion-DPO steps and sampling on the device in bfloat16 (or
float16 where bfloat16 is missing), with tiny SD 1.5- and SDXL-style pipelines built in code,
float16 with loss scaling, the ``persona ppd`` commands with ``--device``; with
``PERSONA_PPD_SD15`` / ``PERSONA_PPD_SDXL`` set to a local diffusers folder, a few steps of the
real model too. ``PERSONA_GPU_TEST_DEVICE=cpu`` runs the same checks on the CPU, to check the
tests themselves on a machine without a GPU."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from persona_engine_ppd.checkpoint import build_model
from persona_engine_ppd.config import AdapterConfig, DPOConfig, ModelConfig
from persona_engine_ppd.sampling import sample_images
from persona_engine_ppd.synthetic import FeatureScale, label_pairs, render_shapes, simulate_users
from persona_engine_ppd.trainer import finetune_ppd
from ppd_support import USER_DIM, write_pairs_file

from persona_engine.cli import cli
from persona_engine.engine import Engine

DEVICE = os.environ.get("PERSONA_GPU_TEST_DEVICE", "cuda")
ON_CUDA = DEVICE.startswith("cuda")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(ON_CUDA and not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _half() -> str:
    """bfloat16 where the device has it (every CPU; Ampere and later), else float16."""
    return "bfloat16" if not ON_CUDA or torch.cuda.is_bf16_supported() else "float16"


def _cfg(path, dtype, **kw):
    return ModelConfig(
        backbone="pipeline",
        pipeline_path=str(path),
        adapter=AdapterConfig(n_tokens=2),
        encoder_config={"image_size": 8, "dim": USER_DIM},
        dtype=dtype,
        **kw,
    )


def _task(n=32, size=8):
    """A pool of shape images (upsampled to ``size``), two users' labelled pairs, and features."""
    rng = np.random.default_rng(0)
    pool = render_shapes(n, size=8, rng=rng)
    z = FeatureScale.fit(pool.images)(pool.images)
    pairs = label_pairs(pool, z, simulate_users(2, rng=rng), 4, rng=rng)
    images = pool.images
    if size != 8:
        images = images.repeat(size // 8, axis=2).repeat(size // 8, axis=3)
    return images, pool.prompts, pairs, rng.normal(size=(n, USER_DIM)).astype(np.float32)


def _on(module, device) -> bool:
    return {p.device.type for p in module.parameters()} == {torch.device(device).type}


@pytest.fixture(params=["sd", "sdxl"])
def tiny_pipeline(request, pipeline_dir, sdxl_pipeline_dir):
    return pipeline_dir if request.param == "sd" else sdxl_pipeline_dir


def test_dpo_and_sampling_run_on_the_device_and_match_the_cpu(tiny_pipeline):
    dtype = _half()
    model = build_model(_cfg(tiny_pipeline, dtype), USER_DIM, device=DEVICE)
    assert _on(model, DEVICE) and str(model.dtype) == f"torch.{dtype}"
    assert {p.dtype for p in model.adapter.parameters()} == {torch.float32}  # master weights
    images, prompts, pairs, feats = _task()
    before = {k: v.clone() for k, v in model.adapter.state_dict().items()}
    cfg = DPOConfig(
        steps=3,
        batch_size=4,
        lr=0.05,
        warmup_steps=0,
        device=DEVICE,
        accumulation_steps=2,
        gradient_checkpointing=True,
    )
    result = finetune_ppd(model, images, prompts, feats, pairs, cfg)
    assert all(np.isfinite(h["loss"]) for h in result.history)
    after = model.adapter.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert _on(model, DEVICE) and {v.dtype for v in after.values()} == {torch.float32}
    users = np.random.default_rng(1).normal(size=(2, USER_DIM)).astype(np.float32)
    kw = {"steps": 4, "guidance_scale": 2.0, "text_guidance_scale": 3.0, "seed": 3}
    ours = sample_images(model, ["a cat", "a dog"], users, **kw)
    base = sample_images(model, ["a cat", "a dog"], None, **kw)
    assert ours.device.type == "cpu" and ours.dtype == torch.float32
    assert torch.isfinite(ours).all() and not torch.equal(ours, base)
    # the same adapter on the CPU in float32, the same noise (drawn on the CPU): the same images
    # at half precision's resolution
    cpu = build_model(_cfg(tiny_pipeline, "float32"), USER_DIM)
    cpu.adapter.load_state_dict(model.adapter.state_dict())
    ref = sample_images(cpu, ["a cat", "a dog"], users, **kw)
    assert (ours - ref).abs().mean() < 0.05


def test_float16_dpo_scales_the_loss_on_the_device(tiny_pipeline):
    model = build_model(_cfg(tiny_pipeline, "float16"), USER_DIM, device=DEVICE)
    images, prompts, pairs, feats = _task()
    cfg = DPOConfig(steps=2, batch_size=4, lr=0.05, warmup_steps=0, device=DEVICE)
    result = finetune_ppd(model, images, prompts, feats, pairs, cfg)
    (record,) = result.history[-1:]
    assert np.isfinite(record["loss"]) and record["loss_scale"] > 1
    assert {p.dtype for p in model.adapter.parameters()} == {torch.float32}
    out = sample_images(model, ["a cat"], feats[:1], steps=3, guidance_scale=2.0, seed=0)
    assert torch.isfinite(out).all()


def test_persona_ppd_trains_and_generates_on_the_device(tmp_path, sdxl_pipeline_dir):
    pairs, lines = write_pairs_file(tmp_path)
    config = tmp_path / "dpo.json"
    config.write_text(
        json.dumps({"batch_size": 2, "warmup_steps": 0, "lr": 0.05, "device": DEVICE})
    )
    enc = json.dumps({"image_size": 8, "dim": USER_DIM})
    args = ["ppd", "train", "--pairs", str(pairs), "--backbone", str(sdxl_pipeline_dir)]
    args += ["--quiet", "--encoder", "tiny-image", "--encoder-config", enc]
    args += ["--config", str(config), "--steps", "2", "--work", str(tmp_path / "work")]
    res = CliRunner().invoke(cli, [*args, "--dtype", _half()], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    engine = Engine()
    engine.generator("ppd").onboard(engine, "new", [{**lines[0], "user_id": "new"}])
    out = tmp_path / "out"
    args = ["ppd", "generate", "new", "a cat", "--out", str(out), "--n", "2"]
    args += ["--dtype", _half(), "--device", DEVICE]
    res = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == ["new-0.png", "new-1.png"]


@pytest.mark.parametrize("env", ["PERSONA_PPD_SD15", "PERSONA_PPD_SDXL"])
def test_a_real_pipeline_from_a_local_folder(env):
    """A few DPO steps and one image of Stable Diffusion 1.5 or SDXL, when its folder is given."""
    path = os.environ.get(env)
    if not path:
        pytest.skip(f"set {env} to a local diffusers folder to run the real model")
    dtype = _half()
    model = build_model(_cfg(path, dtype), USER_DIM, device=DEVICE)
    size = model.backbone.image_size
    images, prompts, pairs, feats = _task(n=8, size=size)
    cfg = DPOConfig(
        steps=2,
        batch_size=1,
        lr=1e-5,
        warmup_steps=0,
        device=DEVICE,
        gradient_checkpointing=True,
    )
    before = {k: v.clone() for k, v in model.adapter.state_dict().items()}
    result = finetune_ppd(model, images, prompts, feats, pairs, cfg)
    assert all(np.isfinite(h["loss"]) for h in result.history)
    assert any(not torch.equal(before[k], v) for k, v in model.adapter.state_dict().items())
    out = sample_images(model, ["a red circle"], feats[:1], steps=10, guidance_scale=2.0)
    assert out.shape == (1, 3, size, size) and torch.isfinite(out).all()
    if ON_CUDA:
        gib = torch.cuda.max_memory_allocated() / 2**30
        print(
            f"{env}: {size}px, {dtype}, peak {gib:.1f} GiB, loss {result.history[-1]['loss']:.4f}"
        )
