"""Training PPD: the image encoder, the base model, then the user adapter with Diffusion-DPO.

Diffusion training is step-based (a fresh timestep and noise every step), so instead of the
epoch/early-stopping loop of :func:`persona_engine.training.fit_module` every stage runs
:func:`.steps.run_steps` (seeded, resumable, with loss scaling when the UNet runs in float16).

1. :func:`train_image_encoder`: the ``tiny-image`` encoder, self-supervised (reconstruction of
   augmented views plus invariance).
2. :func:`pretrain_base`: the tiny UNet and its prompt embedding with the denoising loss.
3. :func:`finetune_ppd`: PPD (Dang et al., CVPR 2025): the frozen base is the reference, only the
   adapter trains, on many users' pairs at once, each pair conditioned on its labeller's embedding
   pooled from ``shots`` other pairs of theirs, with user-embedding dropout; loss: Diffusion-DPO
   (Wallace et al., CVPR 2024) with one timestep and one noise per pair (:mod:`.loss`). With
   ``adapter.user_space="population"`` the training users' space is fitted on their pairs first
   (:mod:`.user_space`) and every training embedding is projected onto it, as onboarding's are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from persona_engine.extras import require

from .config import DPOConfig, PretrainConfig, StepTrainingConfig
from .loss import denoising_loss, denoising_target, diffusion_dpo_loss, per_sample_mse
from .model import cat_text
from .steps import StepResult, learning_rate, run_steps
from .synthetic import PreferencePairs
from .user_space import UserSpace, population_space
from .users import pool_pairs

__all__ = [
    "StepResult",
    "dpo_batch_loss",
    "embedding_spectrum",
    "finetune_ppd",
    "finetune_ppd_on_pairs",
    "learning_rate",
    "pretrain_base",
    "run_steps",
    "train_image_encoder",
]


def _trainable(module: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {k: p for k, p in module.named_parameters() if p.requires_grad}


#: How the tiny image encoder can be trained (see :func:`train_image_encoder`).
ENCODER_OBJECTIVES = ("self-supervised", "reconstruction", "supervised-attributes")
#: Weights of VICReg's variance and covariance terms when the recipe adds them to the
#: self-supervised objective (``encoder_variance_covariance``; reconstruction and invariance weigh
#: 1): the paper's 25 and 1. Of 1/0.04, 5/0.2 and 25/1 on the bench's five pools, 25/1 gave the
#: highest effective rank of the pool embedding (median 17 of 32) and the lowest final
#: reconstruction loss; gold-free figures only. Off by default: over 5 seeds the 4-pair win rate
#: did not rise (BENCHMARKS.md, "Personalized images").
VARIANCE_WEIGHT = 25.0
COVARIANCE_WEIGHT = 1.0


def train_image_encoder(
    images: np.ndarray,
    *,
    image_size: int,
    dim: int,
    cfg: StepTrainingConfig,
    objective: str = "self-supervised",
    attributes: np.ndarray | None = None,
    variance_weight: float = 0.0,
    covariance_weight: float = 0.0,
    checkpoint_dir: str | Path | None = None,
    progress: bool = False,
) -> dict[str, torch.Tensor]:
    """Train the tiny image encoder on ``images`` (n, 3, S, S) in [0, 1]; returns its state dict
    (for ``TinyImageEncoderConfig.weights_path``). The ``objective``:

    - ``self-supervised`` (the default ``tiny-image``): an autoencoder that reconstructs each image
      from an augmented view (:func:`.image_net.augment`), ink-weighted
      (:func:`.loss.ink_weighted_reconstruction`), plus the invariance of two views' embeddings
      (:func:`.loss.invariance_loss`). Pixels only: no attribute, reward or preference. With
      ``variance_weight`` / ``covariance_weight`` above zero, plus VICReg's variance and
      covariance terms on both views' embeddings (:func:`.loss.variance_loss`,
      :func:`.loss.covariance_loss`), against dimensional collapse (the recipe's option
      ``encoder_variance_covariance`` uses :data:`VARIANCE_WEIGHT` and
      :data:`COVARIANCE_WEIGHT`).
    - ``reconstruction``: the plain autoencoder (unweighted, no augmentation), an ablation.
    - ``supervised-attributes`` (``tiny-image-supervised``): reconstruction plus a linear read-out
      of ``attributes`` (n, k), the images' drawing attributes. On the synthetic task those are
      what the gold rewards are computed from: an oracle, for comparison only.
    """
    from .image_net import TinyImageDecoder, TinyImageNet, augment
    from .loss import covariance_loss, ink_weighted_reconstruction, invariance_loss, variance_loss

    if objective not in ENCODER_OBJECTIVES:
        raise ValueError(f"unknown encoder objective {objective!r}; known: {ENCODER_OBJECTIVES}")
    if variance_weight < 0 or covariance_weight < 0:
        raise ValueError("the variance and covariance weights cannot be negative")
    regularised = variance_weight > 0 or covariance_weight > 0
    if regularised and objective != "self-supervised":
        raise ValueError("the variance and covariance terms belong to objective='self-supervised'")
    if (objective == "supervised-attributes") != (attributes is not None):
        raise ValueError(
            "attributes are given with, and only with, objective='supervised-attributes'"
        )
    torch.manual_seed(cfg.seed)
    encoder, decoder = (
        TinyImageNet(image_size, dim).to(cfg.device),
        TinyImageDecoder(image_size, dim).to(cfg.device),
    )
    data = torch.from_numpy(np.asarray(images, dtype=np.float32))
    module = torch.nn.ModuleDict({"encoder": encoder, "decoder": decoder})
    targets = None
    if attributes is not None:
        attrs = np.asarray(attributes, dtype=np.float32)
        targets = torch.from_numpy((attrs - attrs.mean(axis=0)) / (attrs.std(axis=0) + 1e-6))
        module["readout"] = torch.nn.Linear(dim, attrs.shape[1]).to(cfg.device)

    def step_loss(
        step: int, rng: np.random.Generator, gen: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, float]]:
        idx = rng.integers(0, len(data), cfg.batch_size)
        x = data[idx].to(cfg.device)
        if objective == "self-supervised":
            z_a, z_b = encoder(augment(x, gen)), encoder(augment(x, gen))
            recon = ink_weighted_reconstruction(decoder(z_a), x)
            inv = invariance_loss(z_a, z_b)
            logs = {"reconstruction": float(recon.detach()), "invariance": float(inv.detach())}
            if not regularised:
                return recon + inv, logs
            var = variance_loss(z_a) + variance_loss(z_b)
            cov = covariance_loss(z_a) + covariance_loss(z_b)
            logs.update(variance=float(var.detach()), covariance=float(cov.detach()))
            return recon + inv + variance_weight * var + covariance_weight * cov, logs
        z = encoder(x)
        recon = torch.nn.functional.mse_loss(decoder(z), x)
        if targets is None:
            return recon, {}
        attr = torch.nn.functional.mse_loss(module["readout"](z), targets[idx].to(cfg.device))
        return recon + attr, {
            "reconstruction": float(recon.detach()),
            "attributes": float(attr.detach()),
        }

    run_steps(
        _trainable(module),
        step_loss,
        cfg,
        checkpoint_dir=checkpoint_dir,
        desc=f"image encoder ({objective})",
        progress=progress,
    )
    return {k: v.detach().cpu() for k, v in encoder.state_dict().items()}


#: whitening keeps directions down to this share of the largest one's variance (shrinkage)
WHITEN_FLOOR = 1e-3


def whiten_head(state: dict[str, torch.Tensor], features: np.ndarray) -> dict[str, torch.Tensor]:
    """The encoder ``state`` with its embedding whitened on ``features`` (the embeddings of the
    images it was trained on): ZCA, ``A = V (L + eps)^-1/2 V^T`` with ``eps`` =
    :data:`WHITEN_FLOOR` x the largest eigenvalue, folded into the last linear layer
    (``W <- A W``, ``b <- A (b - mean)``), so the encoder plugin runs it unchanged. Pixels only:
    the mean and covariance of the embedding, nothing else."""
    x = np.asarray(features, dtype=np.float64)
    mean = x.mean(axis=0)
    lam, vec = np.linalg.eigh(np.cov(x, rowvar=False))
    lam = np.clip(lam, 0.0, None)
    a = (vec / np.sqrt(lam + WHITEN_FLOOR * lam.max())) @ vec.T
    out = dict(state)
    w, b = state["head.weight"].double().numpy(), state["head.bias"].double().numpy()
    out["head.weight"] = torch.from_numpy(a @ w).to(state["head.weight"].dtype)
    out["head.bias"] = torch.from_numpy(a @ (b - mean)).to(state["head.bias"].dtype)
    return out


def embedding_spectrum(features: np.ndarray) -> dict[str, float]:
    """How many directions an embedding (n, d) spreads over, from the eigenvalues ``l`` of its
    covariance: the effective rank ``(sum l)^2 / sum l^2`` (the participation ratio: d for
    isotropic, 1 when one direction holds everything) and the largest eigenvalue's share."""
    lam = np.clip(
        np.linalg.eigvalsh(np.cov(np.asarray(features, np.float64), rowvar=False)), 0, None
    )
    return {
        "effective_rank": float(lam.sum() ** 2 / (lam**2).sum()),
        "top_share": float(lam.max() / lam.sum()),
    }


def _noise_scheduler(model: Any) -> Any:
    DDPMScheduler = require("diffusers", "images", "PPD image generation").DDPMScheduler

    return DDPMScheduler.from_config(model.scheduler_config)


def pretrain_base(
    model: Any,
    images: np.ndarray,
    prompts: list[str],
    cfg: PretrainConfig,
    *,
    checkpoint_dir: str | Path | None = None,
    progress: bool = False,
) -> StepResult:
    """Pre-train the tiny backbone (UNet and prompt embedding) with the denoising loss on images
    (n, 3, S, S) in [0, 1] and their prompts. The adapter is not used."""
    if model.backbone.kind != "tiny":
        raise ValueError("pre-training is for the tiny backbone; a pipeline comes pre-trained")
    if len(images) != len(prompts) or len(images) == 0:
        raise ValueError("pre-training needs images and one prompt per image")
    sched = _noise_scheduler(model)
    device = torch.device(cfg.device)
    data = torch.from_numpy(np.asarray(images, dtype=np.float32))
    model.backbone.requires_grad_(True)
    model.adapter.requires_grad_(False)
    model.train()

    def step_loss(
        step: int, rng: np.random.Generator, gen: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, float]]:
        idx = rng.integers(0, len(data), cfg.batch_size)
        x0 = (data[idx] * 2.0 - 1.0).to(device, model.dtype)
        noise = torch.randn(x0.shape, generator=gen, dtype=model.dtype).to(device)
        t = torch.randint(0, sched.config.num_train_timesteps, (len(idx),), generator=gen).to(
            device
        )
        text = model.backbone.encode_prompts([prompts[i] for i in idx])
        pred = model.predict(sched.add_noise(x0, noise, t), t, text, None)
        return denoising_loss(pred, denoising_target(sched, x0, noise, t)), {}

    try:
        return run_steps(
            _trainable(model.backbone),
            step_loss,
            cfg,
            checkpoint_dir=checkpoint_dir,
            desc="base model",
            progress=progress,
        )
    finally:
        model.eval()
        model.backbone.requires_grad_(False)


def user_shot_embeddings(
    pairs: PreferencePairs,
    rows: np.ndarray,
    features: np.ndarray,
    shots: int,
    rng: np.random.Generator,
    *,
    normalize: bool,
    space: UserSpace | None = None,
) -> np.ndarray:
    """For each pair in ``rows``, its labeller's embedding pooled from ``shots`` *other* pairs of
    theirs (drawn afresh each time), from image features ``features`` of the pool (projected
    onto ``space`` when given)."""
    out = np.zeros((len(rows), features.shape[1]), dtype=np.float32)
    for j, r in enumerate(rows):
        own = pairs.user_rows[int(pairs.user[r])]
        others = own[own != r]
        if len(others) == 0:
            raise ValueError("every user needs at least two pairs to train PPD")
        pick = others[rng.choice(len(others), min(shots, len(others)), replace=False)]
        out[j] = pool_pairs(
            features[pairs.chosen[pick]],
            features[pairs.rejected[pick]],
            normalize=normalize,
            space=space,
        )
    return out


def _prepare_dpo(model: Any, cfg: DPOConfig) -> tuple[Any, float, int, int]:
    """Freeze the backbone, switch gradient checkpointing as asked; (scheduler, beta, t range)."""
    sched = _noise_scheduler(model)
    n_t = sched.config.num_train_timesteps
    t_low = int(cfg.timestep_range[0] * n_t)
    t_high = max(int(cfg.timestep_range[1] * n_t), t_low + 1)
    model.freeze_backbone()
    model.adapter.float()  # master weights: float32 whatever the UNet runs in (see .model)
    model.eval()  # no dropout/batch-statistics in the frozen UNet; the adapter has none either
    if cfg.gradient_checkpointing:
        model.unet.enable_gradient_checkpointing()
    return sched, cfg.beta_for(model.backbone.kind), t_low, t_high


def dpo_batch_loss(
    model: Any,
    sched: Any,
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    prompts: list[str],
    users: torch.Tensor,
    *,
    beta: float,
    t_range: tuple[int, int],
    user_dropout: float,
    gen: torch.Generator,
) -> tuple[torch.Tensor, dict[str, float]]:
    """User-conditioned Diffusion-DPO on one batch: pixels (B, 3, S, S) in [-1, 1] of the preferred
    and rejected images, their prompts and their labellers' embeddings (B, D). One timestep and
    one noise per pair; the reference is the backbone with the adapter off. Latents and noise are
    in the model's precision (``model.dtype``), the errors and the loss in float32."""
    b = len(prompts)
    device, dtype = users.device, model.dtype
    with torch.no_grad():
        latents = model.backbone.images_to_latents(
            torch.cat([chosen, rejected]).to(device, dtype), generator=gen
        ).to(dtype)
        noise = torch.randn((b, *latents.shape[1:]), generator=gen, dtype=dtype).to(device)
        t = torch.randint(t_range[0], t_range[1], (b,), generator=gen).to(device)
        noise2, t2 = torch.cat([noise, noise]), torch.cat([t, t])  # one t and one eps per pair
        noisy = sched.add_noise(latents, noise2, t2)
        target = denoising_target(sched, latents, noise2, t2)
        text = model.backbone.encode_prompts(prompts)
        text2 = cat_text([text, text])
        ref_err = per_sample_mse(model.predict(noisy, t2, text2, None), target)
    tokens = model.adapter.tokens(users, dropout=user_dropout, generator=gen)
    err = per_sample_mse(model.predict(noisy, t2, text2, torch.cat([tokens, tokens])), target)
    terms = diffusion_dpo_loss(err[:b], err[b:], ref_err[:b], ref_err[b:], beta)
    return terms.loss, {
        "implicit_acc": terms.implicit_accuracy,
        "model_mse": terms.model_mse,
        "ref_mse": terms.reference_mse,
    }


def finetune_ppd(
    model: Any,
    images: np.ndarray,
    prompts: list[str],
    features: np.ndarray,
    pairs: PreferencePairs,
    cfg: DPOConfig,
    *,
    checkpoint_dir: str | Path | None = None,
    progress: bool = False,
) -> StepResult:
    """Fine-tune the user adapter with user-conditioned Diffusion-DPO (see the module docstring).

    ``images`` (n, 3, S, S) in [0, 1] is the pool the pairs index into, ``prompts`` its prompts,
    ``features`` its image-encoder embeddings (n, D). For pairs on disk, streamed, see
    :func:`finetune_ppd_on_pairs`.
    """
    if len(pairs) == 0:
        raise ValueError("PPD fine-tuning needs preference pairs")
    if features.shape[1] != model.user_dim:
        raise ValueError(
            f"image features have width {features.shape[1]}, the adapter takes {model.user_dim}"
        )
    space = population_space(
        model,
        features[pairs.chosen] - features[pairs.rejected],
        [pairs.user_rows[u] for u in sorted(pairs.user_rows)],
        shots=cfg.shots,
        seed=cfg.seed,
    )
    sched, beta, t_low, t_high = _prepare_dpo(model, cfg)
    device = torch.device(cfg.device)
    data = torch.from_numpy(np.asarray(images, dtype=np.float32))
    adapter_cfg = model.adapter.cfg

    def step_loss(
        step: int, rng: np.random.Generator, gen: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, float]]:
        rows = rng.integers(0, len(pairs), cfg.batch_size)
        users = torch.from_numpy(
            user_shot_embeddings(
                pairs,
                rows,
                features,
                cfg.shots,
                rng,
                normalize=adapter_cfg.normalize_user,
                space=space,
            )
        ).to(device)
        return dpo_batch_loss(
            model,
            sched,
            data[pairs.chosen[rows]] * 2.0 - 1.0,
            data[pairs.rejected[rows]] * 2.0 - 1.0,
            [prompts[i] for i in pairs.chosen[rows]],
            users,
            beta=beta,
            t_range=(t_low, t_high),
            user_dropout=adapter_cfg.user_dropout,
            gen=gen,
        )

    return _run_dpo(model, step_loss, cfg, checkpoint_dir, "PPD (Diffusion-DPO)", progress)


def _run_dpo(
    model: Any,
    step_loss: Any,
    cfg: DPOConfig,
    checkpoint_dir: str | Path | None,
    desc: str,
    progress: bool,
) -> StepResult:
    """The adapter's DPO steps through the shared loop, then the model back to inference
    (frozen, gradient checkpointing off, no user tokens held). The adapter's parameters, hence
    AdamW's state, are float32 whatever the UNet's precision (:meth:`.model.PPDModel.place`)."""
    try:
        return run_steps(
            _trainable(model.adapter),
            step_loss,
            cfg,
            checkpoint_dir=checkpoint_dir,
            desc=desc,
            progress=progress,
            items_per_micro_batch=cfg.batch_size,
            # the adapter is float32 (master weights); a float16 UNet's gradients need scaling
            loss_scaling=model.dtype == torch.float16,
        )
    finally:
        model.requires_grad_(False)
        if cfg.gradient_checkpointing:
            model.unet.disable_gradient_checkpointing()
            model.release_tokens()


def finetune_ppd_on_pairs(
    model: Any,
    index: Any,
    diffs: np.ndarray,
    cfg: DPOConfig,
    *,
    checkpoint_dir: str | Path | None = None,
    progress: bool = False,
) -> StepResult:
    """PPD fine-tuning on pairs streamed from disk (:mod:`.pairs_data`): ``index`` a
    :class:`~.pairs_data.PairIndex`, ``diffs`` each pair's encoder feature difference (n, D).
    Step ``s`` reads the pairs at positions ``s * batch * accumulation`` onward of the seeded order,
    so a resumed run reads what the uninterrupted one would have."""
    from .pairs_data import StreamingPairs, pooled_user_embeddings

    if diffs.shape != (len(index), model.user_dim):
        raise ValueError(
            f"pair features have shape {diffs.shape}, expected ({len(index)}, {model.user_dim})"
        )
    space = population_space(
        model,
        diffs,
        [index.user_rows[u] for u in sorted(index.user_rows)],
        shots=cfg.shots,
        seed=cfg.seed,
    )
    sched, beta, t_low, t_high = _prepare_dpo(model, cfg)
    device = torch.device(cfg.device)
    adapter_cfg = model.adapter.cfg
    per_step = cfg.batch_size * cfg.accumulation_steps
    stream: dict[str, Any] = {}

    def step_loss(
        step: int, rng: np.random.Generator, gen: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, float]]:
        if "it" not in stream:  # opened at the first step run, resumed or not
            dataset = StreamingPairs(
                index, model.backbone.image_size, seed=cfg.seed, start=step * per_step
            )
            stream["it"] = iter(dataset)
        items = [next(stream["it"]) for _ in range(cfg.batch_size)]
        rows = np.array([it["index"] for it in items])
        users = torch.from_numpy(
            pooled_user_embeddings(
                index,
                diffs,
                rows,
                cfg.shots,
                rng,
                normalize=adapter_cfg.normalize_user,
                space=space,
            )
        ).to(device)
        return dpo_batch_loss(
            model,
            sched,
            torch.stack([it["chosen"] for it in items]) * 2.0 - 1.0,
            torch.stack([it["rejected"] for it in items]) * 2.0 - 1.0,
            [it["prompt"] for it in items],
            users,
            beta=beta,
            t_range=(t_low, t_high),
            user_dropout=adapter_cfg.user_dropout,
            gen=gen,
        )

    return _run_dpo(model, step_loss, cfg, checkpoint_dir, "PPD on pairs (Diffusion-DPO)", progress)
