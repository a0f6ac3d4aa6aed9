"""Losses shared by the backends."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


def preference_targets(strength: np.ndarray | None, tie: np.ndarray | None = None) -> np.ndarray:
    """P(chosen beats rejected) to fit: 0.5 + strength/2 (1.0 for a sure preference), 0.5 for a
    tie; no strengths at all (``None``) means sure preferences."""
    if strength is None:
        raise ValueError("preference_targets needs the strengths (PreferenceData sets them)")
    target = 0.5 + 0.5 * np.asarray(strength, dtype=np.float32)
    if tie is not None:
        target = np.where(np.asarray(tie, dtype=bool), 0.5, target)
    return target.astype(np.float32)


def bradley_terry_loss(
    logits: torch.Tensor, target: torch.Tensor | None = None, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Bradley-Terry negative log-likelihood.

    ``logits = r(x, y_chosen) - r(x, y_rejected)``; the loss is
    ``-[t log sigma(logits) + (1 - t) log sigma(-logits)]`` with target ``t`` (1 for a hard label),
    averaged (with ``weight`` per row when given). Bradley & Terry, Biometrika 1952.
    """
    import torch.nn.functional as F

    if target is None:
        loss = F.softplus(-logits)
    else:
        loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    if weight is not None:
        return (loss * weight).sum() / weight.sum().clamp_min(1e-8)
    return loss.mean()
