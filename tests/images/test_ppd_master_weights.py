"""Half-precision training: the adapter's parameters and AdamW's state are float32 master weights
whatever the UNet runs in, so an update below bfloat16's resolution still lands; a float16 UNet
trains with loss scaling, which skips a step whose gradients overflow and lowers the scale."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from persona_engine_ppd.checkpoint import build_model
from persona_engine_ppd.config import DPOConfig, StepTrainingConfig
from persona_engine_ppd.steps import STATE_FILE, STATE_WEIGHTS, run_steps
from persona_engine_ppd.trainer import finetune_ppd
from ppd_support import USER_DIM, perturb_adapter, small_task, tiny_config

BF16 = torch.bfloat16


def _one_dpo_step(dtype, lr, tmp_path):
    torch.set_num_threads(1)
    model = build_model(tiny_config(), USER_DIM, seed=0, dtype=dtype)
    perturb_adapter(model)  # non-zero value weights: every adapter weight gets a gradient
    pool, pairs, feats = small_task()
    before = {k: v.detach().clone() for k, v in model.adapter.named_parameters()}
    cfg = DPOConfig(steps=1, batch_size=4, lr=lr, warmup_steps=0, checkpoint_every=1)
    result = finetune_ppd(
        model, pool.images, pool.prompts, feats, pairs, cfg, checkpoint_dir=tmp_path / "ckpt"
    )
    return model, before, result


def test_a_bfloat16_model_trains_float32_master_weights_that_keep_tiny_updates(tmp_path):
    from safetensors.torch import load_file

    model, before, _ = _one_dpo_step("bfloat16", 1e-6, tmp_path)
    assert model.dtype == BF16
    after = dict(model.adapter.named_parameters())
    assert {p.dtype for p in after.values()} == {torch.float32}
    # AdamW's moments follow their parameters: float32 too (read from the step's checkpoint)
    state = load_file(str(tmp_path / "ckpt" / STATE_WEIGHTS))
    moments = {v.dtype for k, v in state.items() if k.startswith("opt.") and "exp_avg" in k}
    assert moments == {torch.float32}
    for name in [n for n in after if n.endswith("to_v.weight")]:
        w0, w1 = before[name], after[name].detach()
        # where bfloat16 weights could not have held this step's update (it rounds away when
        # applied to them: nearly everywhere at lr 1e-6), the float32 master weights moved
        half = w0.to(BF16)
        lost = (half.float() + (w1 - w0).float()).to(BF16) == half
        assert lost.float().mean() > 0.9, name
        assert (w1 != w0)[lost].float().mean() > 0.9, name


def test_float16_trains_with_loss_scaling(tmp_path):
    model, before, result = _one_dpo_step("float16", 1e-3, tmp_path)
    assert model.dtype == torch.float16
    (record,) = result.history
    assert record["loss_scale"] == 2.0**16 and record["skipped_steps"] == 0
    assert np.isfinite(record["loss"])
    after = dict(model.adapter.named_parameters())
    assert {p.dtype for p in after.values()} == {torch.float32}
    assert any(not torch.equal(before[k], after[k].detach()) for k in before)
    state = json.loads((tmp_path / "ckpt" / STATE_FILE).read_text())
    assert state["loss_scaler"]["scale"] == 2.0**16


def _overflow_at_first_step(weights):
    """A step loss ``sum(p * w)``: finite, but at step 0 ``w`` is 1e35, so the gradient scaled by
    2^16 is beyond float32's range (an overflow, as float16 activations would give)."""

    def step_loss(step, rng, gen):
        w = torch.full((3,), 1e35 if step == 0 else 1.0)
        return (weights * w).sum(), {}

    return step_loss


def test_loss_scaling_skips_an_overflowing_step_and_halves_the_scale(tmp_path):
    p = torch.nn.Parameter(torch.zeros(3))
    cfg = StepTrainingConfig(steps=2, lr=0.1, warmup_steps=0, checkpoint_every=1)
    result = run_steps(
        {"p": p},
        _overflow_at_first_step(p),
        cfg,
        log_every=1,
        loss_scaling=True,
        checkpoint_dir=tmp_path,
    )
    first, second = result.history
    assert first["skipped_steps"] == 1 and first["loss_scale"] == 2.0**16
    assert second["skipped_steps"] == 0 and second["loss_scale"] == 2.0**15
    # one AdamW step of lr 0.1 against a gradient of 1: the skipped step left no trace
    assert torch.allclose(p.detach(), torch.full((3,), -0.1), atol=1e-6)
    saved = json.loads((tmp_path / STATE_FILE).read_text())["loss_scaler"]
    assert saved["scale"] == 2.0**15


def test_loss_scaling_refuses_half_precision_parameters():
    p = torch.nn.Parameter(torch.zeros(3, dtype=torch.float16))
    cfg = StepTrainingConfig(steps=1, lr=0.1, warmup_steps=0)
    with pytest.raises(ValueError, match="float32 parameters"):
        run_steps({"p": p}, lambda s, r, g: p.float().sum(), cfg, loss_scaling=True)
