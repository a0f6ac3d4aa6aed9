"""Options of the ``lore`` backend (defaults follow the official LoRe scripts where they apply)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from persona_engine.backends.user_prior import PriorScale, prior_scale_field
from persona_engine.config import PluginConfig, TrainingConfig


class LoReConfig(PluginConfig):
    """LoRe: a shared basis of ``rank`` reward directions, each user a point on the simplex."""

    rank: int = Field(
        8,
        ge=1,
        le=256,
        description=(
            "Number B of basis reward directions (columns of V). 1 is a plain Bradley-Terry head "
            "shared by everybody; the official few-shot sweeps use 5."
        ),
    )
    temperature: float = Field(
        100.0,
        gt=0,
        description=(
            "tau in P(y_c > y_r | u) = sigma(delta_e^T V w_u / tau); the official code divides every "
            "logit by 100."
        ),
    )
    equal_user_weight: bool = Field(
        True,
        description=(
            "Average each user's comparisons before averaging over users (the official objective "
            "sum_u 1/n_u sum_i), so every user counts equally; False averages over comparisons."
        ),
    )
    onboarding: Literal["map", "published"] = Field(
        "map",
        description=(
            "How a new user's weights are fitted with V frozen. 'map': the maximum a posteriori "
            "logits under a Gaussian fitted (after fit) to the training users' centred logits "
            "clr(w_u), i.e. minimise sum_i nll_i + 1/2 (theta - m)^T S^-1 (theta - m), from m: with "
            "one comparison a user stays near the population's typical weights and moves as the "
            "comparisons grow. 'published': the official procedure, the maximum-likelihood fit of "
            "the shots (plus onboard_l2), from the centre of the simplex; it fits 1-5 shots "
            "exactly and overfits them."
        ),
    )
    onboard_prior_scale: PriorScale = prior_scale_field()
    onboard_l2: float = Field(
        1e-3,
        ge=0,
        description=(
            "L2 penalty (lambda/2)|theta|^2 on a new user's logits during onboarding='published'. "
            "The official onboarding has none (500 Adam steps act as early stopping); a tiny one keeps the "
            "optimum finite when the few comparisons are separable."
        ),
    )
    onboard_max_iter: int = Field(
        200, ge=1, description="Iteration cap of the Newton onboarding solver."
    )
    training: TrainingConfig = Field(
        default_factory=lambda: TrainingConfig(
            lr=0.5, batch_size=2048, epochs=400, patience=25, weight_decay=0.0
        ),
        description="Options of the shared training loop: joint Adam over V and every user's theta, lr 0.5 as in the official scripts (which take full-batch steps).",
    )
