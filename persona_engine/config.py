"""Configuration base classes: every plugin's options are a pydantic model with ``extra="forbid"``."""

from __future__ import annotations

import os
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import InvalidInputError
from .schemas import format_validation_error


class PluginConfig(BaseModel):
    """Base of every backend's, encoder's and generator's options.

    Unknown keys are an error (a typo must not be silently ignored); every field carries a
    description, which ``persona train --help-config`` and the docs show.
    """

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), validate_assignment=True)


class TrainingConfig(PluginConfig):
    """Options of the shared training loop (see :mod:`persona_engine.training`)."""

    seed: int = Field(0, description="Seed for initialisation, shuffling and the validation split.")
    epochs: int = Field(200, ge=1, description="Maximum passes over the training comparisons.")
    batch_size: int = Field(512, ge=1, description="Comparisons per optimisation step.")
    lr: float = Field(1e-2, gt=0, description="Adam learning rate.")
    weight_decay: float = Field(0.0, ge=0, description="Decoupled weight decay (AdamW).")
    val_fraction: float = Field(
        0.1, ge=0, lt=0.5, description="Share of comparisons held out for early stopping."
    )
    patience: int = Field(
        10, ge=1, description="Epochs without validation improvement before stopping."
    )
    device: str = Field("cpu", description="torch device, e.g. 'cpu' or 'cuda'.")


C = TypeVar("C", bound=BaseModel)


def make_config(cls: type[C], value: Any = None, **overrides: Any) -> C:
    """Build a config from None, a dict or an instance, plus keyword overrides, with clear errors."""
    if isinstance(value, cls) and not overrides:
        return value
    data: dict[str, Any] = {}
    if isinstance(value, BaseModel):
        data.update(value.model_dump())
    elif isinstance(value, dict):
        data.update(value)
    elif value is not None:
        raise InvalidInputError(
            f"{cls.__name__}: expected a mapping of options, got {type(value).__name__}"
        )
    data.update(overrides)
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        raise InvalidInputError(
            f"invalid {cls.__name__}: {format_validation_error(e, cls)}"
        ) from None


def env_switch(name: str, default: bool = True) -> bool:
    """An on/off environment variable: ``0``, ``false``, ``no`` or ``off`` (any case) is off, any
    other value on; unset is ``default``."""
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() not in ("0", "false", "no", "off")
