"""Options of the ``pal`` backend (official PAL settings noted where they apply)."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field

from persona_engine.backends.user_prior import PriorScale, prior_scale_field
from persona_engine.config import PluginConfig, TrainingConfig


class PALConfig(PluginConfig):
    """PAL: users are mixtures of K prototypes in a learned preference space."""

    variant: Literal["A", "B"] = Field(
        "B",
        description=(
            "'A': ideal-point model, r_u(y) = -|f(y) - f(sum_k w_uk p_k)|; "
            "'B': prompt-dependent mixture, r_u(x, y) = s * cos(f(y), sum_k w_uk g_k(x))."
        ),
    )
    n_prototypes: int = Field(
        4,
        ge=1,
        le=64,
        description="K, the number of prototypes (A) or prompt maps g_k (B); the official summary runs use 2.",
    )
    pref_dim: int = Field(
        64,
        ge=2,
        description="Width of the preference space and of the projectors' hidden layers (official: 512, the backbone width).",
    )
    hidden_layers: int = Field(
        2, ge=0, le=8, description="Hidden layers of each projector MLP (the official 'mlp2')."
    )
    activation: Literal["auto", "relu", "gelu"] = Field(
        "auto",
        description="Projector activation; 'auto' is relu for A and gelu for B, as in the official configs.",
    )
    residual: bool = Field(
        False,
        description="Add the input to the projector's output (the official PAL-A '-residual'); needs pref_dim equal to the feature dimension.",
    )
    loss: Literal["auto", "bt", "hinge"] = Field(
        "auto",
        description="'auto' is the official choice: hinge max(0, margin - (r_c - r_r)) for A, the 2-way cross-entropy (Bradley-Terry) for B.",
    )
    hinge_margin: float = Field(1.0, gt=0, description="Margin of the hinge loss.")
    logit_scale_init: float = Field(
        math.log(1 / 0.07),
        description="Initial log of B's cosine scale s (CLIP-style, as in the official code).",
    )
    logit_scale_max: float = Field(
        100.0, gt=0, description="Upper bound of s = min(exp(logit_scale), max)."
    )
    prototype_diversity: float = Field(
        0.1,
        ge=0,
        description=(
            "Weight of the prototype-diversity penalty mean_{k<l} relu(cos(q_k, q_l))^2 over the "
            "prototypes q_k (not in the official code; 0 turns it off, see loss.prototype_diversity_penalty)."
        ),
    )
    user_lr: float = Field(
        5e-2,
        gt=0,
        description="Adam learning rate of the users' mixture logits (official: 5e-3 at batch size 4).",
    )
    prototype_lr: float = Field(
        5e-2,
        gt=0,
        description="Adam learning rate of A's prototypes (official: 5e-3 at batch size 4).",
    )
    logit_scale_lr: float = Field(
        0.1, gt=0, description="Adam learning rate of B's log-scale (official: 0.1)."
    )
    onboarding: Literal["map", "published"] = Field(
        "map",
        description=(
            "How a new user's mixture weights are fitted with every network frozen. 'map': the "
            "maximum a posteriori logits under a Gaussian fitted (after fit) to the training "
            "users' centred logits clr(w_u), i.e. minimise sum_i loss_i + 1/2 (theta - m)^T "
            "S^-1 (theta - m), from m: one comparison keeps a user near the population's typical "
            "mixture, more move them as far as they support. 'published': the official procedure, "
            "the fit of the shots alone (plus onboard_l2) from the centre of the simplex; it fits "
            "1-5 shots exactly and overfits them."
        ),
    )
    onboard_prior_scale: PriorScale = prior_scale_field()
    onboard_l2: float = Field(
        1e-3,
        ge=0,
        description="L2 penalty on a new user's mixture logits during onboarding='published' (none in the official code).",
    )
    onboard_max_iter: int = Field(
        100, ge=1, description="Iteration cap of the Gauss-Newton onboarding solver."
    )
    onboard_hinge_sharpness: float = Field(
        10.0,
        gt=0,
        description="With the hinge loss, onboarding minimises its smooth version softplus(a (m - x)) / a with this a.",
    )
    training: TrainingConfig = Field(
        default_factory=lambda: TrainingConfig(
            lr=1e-3, weight_decay=0.01, batch_size=512, epochs=200, patience=10
        ),
        description="Options of the shared training loop; lr and weight_decay apply to the projectors (official: 1e-4, 0.01).",
    )

    def resolved_activation(self) -> str:
        if self.activation != "auto":
            return self.activation
        return "relu" if self.variant == "A" else "gelu"

    def resolved_loss(self) -> str:
        if self.loss != "auto":
            return self.loss
        return "hinge" if self.variant == "A" else "bt"
