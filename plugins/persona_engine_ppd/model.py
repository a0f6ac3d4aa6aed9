"""The PPD model: a diffusers UNet with a user branch on every cross-attention layer.

Personalized Preference Fine-tuning of Diffusion Models (Dang, Singhal, Sheynin, Ermon, Grover,
CVPR 2025, arXiv 2501.06655) conditions a text-to-image model on a user embedding ``u`` through an
IP-Adapter-style decoupled cross-attention (Ye et al., 2023) next to each text cross-attention:

    Z' = softmax(Q K^T / sqrt(d)) V  +  s * softmax(Q K'^T / sqrt(d)) V',   K' = U W'_k,  V' = U W'_v

where ``U`` are the user tokens (the pooled user embedding, projected). ``W'_v`` starts at zero,
so the untrained adapter leaves the base model exactly unchanged; only the adapter trains (the
UNet is frozen). A zero user embedding is the *null user* (user-embedding dropout in training),
which gives classifier-free guidance on the user at sampling time.

Precision: the backbone runs in the model's ``dtype`` (float32, float16 or bfloat16); the adapter's
parameters stay float32 whatever it is (the master weights: an update of a bfloat16 weight smaller
than its resolution, 2^-8 relative, would round to nothing) and are cast to the UNet's precision
inside each forward pass. :meth:`PPDModel.place` keeps that split.

nn.Modules only: no file I/O, no hard-coded device. Loading lives in :mod:`.checkpoint`; the
SDXL-style backbone (two text encoders, ``added_cond_kwargs``) in :mod:`.sdxl`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from persona_engine.errors import InvalidInputError
from persona_engine.extras import require

from .config import AdapterConfig, TinyUNetConfig
from .user_space import UserSpace


@dataclass(frozen=True)
class TextCondition:
    """The prompt condition of an SDXL-style UNet: the token states it cross-attends to (B, L, C)
    and its added embeddings (``added_cond_kwargs``: ``text_embeds`` (B, P), the pooled prompt,
    and ``time_ids`` (B, 6), the size and crop micro-conditioning). Other backbones condition on
    the token states alone, a plain tensor (see :data:`Text`)."""

    states: torch.Tensor
    added: dict[str, torch.Tensor]

    def __len__(self) -> int:
        return int(self.states.shape[0])

    def __getitem__(self, rows: slice) -> TextCondition:
        return TextCondition(self.states[rows], {k: v[rows] for k, v in self.added.items()})

    def detach(self) -> TextCondition:
        return TextCondition(self.states.detach(), {k: v.detach() for k, v in self.added.items()})


#: What a backbone's ``encode_prompts`` returns and :meth:`PPDModel.predict` takes.
Text = torch.Tensor | TextCondition


def cat_text(parts: Sequence[Text]) -> Text:
    """Prompt conditions stacked along the batch (``torch.cat`` for both kinds)."""
    if all(isinstance(p, torch.Tensor) for p in parts):
        return torch.cat(list(parts))  # type: ignore[arg-type]
    if not all(isinstance(p, TextCondition) for p in parts):
        raise TypeError("cannot stack plain prompt states with SDXL prompt conditions")
    conds: list[TextCondition] = list(parts)  # type: ignore[arg-type]
    return TextCondition(
        torch.cat([c.states for c in conds]),
        {k: torch.cat([c.added[k] for c in conds]) for k in conds[0].added},
    )


def unet_text_inputs(text: Text) -> dict[str, Any]:
    """The keyword arguments of ``UNet2DConditionModel.forward`` that carry the prompt."""
    if isinstance(text, TextCondition):
        return {"encoder_hidden_states": text.states, "added_cond_kwargs": text.added}
    return {"encoder_hidden_states": text}


def build_tiny_unet(cfg: TinyUNetConfig) -> nn.Module:
    """A small pixel-space ``UNet2DConditionModel``: two resolutions, cross-attention at the lower."""
    UNet2DConditionModel = require(
        "diffusers", "images", "PPD image generation"
    ).UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=cfg.image_size,
        in_channels=3,
        out_channels=3,
        layers_per_block=cfg.layers_per_block,
        block_out_channels=tuple(cfg.block_out_channels),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=cfg.cross_attention_dim,
        norm_num_groups=cfg.norm_num_groups,
        attention_head_dim=cfg.attention_head_dim,
    )


class PromptEmbedding(nn.Module):
    """The tiny backbone's text condition: one learned token per known prompt word."""

    def __init__(self, vocabulary: Sequence[str], dim: int):
        super().__init__()
        self.vocabulary = [w.lower() for w in vocabulary]
        self.embedding = nn.Embedding(len(self.vocabulary), dim)

    def token_ids(self, prompts: Sequence[str]) -> list[int]:
        ids = []
        for p in prompts:
            words = [w for w in re.findall(r"[a-z]+", str(p).lower()) if w in self.vocabulary]
            if not words:
                raise InvalidInputError(
                    f"prompt {p!r} names nothing this model knows; use one of {self.vocabulary}"
                )
            ids.append(self.vocabulary.index(words[0]))
        return ids

    def forward(self, prompts: Sequence[str]) -> torch.Tensor:
        ids = torch.tensor(self.token_ids(prompts), device=self.embedding.weight.device)
        return self.embedding(ids)[:, None, :]


class TinyBackbone(nn.Module):
    """Pixel-space backbone built in code: images are their own latents."""

    kind = "tiny"

    def __init__(self, cfg: TinyUNetConfig):
        super().__init__()
        self.cfg = cfg
        self.unet = build_tiny_unet(cfg)
        self.prompts = PromptEmbedding(cfg.vocabulary, cfg.cross_attention_dim)
        self.image_size = cfg.image_size

    @property
    def token_dim(self) -> int:
        return self.cfg.cross_attention_dim

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return (3, self.image_size, self.image_size)

    def encode_prompts(self, prompts: Sequence[str]) -> torch.Tensor:
        return self.prompts(prompts)

    def null_prompts(self, n: int) -> torch.Tensor | None:
        return None  # trained without prompt dropout: no guidance on the prompt

    def images_to_latents(
        self, images: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        return images

    def latents_to_images(self, latents: torch.Tensor) -> torch.Tensor:
        return latents.clamp(-1.0, 1.0)

    def place(self, device: Any, dtype: torch.dtype) -> None:
        """Move to ``device`` in ``dtype``."""
        self.to(device=device, dtype=dtype)


class PipelineBackbone(nn.Module):
    """The UNet, VAE and text encoder of a diffusers text-to-image pipeline (e.g. SD 1.5)."""

    kind = "pipeline"
    #: How the UNet takes the prompt: "sd", token states only; "sdxl" (:mod:`.sdxl`) adds
    #: ``added_cond_kwargs``.
    variant = "sd"
    # diffusers' UNet2DConditionModel and AutoencoderKL, transformers' CLIPTextModel: their
    # configuration attributes are untyped, so they are Any here (diffusers is an optional extra)
    unet: Any
    vae: Any
    text_encoder: Any

    def __init__(
        self,
        unet: Any,
        vae: Any,
        text_encoder: Any,
        tokenizer: Any,
        image_size: int,
    ):
        super().__init__()
        self.unet, self.vae, self.text_encoder = unet, vae, text_encoder
        self.tokenizer = tokenizer
        self.image_size = image_size
        self.vae_scale = 2 ** (len(vae.config.block_out_channels) - 1)
        self.scaling_factor = float(getattr(vae.config, "scaling_factor", 0.18215))

    @property
    def token_dim(self) -> int:
        return int(self.unet.config.cross_attention_dim)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        side = self.image_size // self.vae_scale
        return (int(self.unet.config.in_channels), side, side)

    def encode_prompts(self, prompts: Sequence[str]) -> torch.Tensor:
        ids = self.tokenizer(
            list(prompts),
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids.to(next(self.text_encoder.parameters()).device)
        return self.text_encoder(ids)[0]

    def null_prompts(self, n: int) -> torch.Tensor | None:
        return self.encode_prompts([""] * n)

    def images_to_latents(
        self, images: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        images = images.to(next(self.vae.parameters()).dtype)
        return self.vae.encode(images).latent_dist.sample(generator=generator) * self.scaling_factor

    def latents_to_images(self, latents: torch.Tensor) -> torch.Tensor:
        latents = latents.to(next(self.vae.parameters()).dtype)
        return self.vae.decode(latents / self.scaling_factor).sample.clamp(-1.0, 1.0)

    def place(self, device: Any, dtype: torch.dtype) -> None:
        """Move to ``device`` in ``dtype``."""
        self.to(device=device, dtype=dtype)


class UserProjector(nn.Module):
    """Pooled user embedding (B, D) -> user tokens (B, n_tokens, token_dim): linear + LayerNorm,
    as IP-Adapter's image projection. The zero embedding (null user) maps to learned tokens."""

    def __init__(self, user_dim: int, n_tokens: int, token_dim: int):
        super().__init__()
        self.n_tokens, self.token_dim = n_tokens, token_dim
        self.proj = nn.Linear(user_dim, n_tokens * token_dim)
        self.norm = nn.LayerNorm(token_dim)

    def forward(self, users: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(users).view(users.shape[0], self.n_tokens, self.token_dim))


class UserBranch(nn.Module):
    """W'_k and W'_v of one cross-attention layer. W'_v is zero-initialised."""

    def __init__(self, token_dim: int, inner_dim: int):
        super().__init__()
        self.to_k = nn.Linear(token_dim, inner_dim, bias=False)
        self.to_v = nn.Linear(token_dim, inner_dim, bias=False)
        nn.init.zeros_(self.to_v.weight)


class UserConditioning:
    """The user tokens of the current forward pass, read by every :class:`UserAttnProcessor`.
    ``None`` switches the branch off: the UNet is then exactly the base model."""

    def __init__(self) -> None:
        self.tokens: torch.Tensor | None = None


class UserAttnProcessor:
    """Wraps a layer's own attention processor and adds the user branch to its output.

    Adding after the output projection is the same as IP-Adapter's adding before it:
    ``to_out(a + s b) = to_out(a) + s W_out b`` (the bias is counted once).
    """

    def __init__(self, base: Any, branch: UserBranch, conditioning: UserConditioning, scale: float):
        self.base, self.branch, self.conditioning, self.scale = base, branch, conditioning, scale

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        out = self.base(
            attn,
            hidden_states,
            encoder_hidden_states=encoder_hidden_states,
            attention_mask=attention_mask,
            temb=temb,
            **kwargs,
        )
        tokens = self.conditioning.tokens
        if tokens is None:
            return out
        batch = hidden_states.shape[0]
        if tokens.shape[0] != batch:
            raise ValueError(f"user tokens for {tokens.shape[0]} samples, batch has {batch}")
        heads = attn.heads
        query = attn.to_q(hidden_states)
        head_dim = query.shape[-1] // heads
        query = query.view(batch, -1, heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        # the adapter's float32 (master) weights and tokens, cast to the UNet's precision here:
        # the gradient flows back through the cast into float32
        tokens = tokens.to(query.dtype)
        w_k, w_v = (
            self.branch.to_k.weight.to(query.dtype),
            self.branch.to_v.weight.to(query.dtype),
        )
        key = F.linear(tokens, w_k).view(batch, -1, heads, head_dim).transpose(1, 2)
        value = F.linear(tokens, w_v).view(batch, -1, heads, head_dim).transpose(1, 2)
        user = F.scaled_dot_product_attention(query, key, value)
        user = user.transpose(1, 2).reshape(batch, -1, heads * head_dim)
        user = F.linear(user, attn.to_out[0].weight)
        return out + self.scale * user / attn.rescale_output_factor


def cross_attention_layers(unet: nn.Module) -> dict[str, Any]:
    """Every cross-attention ``Attention`` module of a UNet (diffusers' ``Attention``, from an
    optional extra: Any to the type checker), by module name."""
    Attention = require(
        "diffusers.models.attention_processor", "images", "PPD image generation"
    ).Attention

    layers = {
        name: m
        for name, m in unet.named_modules()
        if isinstance(m, Attention) and m.is_cross_attention
    }
    for name, m in layers.items():
        if m.group_norm is not None or m.spatial_norm is not None:
            raise ValueError(
                f"cross-attention layer {name} normalises its input inside the processor; the user branch does not support it"
            )
    if not layers:
        raise ValueError("this UNet has no cross-attention layers to add a user branch to")
    return layers


class UserAdapter(nn.Module):
    """The trainable part of PPD: the user projector and one :class:`UserBranch` per layer."""

    def __init__(
        self, user_dim: int, token_dim: int, layer_dims: dict[str, int], cfg: AdapterConfig
    ):
        super().__init__()
        self.cfg = cfg
        self.user_dim = user_dim
        self.projector = UserProjector(user_dim, cfg.n_tokens, token_dim)
        self.layer_names = sorted(layer_dims)
        self.branches = nn.ModuleDict(
            {n.replace(".", "__"): UserBranch(token_dim, layer_dims[n]) for n in self.layer_names}
        )
        self.conditioning = UserConditioning()

    def branch(self, layer: str) -> UserBranch:
        """The user branch of the cross-attention layer named ``layer``."""
        branch = self.branches[layer.replace(".", "__")]
        assert isinstance(branch, UserBranch)
        return branch

    @classmethod
    def for_unet(
        cls, unet: nn.Module, user_dim: int, token_dim: int, cfg: AdapterConfig
    ) -> UserAdapter:
        layers = cross_attention_layers(unet)
        return cls(
            user_dim, token_dim, {n: int(m.to_q.out_features) for n, m in layers.items()}, cfg
        )

    def attach(self, unet: nn.Module) -> None:
        """Install the user processors (idempotent)."""
        layers = cross_attention_layers(unet)
        if sorted(layers) != self.layer_names:
            raise ValueError("this adapter was built for a UNet with other cross-attention layers")
        for name, attn in layers.items():
            if isinstance(attn.processor, UserAttnProcessor):
                continue
            attn.set_processor(
                UserAttnProcessor(
                    attn.processor, self.branch(name), self.conditioning, self.cfg.scale
                )
            )

    def detach(self, unet: nn.Module) -> None:
        """Restore the layers' own processors."""
        for attn in cross_attention_layers(unet).values():
            if isinstance(attn.processor, UserAttnProcessor):
                attn.set_processor(attn.processor.base)

    def tokens(
        self, users: torch.Tensor, *, dropout: float = 0.0, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """User tokens of embeddings (B, D); with ``dropout``, each row is zeroed (the null user)
        with that probability."""
        if users.ndim != 2 or users.shape[1] != self.user_dim:
            raise InvalidInputError(
                f"user embeddings must have shape (n, {self.user_dim}), got {tuple(users.shape)}"
            )
        if dropout > 0:
            keep = (
                torch.rand(users.shape[0], generator=generator, device="cpu").to(users.device)
                >= dropout
            )
            users = users * keep[:, None].to(users.dtype)
        # float32 embeddings from the store or the encoder, in the adapter's own precision
        return self.projector(users.to(self.projector.proj.weight.dtype))

    @contextmanager
    def conditioned(self, tokens: torch.Tensor | None) -> Iterator[None]:
        """Run the UNet with these user tokens (None: the base model)."""
        previous = self.conditioning.tokens
        self.conditioning.tokens = tokens
        try:
            yield
        finally:
            self.conditioning.tokens = previous


class PPDModel(nn.Module):
    """A backbone (frozen) plus its user adapter, with the scheduler's configuration."""

    def __init__(
        self,
        backbone: TinyBackbone | PipelineBackbone,
        adapter: UserAdapter,
        scheduler_config: dict[str, Any],
    ):
        super().__init__()
        self.backbone = backbone
        self.adapter = adapter
        self.scheduler_config = dict(scheduler_config)
        #: the population's user space when ``adapter.cfg.user_space == "population"`` (a numpy
        #: basis, not a parameter: fitted on the training users' pairs, see :mod:`.user_space`)
        self.user_space: UserSpace | None = None
        adapter.attach(backbone.unet)

    @property
    def unet(self) -> nn.Module:
        return self.backbone.unet

    @property
    def user_dim(self) -> int:
        return self.adapter.user_dim

    @property
    def dtype(self) -> torch.dtype:
        """The precision of the UNet (and of the latents and noise it is given)."""
        return next(self.backbone.unet.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.backbone.unet.parameters()).device

    def place(self, device: Any, dtype: torch.dtype) -> PPDModel:
        """Move to ``device``: the backbone in ``dtype`` (its own rules, e.g. an SDXL VAE that
        must decode in float32), the adapter in float32 whatever ``dtype`` is (master weights)."""
        self.backbone.place(device, dtype)
        self.adapter.to(device=device, dtype=torch.float32)
        return self

    def predict(
        self,
        latents: torch.Tensor,
        timesteps: torch.Tensor,
        text: Text,
        user_tokens: torch.Tensor | None,
    ) -> torch.Tensor:
        """The UNet's prediction (epsilon or v, per the noise schedule); ``user_tokens=None`` is the base (reference) model."""
        inputs = unet_text_inputs(text)
        if torch.is_grad_enabled() and getattr(self.unet, "is_gradient_checkpointing", False):
            # the backward pass recomputes the UNet's blocks and must see the same user tokens:
            # they stay set until the next call (training then calls release_tokens)
            self.adapter.conditioning.tokens = user_tokens
            return self.backbone.unet(latents, timesteps, **inputs).sample
        with self.adapter.conditioned(user_tokens):
            return self.backbone.unet(latents, timesteps, **inputs).sample

    def release_tokens(self) -> None:
        """Forget the user tokens a gradient-checkpointed forward pass left set."""
        self.adapter.conditioning.tokens = None

    def freeze_backbone(self) -> None:
        self.backbone.requires_grad_(False)
        self.adapter.requires_grad_(True)
