"""Fixtures of the personalized-backend tests: one torch thread, a small synthetic population."""

from __future__ import annotations

import pytest

from persona_engine.testing import synthetic_population


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """These models are tiny: one intra-op thread is faster, and immune to a busy machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def population():
    return synthetic_population(n_users=24, per_user=40, dim=8, prompt_dim=4, seed=0)
