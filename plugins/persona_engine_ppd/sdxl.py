"""The SDXL-style backbone: two CLIP text encoders and a UNet with added text-and-time embeddings.

Stable Diffusion XL (Podell et al., 2023) conditions its UNet (``addition_embed_type="text_time"``)
on three things per image:

- token states ``c = [h_1 ; h_2]`` (B, L, C1 + C2): the penultimate hidden states of both text
  encoders, concatenated along the channels (the cross-attention context; the user branch sits
  beside it exactly as in SD 1.5);
- ``text_embeds`` (B, P): the pooled, projected output of the second encoder;
- ``time_ids`` (B, 6): the micro-conditioning ``(orig_h, orig_w, crop_top, crop_left, h, w)``;
  here the image is the training or sampling size, uncropped.

The last two travel as the UNet's ``added_cond_kwargs`` (:class:`~.model.TextCondition`). The
unconditional prompt is all zeros when the pipeline says so (``force_zeros_for_empty_prompt``, as
SDXL base), else the encoding of ``""``. In float16 a VAE whose config asks for it
(``force_upcast``: SDXL's VAE overflows in float16) is kept in float32.

This module reads the parts of a loaded diffusers pipeline; loading lives in :mod:`.checkpoint`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from persona_engine.errors import PersonaEngineError

from .model import PipelineBackbone, TextCondition

#: ``time_ids`` holds (original size, crop top-left, target size): six numbers.
TIME_IDS = 6


def is_sdxl_unet(unet: Any) -> bool:
    """Whether a diffusers UNet takes SDXL's added text-and-time conditioning."""
    return getattr(unet.config, "addition_embed_type", None) == "text_time"


class SDXLBackbone(PipelineBackbone):
    """The UNet, VAE, both text encoders and tokenizers of an SDXL-style diffusers pipeline."""

    variant = "sdxl"
    text_encoder_2: Any

    def __init__(
        self,
        unet: Any,
        vae: Any,
        text_encoder: Any,
        tokenizer: Any,
        text_encoder_2: Any,
        tokenizer_2: Any,
        image_size: int,
        *,
        force_zeros_for_empty_prompt: bool = True,
    ):
        super().__init__(unet, vae, text_encoder, tokenizer, image_size)
        if (
            text_encoder is None
            or tokenizer is None
            or text_encoder_2 is None
            or tokenizer_2 is None
        ):
            raise PersonaEngineError(
                "an SDXL-style UNet (addition_embed_type='text_time') needs both text encoders and both tokenizers (text_encoder, tokenizer, text_encoder_2, tokenizer_2); this pipeline lacks one"
            )
        self.text_encoder_2 = text_encoder_2
        self.tokenizer_2 = tokenizer_2
        self.force_zeros_for_empty_prompt = force_zeros_for_empty_prompt
        states = int(text_encoder.config.hidden_size) + int(text_encoder_2.config.hidden_size)
        if states != int(unet.config.cross_attention_dim):
            raise PersonaEngineError(
                f"the two text encoders give {states} channels, the UNet cross-attends to {unet.config.cross_attention_dim}"
            )
        added = int(unet.config.addition_time_embed_dim) * TIME_IDS + int(
            text_encoder_2.config.projection_dim
        )
        expected = int(unet.add_embedding.linear_1.in_features)
        if added != expected:
            raise PersonaEngineError(
                f"the UNet's added embedding takes {expected} numbers; the second encoder's projection ({text_encoder_2.config.projection_dim}) and {TIME_IDS} time ids give {added}"
            )

    def place(self, device: Any, dtype: torch.dtype) -> None:
        self.to(device=device, dtype=dtype)
        if dtype == torch.float16 and getattr(self.vae.config, "force_upcast", False):
            self.vae.to(dtype=torch.float32)

    def time_ids(self, n: int) -> torch.Tensor:
        """(n, 6): the image at its full size, uncropped."""
        s = float(self.image_size)
        row = torch.tensor([[s, s, 0.0, 0.0, s, s]], dtype=self._unet_dtype)
        return row.to(self._unet_device).repeat(n, 1)

    @property
    def _unet_dtype(self) -> torch.dtype:
        dtype: torch.dtype = next(self.unet.parameters()).dtype
        return dtype

    @property
    def _unet_device(self) -> torch.device:
        device: torch.device = next(self.unet.parameters()).device
        return device

    def _encode(self, tokenizer: Any, encoder: Any, prompts: list[str]) -> Any:
        ids = tokenizer(
            prompts,
            padding="max_length",
            max_length=tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids.to(next(encoder.parameters()).device)
        return encoder(ids, output_hidden_states=True)

    def encode_prompts(self, prompts: Sequence[str]) -> TextCondition:  # type: ignore[override]
        prompts = list(prompts)
        first = self._encode(self.tokenizer, self.text_encoder, prompts)
        second = self._encode(self.tokenizer_2, self.text_encoder_2, prompts)
        pooled = second[0]
        if pooled.ndim != 2:
            raise PersonaEngineError(
                "the second text encoder must return a pooled, projected embedding (a CLIPTextModelWithProjection, as in SDXL)"
            )
        states = torch.cat([first.hidden_states[-2], second.hidden_states[-2]], dim=-1)
        dtype, device = self._unet_dtype, self._unet_device
        return TextCondition(
            states.to(device, dtype),
            {"text_embeds": pooled.to(device, dtype), "time_ids": self.time_ids(len(prompts))},
        )

    def null_prompts(self, n: int) -> TextCondition:  # type: ignore[override]
        empty = self.encode_prompts([""] * n)
        if not self.force_zeros_for_empty_prompt:
            return empty
        return TextCondition(
            torch.zeros_like(empty.states),
            {
                "text_embeds": torch.zeros_like(empty.added["text_embeds"]),
                "time_ids": empty.added["time_ids"],
            },
        )
