"""Helpers of the PPD tests: a tiny UNet (8x8 images) built from a config in code (a module with
a unique name: several test folders have a ``conftest.py``, so ``from conftest import ...`` would
pick whichever was imported first)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from persona_engine_ppd.config import AdapterConfig, ModelConfig, TinyUNetConfig  # noqa: E402

USER_DIM = 6


def tiny_config(**adapter) -> ModelConfig:
    return ModelConfig(
        tiny=TinyUNetConfig(
            image_size=8,
            block_out_channels=[8, 16],
            norm_num_groups=4,
            attention_head_dim=4,
            cross_attention_dim=8,
        ),
        adapter=AdapterConfig(n_tokens=2, **adapter),
        encoder_config={"image_size": 8, "dim": USER_DIM},
        num_train_timesteps=100,
    )


def build_tiny(seed: int = 0, **adapter):
    from persona_engine_ppd.checkpoint import build_model

    torch.set_num_threads(1)
    return build_model(tiny_config(**adapter), USER_DIM, seed=seed)


def perturb_adapter(model, seed: int = 1, std: float = 0.5) -> None:
    """Give the zero-initialised value projections non-zero weights (a 'trained' adapter)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for branch in model.adapter.branches.values():
            branch.to_v.weight.copy_(torch.randn(branch.to_v.weight.shape, generator=gen) * std)


def write_png(path, rgb: np.ndarray) -> str:
    """Save an (H, W, 3) float image in [0, 1] as PNG."""
    from PIL import Image

    Image.fromarray((np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)).save(path)
    return str(path)
