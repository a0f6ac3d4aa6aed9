"""Fixtures of the PPD tests: a tiny UNet (8x8 images) built from a config in code."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

sys.path.insert(0, str(Path(__file__).parent))
from ppd_support import build_tiny, build_tiny_pipeline, build_tiny_sdxl_pipeline  # noqa: E402


@pytest.fixture
def tiny_model():
    return build_tiny()


@pytest.fixture
def inputs():
    """A batch of noisy 8x8 latents, timesteps and prompt embeddings for the tiny model."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn((4, 3, 8, 8), generator=gen)
    t = torch.tensor([1, 20, 50, 99])
    return x, t


@pytest.fixture(scope="session")
def pipeline_dir(tmp_path_factory):
    """A tiny Stable Diffusion pipeline saved in a local folder, built once per session."""
    return build_tiny_pipeline(tmp_path_factory.mktemp("sd-tiny"))


@pytest.fixture(scope="session")
def sdxl_pipeline_dir(tmp_path_factory):
    """A tiny SDXL-style pipeline (two text encoders, added text-and-time embeddings) saved in a
    local folder, built once per session."""
    return build_tiny_sdxl_pipeline(tmp_path_factory.mktemp("sdxl-tiny"))
