"""Options of the ``hier`` backend."""

from __future__ import annotations

from pydantic import Field

from persona_engine.config import PluginConfig


class HierConfig(PluginConfig):
    rank: int = Field(
        16,
        ge=0,
        description="Largest rank r of the population covariance V V^T + s2 I of user weights; the scale selection keeps its 0, 1, 2, 4, ... leading factors (0: isotropic prior only).",
    )
    space_dim: int | None = Field(
        None,
        ge=1,
        description=(
            "Users' deviations from the population reward live in the span of the top space_dim "
            "principal components of the training comparisons' standardised difference vectors "
            "x~(chosen) - x~(rejected) (where comparisons differ, so where a user's weights can be "
            "learned from ~100 users); the population reward itself keeps every feature. None: "
            "the whole standardised feature space (the default: on the MiniLM persona set every "
            "space_dim from 32 to 256 predicted new users worse, and on POPQUORN neither kept a factor)."
        ),
    )
    max_iter: int = Field(
        45,
        ge=1,
        description="Most EM iterations; the prior is checked at iterations 5, 10, 20, 30, 45 and the best kept.",
    )
    validation_fraction: float = Field(
        0.2,
        ge=0,
        lt=1,
        description="Share of training users held out to choose the prior's scales by few-shot prediction (0: keep the EM scales).",
    )
    seed: int = Field(0, description="Seed of the held-out users and their shot orders.")
    tol: float = Field(
        1e-5,
        gt=0,
        description="EM stops when the Laplace log evidence per comparison improves by less than this.",
    )
    noise_floor: float = Field(
        1e-5,
        gt=0,
        description="Smallest isotropic prior variance s2 (keeps every user able to move off the low-rank span).",
    )
    mean_l2: float | None = Field(
        None,
        gt=0,
        description="L2 precision of the pooled Bradley-Terry fit that starts EM as the population mean; None sets it by the evidence framework (MacKay 1992).",
    )
    onboard_max_iter: int = Field(50, ge=1, description="Most Newton steps when placing one user.")
