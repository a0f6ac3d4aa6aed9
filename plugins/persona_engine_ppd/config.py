"""Options of the ``ppd`` generator: the backbone, the user adapter, the two training stages and
sampling. Every model is a pydantic config with ``extra="forbid"``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from persona_engine.config import PluginConfig

from .precision import DTypeName
from .synthetic import SHAPES

#: Diffusion-DPO's beta for Stable Diffusion latents (4x64x64, mean-reduced MSE): Wallace et al.,
#: launchers/sd15.sh in SalesforceAIResearch/DiffusionDPO.
BETA_LATENT_SD = 5000.0
#: Our default for the tiny pixel-space v-prediction UNet (16x16x3, mean-reduced MSE), from a sweep
#: on the synthetic task (BENCHMARKS.md, "Personalized images"): at 1000 the adapter stops moving
#: after tiny changes, at 50 guidance on the user breaks the images.
BETA_TINY_PIXEL = 100.0


class TinyUNetConfig(PluginConfig):
    """A small pixel-space ``diffusers.UNet2DConditionModel`` built in code (0.25M parameters at the
    defaults; [32, 64] channels give 1M), with a learned embedding per prompt word as its text
    condition."""

    image_size: int = Field(
        16, ge=8, le=64, description="Side of the square RGB images, in pixels (a multiple of 4)."
    )
    block_out_channels: list[int] = Field(
        default_factory=lambda: [16, 32], description="Channels of the two UNet resolutions."
    )
    layers_per_block: int = Field(1, ge=1, description="ResNet layers per UNet block.")
    attention_head_dim: int = Field(8, ge=1, description="Channels per attention head.")
    cross_attention_dim: int = Field(32, ge=4, description="Width of the text (and user) tokens.")
    norm_num_groups: int = Field(8, ge=1, description="GroupNorm groups.")
    vocabulary: list[str] = Field(
        default_factory=lambda: list(SHAPES), description="Prompt words the text condition knows."
    )

    @field_validator("image_size")
    @classmethod
    def _multiple_of_4(cls, v: int) -> int:
        if v % 4:
            raise ValueError("image_size must be a multiple of 4")
        return v

    @field_validator("block_out_channels")
    @classmethod
    def _two_levels(cls, v: list[int]) -> list[int]:
        if len(v) != 2 or min(v) < 4:
            raise ValueError("block_out_channels needs two widths of at least 4")
        return v


class AdapterConfig(PluginConfig):
    """The user branch added to every cross-attention layer (IP-Adapter style, decoupled K'/V')."""

    n_tokens: int = Field(
        4, ge=1, le=64, description="User tokens the pooled user embedding is projected to."
    )
    scale: float = Field(
        1.0, ge=0, description="Weight of the user branch's output (IP-Adapter's scale)."
    )
    user_dropout: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="Share of training pairs whose user embedding is zeroed (the null user, for classifier-free guidance on the user).",
    )
    normalize_user: bool = Field(
        True, description="Scale each pooled user embedding to unit length."
    )
    user_space: Literal["encoder", "population"] = Field(
        "encoder",
        description="Where user embeddings live. 'encoder': the mean of the pairs' encoder feature differences, in the whole embedding (PPD's pooling). 'population': that mean projected onto the subspace the training users span (fitted on their pairs before Diffusion-DPO, its dimension chosen by cross-validated agreement on those pairs; saved with the model), in training and at onboarding alike (user_space.py).",
    )


class ModelConfig(PluginConfig):
    """What a PPD model is made of."""

    backbone: Literal["tiny", "pipeline"] = Field(
        "tiny",
        description="'tiny': a small pixel UNet trained in code; 'pipeline': the UNet, VAE and text encoder of a local diffusers pipeline.",
    )
    pipeline_path: str = Field(
        "",
        description="Local directory of a diffusers text-to-image pipeline (backbone='pipeline'): SD 1.5-style (one text encoder) or SDXL-style (two text encoders, a UNet with addition_embed_type='text_time'), told apart by the UNet's config.",
    )
    tiny: TinyUNetConfig = Field(
        default_factory=TinyUNetConfig, description="The tiny backbone (backbone='tiny')."
    )
    adapter: AdapterConfig = Field(default_factory=AdapterConfig, description="The user adapter.")
    encoder: str = Field(
        "tiny-image", description="Image encoder plugin that embeds the user's pairs."
    )
    encoder_config: dict = Field(default_factory=dict, description="Options of that encoder.")
    num_train_timesteps: int = Field(
        1000, ge=10, description="Diffusion steps of the noise schedule (tiny backbone)."
    )
    beta_schedule: str = Field(
        "squaredcos_cap_v2",
        description="Noise schedule of the tiny backbone (a diffusers beta_schedule).",
    )
    prediction_type: Literal["epsilon", "v_prediction"] = Field(
        "v_prediction",
        description="What the tiny UNet predicts. v (Salimans & Ho, 2022) keeps a few-hundred-step pixel model sampling cleanly from pure noise, where epsilon-prediction fails; pipelines use their scheduler's own type.",
    )
    dtype: DTypeName = Field(
        "float32",
        description="Precision of the backbone when the model is built or trained: float32, float16, bfloat16, or 'auto' (bfloat16 on a CUDA device that supports it, else float32). The adapter's weights (and AdamW's state) stay float32 master weights, cast in the forward pass; float16 training scales the loss. The DPO loss is computed in float32 whatever this is.",
    )


class StepTrainingConfig(PluginConfig):
    """Options shared by the step-based trainers (base pre-training and PPD fine-tuning)."""

    steps: int = Field(1000, ge=1, description="Optimisation steps.")
    batch_size: int = Field(64, ge=1, description="Images (pre-training) or pairs (PPD) per step.")
    lr: float = Field(1e-3, gt=0, description="AdamW learning rate.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW decoupled weight decay.")
    warmup_steps: int = Field(50, ge=0, description="Linear learning-rate warm-up.")
    lr_schedule: Literal["constant", "cosine"] = Field(
        "constant",
        description="After warm-up: a constant rate, or a cosine decay to zero at the last step.",
    )
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    seed: int = Field(
        0,
        description="Seed of initialisation, batches, timesteps and noise (per step, so a resumed run repeats an uninterrupted one).",
    )
    checkpoint_every: int = Field(
        200,
        ge=1,
        description="Save a resumable checkpoint every this many steps (when a checkpoint directory is given).",
    )
    device: str = Field("cpu", description="torch device, e.g. 'cpu' or 'cuda'.")
    accumulation_steps: int = Field(
        1,
        ge=1,
        description="Micro-batches of batch_size whose gradients are summed before each optimiser step: the effective batch is batch_size x accumulation_steps (PPD trains at 768 pairs per step).",
    )
    gradient_checkpointing: bool = Field(
        False,
        description="Recompute the UNet's activations in the backward pass instead of storing them (less memory, about a third more time; diffusers' enable_gradient_checkpointing).",
    )


class PretrainConfig(StepTrainingConfig):
    """Base-model pre-training with the plain denoising loss (tiny backbone only)."""


class DPOConfig(StepTrainingConfig):
    """PPD fine-tuning: user-conditioned Diffusion-DPO; only the adapter trains."""

    steps: int = Field(600, ge=1, description="Optimisation steps.")
    batch_size: int = Field(32, ge=1, description="Preference pairs per step.")
    lr: float = Field(
        1e-5,
        gt=0,
        description="AdamW learning rate of the adapter (PPD: 1e-5 at 768 pairs per step on Stable Cascade; the tiny recipe uses 1e-2).",
    )
    beta: float | None = Field(
        None,
        gt=0,
        description=f"Diffusion-DPO beta (KL strength). None: {BETA_TINY_PIXEL:g} for the tiny pixel backbone, {BETA_LATENT_SD:g} for latent pipelines (Wallace et al.). Too large a beta saturates the sigmoid early and blows up the per-image losses.",
    )
    shots: int = Field(
        4,
        ge=1,
        description="Pairs of the same user pooled into the user embedding of each training pair (PPD uses 4).",
    )
    timestep_range: tuple[float, float] = Field(
        (0.0, 1.0),
        description="Share of the diffusion steps the DPO timesteps are drawn from, uniformly (Diffusion-DPO: all of them). A narrower range is another weighting w(lambda_t) of the same bound.",
    )

    @field_validator("timestep_range")
    @classmethod
    def _range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0.0 <= v[0] < v[1] <= 1.0:
            raise ValueError("timestep_range must be (low, high) with 0 <= low < high <= 1")
        return v

    def beta_for(self, backbone: str) -> float:
        if self.beta is not None:
            return self.beta
        return BETA_TINY_PIXEL if backbone == "tiny" else BETA_LATENT_SD


class PPDGeneratorConfig(PluginConfig):
    """Options of the ``ppd`` generator."""

    model: str = Field(
        "",
        description="A PPD model id in the store (ppd-v1), or a model directory; empty: the newest ppd model in the store.",
    )
    steps: int = Field(25, ge=1, le=1000, description="DDIM sampling steps.")
    guidance_scale: float = Field(
        3.0,
        ge=0,
        description="Classifier-free guidance on the user: eps_null + g (eps_user - eps_null); 1 is plain conditioning.",
    )
    text_guidance_scale: float = Field(
        7.5, ge=0, description="Classifier-free guidance on the prompt (pipeline backbones only)."
    )
    n_images: int = Field(4, ge=1, le=256, description="Images per request.")
    seed: int = Field(0, description="Seed of the initial noise.")
    device: str = Field("cpu", description="torch device.")
    dtype: DTypeName = Field(
        "float32",
        description="Precision the model is loaded and sampled in: float32, float16, bfloat16, or 'auto' (bfloat16 on a CUDA device that supports it, else float32). Images come back in float32.",
    )


class SampleOptions(PluginConfig):
    """Per-request options of ``Engine.generate(user, prompt, generator="ppd", **options)``."""

    n_images: int | None = Field(
        None, ge=1, le=256, description="Images to return (default: the generator's)."
    )
    seed: int | None = Field(
        None, description="Seed of the initial noise (default: the generator's)."
    )
    steps: int | None = Field(
        None, ge=1, le=1000, description="DDIM steps (default: the generator's)."
    )
    guidance_scale: float | None = Field(
        None, ge=0, description="Guidance on the user (default: the generator's)."
    )
    interpolate_with: str | None = Field(
        None, description="Another user: condition on (1 - alpha) u_user + alpha u_other."
    )
    alpha: float = Field(0.5, ge=0, le=1, description="Interpolation weight of interpolate_with.")
    user_vector: list[float] | None = Field(
        None, description="Condition on this user embedding instead of a stored profile."
    )
    personalized: bool = Field(
        True, description="False: sample the base model without the adapter."
    )
    output: Literal["pil", "array"] = Field(
        "pil", description="'pil' images, or uint8 arrays (H, W, 3)."
    )
