"""Image encoders (``modality="image"``): they embed the images of a user's preference pairs.

- ``tiny-image``: a small CNN built in code (:mod:`.image_net`), trained self-supervised on the
  synthetic task's images by :func:`persona_engine_ppd.trainer.train_image_encoder`
  (reconstruction plus augmentation invariance, optionally VICReg's variance and covariance
  terms against collapse: it never sees an attribute, a reward or a preference); weights from a safetensors file, or fixed random weights from a seed when none
  are given.
- ``tiny-image-supervised``: the same network trained with a read-out of the images' drawing
  attributes (hue, value, position), which the synthetic task's gold rewards are computed from:
  an oracle, kept to compare against, never the default.
- ``clip-image``: CLIP's image tower from a local directory (``CLIPVisionModelWithProjection`` or
  ``CLIPModel``, ``local_files_only``), for users who have the weights.

Inputs of :meth:`embed` are image file paths; :meth:`embed_images` takes arrays
``(n, 3, H, W)`` in [0, 1]. This module is imported by ``persona --help``: torch and
transformers are imported inside the methods that need them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from persona_engine.encoders import Encoder, EncoderConfig
from persona_engine.errors import InvalidInputError, PersonaEngineError


def load_images(paths: Sequence[str], *, size: int | None = None) -> np.ndarray:
    """Read image files as float32 (n, 3, H, W) in [0, 1]; ``size`` demands that exact side."""
    from PIL import Image, UnidentifiedImageError

    out = []
    for p in paths:
        path = Path(p)
        if not path.is_file():
            raise InvalidInputError(f"no such image file: {p}")
        try:
            with Image.open(path) as im:
                rgb = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
        except (UnidentifiedImageError, OSError) as e:
            raise InvalidInputError(f"cannot read image {p}: {e}") from None
        if size is not None and rgb.shape[:2] != (size, size):
            raise InvalidInputError(
                f"image {p} is {rgb.shape[1]}x{rgb.shape[0]}; this encoder takes {size}x{size} images"
            )
        out.append(rgb.transpose(2, 0, 1))
    if not out:
        return np.zeros((0, 3, size or 0, size or 0), dtype=np.float32)
    if len({a.shape for a in out}) > 1:
        raise InvalidInputError(
            "images of different sizes in one batch; this encoder needs one size"
        )
    return np.stack(out)


def check_images(images: Any, size: int | None) -> np.ndarray:
    """Validate an array batch of images (n, 3, H, W) in [0, 1]."""
    arr = np.asarray(images, dtype=np.float32)
    if arr.ndim != 4 or arr.shape[1] != 3:
        raise InvalidInputError(f"images must have shape (n, 3, H, W), got {arr.shape}")
    if size is not None and arr.shape[2:] != (size, size):
        raise InvalidInputError(
            f"images are {arr.shape[3]}x{arr.shape[2]}; this encoder takes {size}x{size} images"
        )
    if not np.isfinite(arr).all():
        raise InvalidInputError("images contain NaN or infinite values")
    return arr


class ImageEncoderConfig(EncoderConfig):
    scalar_features: list[str] = Field(default_factory=list, description="Unused for images.")


class TinyImageEncoderConfig(ImageEncoderConfig):
    image_size: int = Field(
        16, ge=8, le=64, description="Side of the square images it takes (a multiple of 4)."
    )
    dim: int = Field(32, ge=2, le=1024, description="Embedding width.")
    weights_path: str = Field(
        "",
        description="safetensors file of trained weights; empty: fixed random weights from the seed.",
    )
    seed: int = Field(
        0, description="Seed of the random weights (used when weights_path is empty)."
    )


class TinyImageEncoder(Encoder):
    """A small CNN image encoder built in code (see the module docstring)."""

    name = "tiny-image"
    modality = "image"
    Config = TinyImageEncoderConfig
    config: TinyImageEncoderConfig

    @cached_property
    def model_id(self) -> str:  # type: ignore[override]
        base = f"s{self.config.image_size}-d{self.config.dim}"
        if not self.config.weights_path:
            return f"{base}-random{self.config.seed}"
        path = Path(self.config.weights_path)
        if not path.is_file():
            raise PersonaEngineError(f"no encoder weights at {path}")
        return f"{base}-{hashlib.sha256(path.read_bytes()).hexdigest()[:12]}"

    @property
    def embedding_dim(self) -> int:
        return self.config.dim

    @cached_property
    def network(self) -> Any:
        import torch

        from .image_net import TinyImageNet

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.seed)
            net = TinyImageNet(self.config.image_size, self.config.dim)
        if self.config.weights_path:
            from safetensors.torch import load_file

            path = Path(self.config.weights_path)
            if not path.is_file():
                raise PersonaEngineError(f"no encoder weights at {path}")
            net.load_state_dict(load_file(str(path)))
        return net.to(self.config.device).eval().requires_grad_(False)

    def embed(self, inputs: Sequence[str]) -> np.ndarray:
        return self.embed_images(load_images(inputs, size=self.config.image_size))

    def embed_images(self, images: Any) -> np.ndarray:
        import torch

        arr = check_images(images, self.config.image_size)
        outs = []
        with torch.no_grad():
            for i in range(0, len(arr), max(self.config.batch_size, 1)):
                batch = torch.from_numpy(arr[i : i + self.config.batch_size]).to(self.config.device)
                outs.append(self.network(batch).float().cpu().numpy())
        return np.concatenate(outs) if outs else np.zeros((0, self.config.dim), dtype=np.float32)


class TinyImageSupervisedEncoder(TinyImageEncoder):
    """The tiny CNN trained with an oracle read-out of the synthetic task's attributes (see the
    module docstring); its own name keeps its numbers apart from the self-supervised encoder's."""

    name = "tiny-image-supervised"


class CLIPImageEncoderConfig(ImageEncoderConfig):
    model_path: str = Field(
        "",
        description="Local directory of a CLIP model (CLIPModel or CLIPVisionModelWithProjection) with its image processor.",
    )
    normalize: bool = Field(True, description="Scale embeddings to unit length.")


class CLIPImageEncoder(Encoder):
    """CLIP image embeddings from a local model directory (never from a hub)."""

    name = "clip-image"
    modality = "image"
    Config = CLIPImageEncoderConfig
    config: CLIPImageEncoderConfig

    @property
    def model_id(self) -> str:
        return Path(self.config.model_path).name or "unset"

    @cached_property
    def _loaded(self) -> tuple[Any, Any, bool]:
        path = Path(self.config.model_path)
        if not self.config.model_path or not path.is_dir():
            raise PersonaEngineError(
                f"no CLIP model at {self.config.model_path!r}: pass clip-image's model_path, a local directory"
            )
        from transformers import CLIPImageProcessor, CLIPModel, CLIPVisionModelWithProjection

        processor = CLIPImageProcessor.from_pretrained(str(path), local_files_only=True)
        import json

        arch = json.loads((path / "config.json").read_text()).get("architectures") or []
        model: Any  # either CLIP class; transformers' decorated .to() does not type-check
        if "CLIPModel" in arch:
            model, full = CLIPModel.from_pretrained(str(path), local_files_only=True), True
        else:
            model, full = (
                CLIPVisionModelWithProjection.from_pretrained(str(path), local_files_only=True),
                False,
            )
        return model.to(self.config.device).eval(), processor, full

    @cached_property
    def _dim(self) -> int:
        model, _, full = self._loaded
        return int(model.config.projection_dim)

    @property
    def embedding_dim(self) -> int:
        return self._dim

    def embed(self, inputs: Sequence[str]) -> np.ndarray:
        from PIL import Image

        for p in inputs:
            if not Path(p).is_file():
                raise InvalidInputError(f"no such image file: {p}")
        images = []
        for p in inputs:
            with Image.open(p) as im:
                images.append(im.convert("RGB"))
        return self._embed_pil(images)

    def embed_images(self, images: Any) -> np.ndarray:
        from PIL import Image

        arr = check_images(images, None)
        pil = [
            Image.fromarray((np.clip(a.transpose(1, 2, 0), 0, 1) * 255).round().astype(np.uint8))
            for a in arr
        ]
        return self._embed_pil(pil)

    def _embed_pil(self, images: list[Any]) -> np.ndarray:
        import torch

        model, processor, full = self._loaded
        outs = []
        with torch.no_grad():
            for i in range(0, len(images), self.config.batch_size):
                pixels = processor(
                    images=images[i : i + self.config.batch_size], return_tensors="pt"
                ).pixel_values.to(self.config.device)
                emb = (
                    model.get_image_features(pixel_values=pixels)
                    if full
                    else model(pixel_values=pixels).image_embeds
                )
                if not isinstance(emb, torch.Tensor):  # some versions return an output object
                    emb = emb.pooler_output
                if self.config.normalize:
                    emb = torch.nn.functional.normalize(emb, dim=-1)
                outs.append(emb.float().cpu().numpy())
        return np.concatenate(outs) if outs else np.zeros((0, self.embedding_dim), dtype=np.float32)
