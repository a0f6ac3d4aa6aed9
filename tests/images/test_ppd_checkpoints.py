"""Resumable step training, what PPD fine-tuning learns, and the safetensors model round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from persona_engine_ppd.checkpoint import load_model, save_model
from persona_engine_ppd.config import DPOConfig, PretrainConfig
from persona_engine_ppd.synthetic import (
    FeatureScale,
    PreferencePairs,
    label_pairs,
    render_shapes,
    simulate_users,
)
from persona_engine_ppd.trainer import finetune_ppd, learning_rate, pretrain_base
from persona_engine_ppd.users import pool_pairs
from ppd_support import USER_DIM, build_tiny, held_out_dpo, perturb_adapter, tiny_config


def _pool(n=64):
    rng = np.random.default_rng(0)
    pool = render_shapes(n, size=8, rng=rng)
    return pool, rng


def test_a_resumed_pretraining_repeats_the_uninterrupted_run(tmp_path):
    pool, _ = _pool()
    cfg = PretrainConfig(steps=4, batch_size=8, lr=1e-3, warmup_steps=2, checkpoint_every=2)
    straight = build_tiny()
    pretrain_base(straight, pool.images, pool.prompts, cfg)
    resumed = build_tiny()
    pretrain_base(
        resumed,
        pool.images,
        pool.prompts,
        cfg.model_copy(update={"steps": 2}),
        checkpoint_dir=tmp_path / "ck",
    )
    assert json.loads((tmp_path / "ck" / "state.json").read_text())["step"] == 2
    again = build_tiny()  # a fresh process: same init, then the checkpoint
    result = pretrain_base(again, pool.images, pool.prompts, cfg, checkpoint_dir=tmp_path / "ck")
    assert result.resumed_from == 2
    for (name, a), (_, b) in zip(
        straight.backbone.state_dict().items(), again.backbone.state_dict().items()
    ):
        assert torch.equal(a, b), name
    assert not torch.equal(
        straight.backbone.state_dict()["unet.conv_in.weight"],
        build_tiny().backbone.state_dict()["unet.conv_in.weight"],
    )


def test_ppd_finetuning_trains_only_the_adapter_and_logs_implicit_accuracy(tmp_path):
    pool, rng = _pool()
    z = FeatureScale.fit(pool.images)(pool.images)
    users = simulate_users(4, rng=rng)
    pairs = label_pairs(pool, z, users, 6, rng=rng)
    features = rng.normal(size=(len(pool), USER_DIM)).astype(np.float32)
    model = build_tiny()
    base_before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    result = finetune_ppd(
        model,
        pool.images,
        pool.prompts,
        features,
        pairs,
        DPOConfig(steps=3, batch_size=4, checkpoint_every=3),
        checkpoint_dir=tmp_path / "dpo",
    )
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(v, base_before[k]), k
    assert any(torch.count_nonzero(b.to_v.weight) > 0 for b in model.adapter.branches.values())
    rec = result.history[-1]
    assert {"loss", "implicit_acc", "model_mse", "ref_mse"} <= set(rec)
    assert (tmp_path / "dpo" / "state.safetensors").is_file()


def test_ppd_finetuning_improves_the_dpo_objective_on_held_out_pairs():
    """Two users of opposite tastes, 80 training pairs each; on 20 more pairs of each, with the same
    noise and timesteps before and after, the Diffusion-DPO loss falls from log 2 (the
    zero-initialised adapter: policy = reference) and the implicit accuracy rises from 1/2."""
    rng = np.random.default_rng(0)
    pool = render_shapes(200, size=8, rng=rng)
    z = FeatureScale.fit(pool.images)(pool.images)
    pairs = label_pairs(pool, z, simulate_users(2, rng=rng, opposite_pairs=True), 100, rng=rng)
    features = np.pad(
        z, ((0, 0), (0, USER_DIM - z.shape[1]))
    )  # the gold features, as image features

    def subset(rows):
        rows = np.concatenate(rows)
        return PreferencePairs(pairs.user[rows], pairs.chosen[rows], pairs.rejected[rows])

    train = subset([r[:80] for r in pairs.user_rows.values()])
    held = subset([r[80:] for r in pairs.user_rows.values()])
    # each user as the adapter sees them: pooled from their training pairs
    users = np.stack(
        [
            pool_pairs(features[train.chosen[r]], features[train.rejected[r]])
            for _, r in sorted(train.user_rows.items())
        ]
    )
    cfg = DPOConfig(steps=200, batch_size=32, lr=1e-2, warmup_steps=5, timestep_range=(0.5, 1.0))
    beta = cfg.beta_for("tiny")
    model = build_tiny()
    loss_before, acc_before = held_out_dpo(model, pool.images, pool.prompts, held, users, beta=beta)
    assert loss_before == pytest.approx(np.log(2), abs=1e-6) and acc_before == 0.5
    finetune_ppd(model, pool.images, pool.prompts, features, train, cfg)
    loss_after, acc_after = held_out_dpo(model, pool.images, pool.prompts, held, users, beta=beta)
    assert loss_after < loss_before - 0.1, (loss_before, loss_after)
    assert acc_after > 0.6, acc_after


def test_save_and_load_round_trip(tmp_path):
    model = build_tiny()
    perturb_adapter(model)
    encoder_state = {"head.weight": torch.ones(2, 2)}
    path = save_model(
        model, tiny_config(), tmp_path / "m", encoder_state=encoder_state, metrics={"note": "x"}
    )
    assert sorted(p.name for p in path.iterdir()) == [
        "adapter.safetensors",
        "backbone.safetensors",
        "encoder.safetensors",
        "ppd.json",
    ]
    loaded, cfg, meta = load_model(path)
    assert cfg == tiny_config().model_copy(
        update={"encoder_config": meta["model"]["encoder_config"]}
    )
    assert meta["model"]["encoder_config"]["weights_path"] == str(
        (path / "encoder.safetensors").resolve()
    )
    assert meta["metrics"] == {"note": "x"}
    gen = torch.Generator().manual_seed(0)
    x, t = torch.randn((2, 3, 8, 8), generator=gen), torch.tensor([5, 50])
    users = torch.randn((2, USER_DIM), generator=gen)
    with torch.no_grad():
        outs = []
        for m in (model, loaded):
            text = m.backbone.encode_prompts(["square", "circle"])
            outs.append(m.predict(x, t, text, m.adapter.tokens(users)))
    assert torch.equal(outs[0], outs[1])
    assert not any(p.requires_grad for p in loaded.parameters())


def test_learning_rate_warms_up_then_decays():
    cfg = PretrainConfig(steps=110, lr=1.0, warmup_steps=10, lr_schedule="cosine")
    assert learning_rate(cfg, 0) == 0.1 and learning_rate(cfg, 9) == 1.0
    assert learning_rate(cfg, 60) == pytest.approx(0.5, abs=0.02)
    assert learning_rate(cfg, 109) < 0.01
    assert learning_rate(cfg.model_copy(update={"lr_schedule": "constant"}), 109) == 1.0


def test_gradient_checkpointing_and_accumulation_keep_the_same_training():
    """Recomputing activations changes memory, not the result; accumulating three micro-batches
    per step trains on more pairs (another result) and logs pairs per second."""
    pool, rng = _pool()
    z = FeatureScale.fit(pool.images)(pool.images)
    pairs = label_pairs(pool, z, simulate_users(4, rng=rng), 6, rng=rng)
    features = rng.normal(size=(len(pool), USER_DIM)).astype(np.float32)
    cfg = DPOConfig(steps=2, batch_size=4, lr=1e-2, warmup_steps=0)
    plain, ckpt = build_tiny(), build_tiny()
    finetune_ppd(plain, pool.images, pool.prompts, features, pairs, cfg)
    finetune_ppd(
        ckpt,
        pool.images,
        pool.prompts,
        features,
        pairs,
        cfg.model_copy(update={"gradient_checkpointing": True}),
    )
    assert not ckpt.unet.is_gradient_checkpointing  # switched off again after training
    for (name, a), (_, b) in zip(
        plain.adapter.state_dict().items(), ckpt.adapter.state_dict().items()
    ):
        assert torch.allclose(a, b, atol=1e-6), name
    accumulated = build_tiny()
    result = finetune_ppd(
        accumulated,
        pool.images,
        pool.prompts,
        features,
        pairs,
        cfg.model_copy(update={"accumulation_steps": 3}),
    )
    assert result.history[-1]["pairs_per_s"] > 0
    assert not torch.equal(
        plain.adapter.state_dict()["projector.proj.weight"],
        accumulated.adapter.state_dict()["projector.proj.weight"],
    )
