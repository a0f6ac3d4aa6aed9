"""Sampling a PPD model: DDIM (eta = 0) with classifier-free guidance on the user.

With the null user ``0`` (what user-embedding dropout trained), the guided noise prediction is

    eps = eps(x_t, c, 0) + g (eps(x_t, c, u) - eps(x_t, c, 0))

(Ho & Salimans, 2022, applied to the user condition as PPD does); for pipelines with a text
encoder (SD 1.5- or SDXL-style: the prompt condition is whatever the backbone's ``encode_prompts``
gives, see :class:`~.model.TextCondition`), guidance on the prompt is added the usual way,
``eps(x_t, {}, 0) + s (eps(x_t, c, 0) - eps(x_t, {}, 0))`` plus the user term. ``users=None``
samples the base model (the adapter switched off). Interpolating between users is a linear mix of
their embeddings, ``(1 - alpha) u_a + alpha u_b`` (PPD, Fig. 4).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from persona_engine.errors import InvalidInputError
from persona_engine.extras import require

from .model import Text, cat_text


def interpolate_users(u_a: np.ndarray, u_b: np.ndarray, alpha: float) -> np.ndarray:
    """``(1 - alpha) u_a + alpha u_b``; alpha 0 is user a, 1 is user b."""
    u_a, u_b = np.asarray(u_a, dtype=np.float32), np.asarray(u_b, dtype=np.float32)
    if u_a.shape != u_b.shape:
        raise InvalidInputError(
            f"cannot interpolate user embeddings of shapes {u_a.shape} and {u_b.shape}"
        )
    if not 0.0 <= alpha <= 1.0:
        raise InvalidInputError("alpha must be between 0 and 1")
    return ((1.0 - alpha) * u_a + alpha * u_b).astype(np.float32)


def initial_noise(model: Any, n: int, seed: int) -> torch.Tensor:
    """The starting latents of ``n`` samples, in the model's precision and on its device; the same
    seed gives the same noise for every user, so base and personalized samples can be compared
    image by image. Drawn from a CPU generator, so a seed gives the same noise on every device."""
    gen = torch.Generator().manual_seed(int(seed))
    noise = torch.randn((n, *model.backbone.latent_shape), generator=gen, dtype=model.dtype)
    return noise.to(model.device)


@torch.no_grad()
def sample_images(
    model: Any,
    prompts: Sequence[str],
    users: np.ndarray | torch.Tensor | None,
    *,
    steps: int = 25,
    guidance_scale: float = 3.0,
    text_guidance_scale: float = 7.5,
    seed: int = 0,
    noise: torch.Tensor | None = None,
    batch_size: int = 256,
) -> torch.Tensor:
    """Images (n, 3, H, W) in [0, 1], float32, for ``prompts`` and per-sample user embeddings
    ``users`` ((n, D); None: the base model). The latents, the UNet and the guidance arithmetic run
    in the model's precision (``model.dtype``); ``noise``, when given, is cast to it."""
    DDIMScheduler = require("diffusers", "images", "PPD image generation").DDIMScheduler

    n = len(prompts)
    if n == 0:
        raise InvalidInputError("nothing to sample: no prompts")
    device, dtype = model.device, model.dtype
    if users is not None:
        users = torch.as_tensor(np.asarray(users, dtype=np.float32)).to(device)
        if users.shape != (n, model.user_dim):
            raise InvalidInputError(
                f"user embeddings must have shape ({n}, {model.user_dim}), got {tuple(users.shape)}"
            )
        if not torch.isfinite(users).all():
            raise InvalidInputError("user embeddings contain NaN or infinite values")
    latents = initial_noise(model, n, seed) if noise is None else noise.to(device, dtype)
    scheduler = DDIMScheduler.from_config(model.scheduler_config)
    scheduler.set_timesteps(steps, device=device)
    text_all = model.backbone.encode_prompts(list(prompts))
    null_text_all = model.backbone.null_prompts(n) if text_guidance_scale != 1.0 else None
    outs = []
    for lo in range(0, n, batch_size):
        hi = min(lo + batch_size, n)
        x = latents[lo:hi] * scheduler.init_noise_sigma
        text = text_all[lo:hi]
        null_text = None if null_text_all is None else null_text_all[lo:hi]
        u = None if users is None else users[lo:hi]
        for t in scheduler.timesteps:
            eps = _guided_noise(
                model,
                scheduler.scale_model_input(x, t),
                t,
                text,
                null_text,
                u,
                guidance_scale,
                text_guidance_scale,
            )
            x = scheduler.step(eps, t, x, eta=0.0).prev_sample
        outs.append(((model.backbone.latents_to_images(x).float() + 1.0) / 2.0).cpu())
    return torch.cat(outs)


def _guided_noise(
    model: Any,
    x: torch.Tensor,
    t: torch.Tensor,
    text: Text,
    null_text: Text | None,
    users: torch.Tensor | None,
    g: float,
    s: float,
) -> torch.Tensor:
    b = x.shape[0]
    tt = t.expand(b) if t.ndim == 0 else t
    if users is None:  # the base model, adapter off
        if null_text is None:
            return model.predict(x, tt, text, None)
        both = model.predict(
            torch.cat([x, x]), torch.cat([tt, tt]), cat_text([null_text, text]), None
        )
        e_uncond, e_text = both.chunk(2)
        return e_uncond + s * (e_text - e_uncond)
    null_tokens = model.adapter.tokens(torch.zeros_like(users))
    user_tokens = model.adapter.tokens(users)
    xs, ts, texts, tokens = [x], [tt], [text], [user_tokens]
    if g != 1.0:
        xs, ts, texts, tokens = [*xs, x], [*ts, tt], [*texts, text], [*tokens, null_tokens]
    if null_text is not None:
        xs, ts, texts, tokens = [*xs, x], [*ts, tt], [*texts, null_text], [*tokens, null_tokens]
    out = model.predict(torch.cat(xs), torch.cat(ts), cat_text(texts), torch.cat(tokens)).chunk(
        len(xs)
    )
    e_user = out[0]
    e_null = out[1] if g != 1.0 else e_user
    eps = e_null + g * (e_user - e_null)
    if null_text is not None:
        e_uncond = out[-1]
        eps = e_uncond + s * (e_null - e_uncond) + g * (e_user - e_null)
    return eps


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(n, 3, H, W) in [0, 1] -> (n, H, W, 3) uint8."""
    return (images.clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255.0).round().astype(np.uint8)
