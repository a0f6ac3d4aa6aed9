"""Options of LoRA fine-tuning (``Engine.train(..., finetune={...})``, ``persona train --finetune``)."""

from __future__ import annotations

from pydantic import Field

from persona_engine.config import PluginConfig


class LoRAConfig(PluginConfig):
    r: int = Field(8, ge=1, description="Rank of each LoRA update.")
    alpha: int = Field(16, ge=1, description="LoRA scale numerator: updates scale by alpha/r.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "v_proj"],
        min_length=1,
        description="Names of the backbone's linear layers that get adapters.",
    )
    lr: float = Field(2e-4, gt=0, description="AdamW learning rate of the LoRA weights.")
    head_lr: float = Field(1e-2, gt=0, description="AdamW learning rate of the reward head.")
    weight_decay: float = Field(0.0, ge=0, description="Decoupled weight decay (AdamW).")
    epochs: int = Field(1, ge=1, description="Passes over the training comparisons.")
    batch_size: int = Field(8, ge=1, description="Comparisons per optimisation step.")
    max_pairs: int = Field(
        2000, ge=1, description="At most this many comparisons (a seeded draw) train the adapter."
    )
    seed: int = Field(0, description="Seed of the draw, the head's initialisation and shuffling.")
    device: str = Field("auto", description="torch device of training ('auto': CUDA if present).")
    user_heads: bool | None = Field(
        None,
        description="Train with a low-rank head per user (shared V, user weights w_u) instead of "
        "one shared head; default: per-user heads when the backend is personalized.",
    )
    head_rank: int = Field(8, ge=1, description="Rank of the shared basis V of the per-user heads.")
