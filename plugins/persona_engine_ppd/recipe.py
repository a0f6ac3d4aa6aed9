"""The default PPD model, trained in code on the synthetic image task (:mod:`.synthetic`).

1. Render a pool of shape images; simulate many training users with random preference directions
   (none in the held-out octant, ``held_out_octant``) and label pairs of same-prompt pool images
   for each (Bradley-Terry noise).
2. Train the image encoder on the pool (by default self-supervised, ``tiny-image``: it never sees
   an attribute or a preference; see ``encoder_objective``) and embed the pool.
3. Pre-train the tiny UNet on the pool with the plain denoising loss (the base model).
4. Fine-tune the user adapter with user-conditioned Diffusion-DPO across all training users (with
   ``model.adapter.user_space="population"``, inside the subspace their pairs span: the trainer
   fits it first, :mod:`.user_space`).
5. Save the model directory (safetensors + ``ppd.json``).

Every stage checkpoints under ``work_dir`` when one is given, so an interrupted run resumes and a
finished one reloads in seconds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from persona_engine.config import PluginConfig

from .config import AdapterConfig, DPOConfig, ModelConfig, PretrainConfig, StepTrainingConfig
from .synthetic import (
    FeatureScale,
    PreferencePairs,
    ShapeImages,
    SimulatedUser,
    label_pairs,
    render_shapes,
    simulate_users,
)

#: The encoder plugin that runs a tiny image network trained with each objective.
ENCODER_NAMES = {
    "self-supervised": "tiny-image",
    "reconstruction": "tiny-image",
    "supervised-attributes": "tiny-image-supervised",
}


class SyntheticRecipeConfig(PluginConfig):
    """Sizes of the synthetic task and of each training stage."""

    seed: int = Field(0, description="Seed of the task (pool, users, labels) and of every stage.")
    pool_size: int = Field(
        8000,
        ge=100,
        description="Rendered images: pre-training data, and the images users compare.",
    )
    train_users: int = Field(
        300, ge=2, description="Simulated users whose pairs train the adapter."
    )
    pairs_per_user: int = Field(24, ge=5, description="Labelled pairs per training user.")
    label_tau: float = Field(
        4.0, gt=0, description="Inverse temperature of the users' Bradley-Terry label noise."
    )
    encoder_dim: int = Field(32, ge=2, description="Width of the tiny-image encoder's embedding.")
    encoder_objective: Literal["self-supervised", "reconstruction", "supervised-attributes"] = (
        Field(
            "self-supervised",
            description="How the tiny image encoder learns. 'self-supervised' (encoder 'tiny-image'): reconstruction of augmented views plus augmentation invariance, pixels only. 'reconstruction': a plain autoencoder (ablation). 'supervised-attributes' (encoder 'tiny-image-supervised'): plus a read-out of the hue, value and position the gold rewards are computed from, an oracle kept for comparison.",
        )
    )
    encoder_variance_covariance: bool = Field(
        False,
        description="With encoder_objective 'self-supervised', add VICReg's variance and "
        "covariance terms (Bardes et al. 2022) on both views' embeddings, weights 25 and 1 "
        "(trainer.VARIANCE_WEIGHT, COVARIANCE_WEIGHT). Without them the embedding can collapse "
        "onto one direction and the autoencoder stall; with them it spreads (effective rank "
        "14-22 of 32), but the 4-pair win rate did not rise over 5 seeds (BENCHMARKS.md), so "
        "the default stays reconstruction and invariance only.",
    )
    encoder_whiten: bool = Field(
        True,
        description="Whiten the encoder's embedding on the pool (folded into its last layer): a "
        "self-supervised encoder's embedding can collapse onto a few directions (effective rank "
        "near 1 of 32), and a user embedding from 4 pairs then cannot point anywhere else. False: "
        "the encoder as trained.",
    )
    held_out_octant: tuple[int, int, int] | None = Field(
        (1, -1, 1),
        description="Sign pattern over (redness, brightness, x_position) of an octant of preference directions no training user occupies (default: red, dark, right), so users from it test generalization; None: training users cover the whole sphere.",
    )
    model: ModelConfig = Field(
        default_factory=lambda: ModelConfig(adapter=AdapterConfig(user_space="population")),
        description="The PPD model (tiny backbone). Its users live in the population's space "
        "(adapter.user_space='population', the default of this recipe since it met the 4-pair "
        "target over 5 seeds; 'encoder' is PPD's own pooling, BENCHMARKS.md).",
    )
    encoder_training: StepTrainingConfig = Field(
        default_factory=lambda: StepTrainingConfig(
            steps=300, batch_size=128, lr=1e-2, warmup_steps=10
        ),
        description="Training of the tiny-image encoder (see encoder_objective).",
    )
    pretrain: PretrainConfig = Field(
        default_factory=lambda: PretrainConfig(steps=600, batch_size=64, lr=3e-3, warmup_steps=20),
        description="Base-model pre-training.",
    )
    dpo: DPOConfig = Field(
        default_factory=lambda: DPOConfig(
            steps=300,
            batch_size=32,
            lr=1e-2,
            warmup_steps=20,
            lr_schedule="cosine",
            timestep_range=(0.5, 1.0),
        ),
        description="PPD fine-tuning (beta: the tiny-pixel default).",
    )


@dataclass
class SyntheticTask:
    pool: ShapeImages
    scale: FeatureScale
    z: np.ndarray  # standardised gold features of the pool
    users: list[SimulatedUser]
    pairs: PreferencePairs


@dataclass
class SyntheticRun:
    task: SyntheticTask
    model: Any
    model_config: ModelConfig
    encoder_state: dict[str, Any]
    features: np.ndarray  # the pool's encoder embeddings
    directory: Path | None
    seconds: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)


def build_task(cfg: SyntheticRecipeConfig) -> SyntheticTask:
    rng = np.random.default_rng(cfg.seed)
    pool = render_shapes(cfg.pool_size, size=cfg.model.tiny.image_size, rng=rng)
    scale = FeatureScale.fit(pool.images)
    z = scale(pool.images)
    users = simulate_users(
        cfg.train_users, rng=rng, prefix="train", exclude_octant=cfg.held_out_octant
    )
    pairs = label_pairs(pool, z, users, cfg.pairs_per_user, rng=rng, tau=cfg.label_tau)
    return SyntheticTask(pool, scale, z, users, pairs)


def embed_with(
    encoder_state: dict[str, Any], images: np.ndarray, image_size: int, dim: int
) -> np.ndarray:
    """Embed images with a trained tiny-image network (the same network the encoder plugin runs)."""
    import torch

    from .image_net import TinyImageNet

    net = TinyImageNet(image_size, dim)
    net.load_state_dict(encoder_state)
    net.eval()
    with torch.no_grad():
        return np.concatenate(
            [net(torch.from_numpy(images[i : i + 512])).numpy() for i in range(0, len(images), 512)]
        )


def train_synthetic(
    cfg: SyntheticRecipeConfig,
    directory: str | Path | None = None,
    *,
    work_dir: str | Path | None = None,
    progress: bool = False,
) -> SyntheticRun:
    """Run the recipe (see the module docstring); save the model to ``directory`` when given."""
    from .checkpoint import build_model, save_model
    from .trainer import (
        COVARIANCE_WEIGHT,
        VARIANCE_WEIGHT,
        embedding_spectrum,
        finetune_ppd,
        pretrain_base,
        train_image_encoder,
        whiten_head,
    )

    if cfg.model.backbone != "tiny" or cfg.model.encoder not in ENCODER_NAMES.values():
        raise ValueError("the synthetic recipe trains the tiny backbone with a tiny image encoder")
    work = Path(work_dir) if work_dir is not None else None
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    task = build_task(cfg)
    size = cfg.model.tiny.image_size
    seconds["task"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    regularised = cfg.encoder_variance_covariance and cfg.encoder_objective == "self-supervised"
    enc_state = train_image_encoder(
        task.pool.images,
        image_size=size,
        dim=cfg.encoder_dim,
        cfg=cfg.encoder_training,
        objective=cfg.encoder_objective,
        attributes=(
            task.pool.attributes if cfg.encoder_objective == "supervised-attributes" else None
        ),
        variance_weight=VARIANCE_WEIGHT if regularised else 0.0,
        covariance_weight=COVARIANCE_WEIGHT if regularised else 0.0,
        checkpoint_dir=None if work is None else work / "encoder",
        progress=progress,
    )
    features = embed_with(enc_state, task.pool.images, size, cfg.encoder_dim)
    spectrum = embedding_spectrum(features)  # as trained, before any whitening
    if cfg.encoder_whiten:
        enc_state = whiten_head(enc_state, features)
        features = embed_with(enc_state, task.pool.images, size, cfg.encoder_dim)
    seconds["encoder"] = time.perf_counter() - t0

    model_cfg = cfg.model.model_copy(
        update={
            "encoder": ENCODER_NAMES[cfg.encoder_objective],
            "encoder_config": {"image_size": size, "dim": cfg.encoder_dim},
        }
    )
    model = build_model(model_cfg, cfg.encoder_dim, seed=cfg.seed)
    t0 = time.perf_counter()
    pre = pretrain_base(
        model,
        task.pool.images,
        task.pool.prompts,
        cfg.pretrain,
        checkpoint_dir=None if work is None else work / "base",
        progress=progress,
    )
    seconds["pretrain"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    dpo = finetune_ppd(
        model,
        task.pool.images,
        task.pool.prompts,
        features,
        task.pairs,
        cfg.dpo,
        checkpoint_dir=None if work is None else work / "dpo",
        progress=progress,
    )
    seconds["dpo"] = time.perf_counter() - t0
    metrics = {
        "pretrain_loss": pre.final("loss"),
        "dpo_loss": dpo.final("loss"),
        "dpo_implicit_accuracy": dpo.final("implicit_acc"),
        "dpo_beta": cfg.dpo.beta_for("tiny"),
        "encoder": model_cfg.encoder,
        "encoder_objective": cfg.encoder_objective,
        "encoder_variance_covariance": (
            [VARIANCE_WEIGHT, COVARIANCE_WEIGHT] if regularised else None
        ),
        "encoder_whiten": cfg.encoder_whiten,
        "encoder_spectrum": spectrum,
        "held_out_octant": None if cfg.held_out_octant is None else list(cfg.held_out_octant),
        "train_users": cfg.train_users,
        "train_pairs": len(task.pairs),
        "unet_parameters": sum(p.numel() for p in model.backbone.unet.parameters()),
        "adapter_parameters": sum(p.numel() for p in model.adapter.parameters()),
        "user_space": model_cfg.adapter.user_space,
        "user_space_rank": None if model.user_space is None else model.user_space.rank,
    }
    out = None
    if directory is not None:
        out = save_model(model, model_cfg, directory, encoder_state=enc_state, metrics=metrics)
    return SyntheticRun(
        task,
        model,
        model_cfg,
        enc_state,
        features,
        out,
        seconds,
        {**metrics, "dpo_history": dpo.history},
    )
