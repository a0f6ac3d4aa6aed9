"""Pydantic models at the library's boundary: what callers hand in and get back.

Inside, the engine works on numpy arrays and torch tensors; these models are where input is
checked. Validation failures are re-raised as :class:`~persona_engine.errors.InvalidInputError`
by :func:`parse` so a caller sees one error type with a readable message.
"""

from __future__ import annotations

import hashlib
import math
from datetime import datetime, timezone
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import InvalidInputError

MAX_TEXT_CHARS = 100_000
MAX_ID_CHARS = 256


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def content_hash(text: str | bytes) -> str:
    """A stable id for an item's content (sha256, hex, 32 chars)."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    return hashlib.sha256(data).hexdigest()[:32]


def _check_text(value: str, field: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{field} must be a string")
    if not value.strip():
        raise ValueError(f"{field} must not be empty")
    if len(value) > MAX_TEXT_CHARS:
        raise ValueError(f"{field} is longer than {MAX_TEXT_CHARS} characters")
    if "\x00" in value:
        raise ValueError(f"{field} must not contain NUL characters")
    return value


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False, frozen=False)


class Item(Strict):
    """A text or an image, identified by the hash of its content."""

    kind: Literal["text", "image"] = "text"
    text: str | None = Field(None, description="The text, for kind='text'.")
    uri: str | None = Field(None, description="Path of the image file, for kind='image'.")

    @model_validator(mode="after")
    def _one_payload(self) -> Item:
        if self.kind == "text":
            if self.text is None:
                raise ValueError("a text item needs 'text'")
            _check_text(self.text, "text")
        elif not self.uri:
            raise ValueError("an image item needs 'uri' (a file path)")
        return self

    @property
    def hash(self) -> str:
        if self.kind == "text":
            return content_hash(self.text or "")
        return content_hash("image:" + (self.uri or ""))


class Comparison(Strict):
    """One pairwise preference of one user: ``chosen`` was preferred to ``rejected``.

    The interchange format is a JSON object per line with these keys; unknown top-level keys
    are kept in ``meta`` by :func:`comparison_from_record` so third-party files load as they are.
    """

    user_id: str = Field(..., description="Who expressed the preference.")
    prompt: str = Field("", description="The context both responses answer; may be empty.")
    chosen: str = Field(..., description="The preferred response (text, or an image path).")
    rejected: str = Field(..., description="The other response.")
    kind: Literal["text", "image"] = Field("text", description="What chosen/rejected are.")
    strength: float = Field(1.0, ge=0.0, le=1.0, description="Confidence of the preference.")
    tie: bool = Field(False, description="True when the user judged both equal.")
    source: str = Field("", description="Where the comparison came from (a file, an app).")
    meta: dict[str, Any] = Field(default_factory=dict)

    @field_validator("user_id")
    @classmethod
    def _user_id(cls, v: str) -> str:
        if not isinstance(v, str) or not v.strip():
            raise ValueError("user_id must be a non-empty string")
        if len(v) > MAX_ID_CHARS:
            raise ValueError(f"user_id is longer than {MAX_ID_CHARS} characters")
        return v

    @field_validator("chosen", "rejected")
    @classmethod
    def _texts(cls, v: str, info: Any) -> str:
        return _check_text(v, info.field_name)

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, v: str) -> str:
        if len(v) > MAX_TEXT_CHARS:
            raise ValueError(f"prompt is longer than {MAX_TEXT_CHARS} characters")
        return v

    @field_validator("strength")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("strength must be a finite number")
        return v

    @model_validator(mode="after")
    def _distinct(self) -> Comparison:
        if self.chosen == self.rejected:
            raise ValueError("chosen and rejected are the same; a comparison needs two items")
        for name in ("user_id", "prompt", "chosen", "rejected", "source"):
            try:  # JSON "\ud800" decodes to a lone surrogate, which cannot be hashed or stored
                getattr(self, name).encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(
                    f"{name} is not valid Unicode (it holds a lone surrogate)"
                ) from None
        return self

    @property
    def chosen_item(self) -> Item:
        return (
            Item(kind=self.kind, text=self.chosen)
            if self.kind == "text"
            else Item(kind="image", uri=self.chosen)
        )

    @property
    def rejected_item(self) -> Item:
        return (
            Item(kind=self.kind, text=self.rejected)
            if self.kind == "text"
            else Item(kind="image", uri=self.rejected)
        )


class UserProfile(Strict):
    """A user's point in a backend's shared space, for one model version."""

    user_id: str
    model_id: str = Field(..., description="The model version this profile belongs to.")
    backend: str
    vector: list[float] = Field(default_factory=list, description="The user's parameters.")
    uncertainty: list[float] | None = Field(
        None, description="Per-dimension variance, where the backend has one."
    )
    weights: dict[str, float] | None = Field(
        None, description="Interpretable weights, where the backend has them."
    )
    n_comparisons: int = 0
    source: Literal["fitted", "onboarded", "prior", "imported"] = "onboarded"
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)

    @field_validator("vector", "uncertainty")
    @classmethod
    def _finite_vec(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and not all(math.isfinite(x) for x in v):
            raise ValueError("vector values must be finite numbers")
        return v


class ModelRecord(BaseModel):
    """A trained population model in the registry."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    id: str
    backend: str
    version: int
    path: str
    encoder: str
    config: dict[str, Any] = Field(default_factory=dict)
    data: dict[str, Any] = Field(default_factory=dict, description="What it was trained on.")
    metrics: dict[str, Any] = Field(default_factory=dict)
    trained_at: datetime = Field(default_factory=utcnow)
    active: bool = False


M = TypeVar("M", bound=BaseModel)


def format_validation_error(error: ValidationError, model: type[BaseModel] | None = None) -> str:
    """One readable line per problem; unknown keys are named with the known ones."""
    parts = []
    for err in error.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "__root__")
        if err.get("type") == "extra_forbidden":
            known = (
                f" (known: {', '.join(sorted(model.model_fields))})"
                if model is not None and "." not in loc
                else ""
            )
            parts.append(f"unknown option {loc!r}{known}")
            continue
        msg = err.get("msg", "invalid").removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def parse(model: type[M], data: Any) -> M:
    """Validate ``data`` into ``model``, raising :class:`InvalidInputError` with a clear message."""
    if isinstance(data, model):
        return data
    if not isinstance(data, dict):
        raise InvalidInputError(
            f"expected a JSON object for {model.__name__}, got {type(data).__name__}"
        )
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise InvalidInputError(
            f"invalid {model.__name__}: {format_validation_error(e, model)}"
        ) from None


COMPARISON_KEYS = {
    "user_id",
    "prompt",
    "chosen",
    "rejected",
    "kind",
    "strength",
    "tie",
    "source",
    "meta",
}


def comparison_from_record(record: Any, *, source: str = "") -> Comparison:
    """Build a Comparison from an interchange-format record, keeping unknown keys in ``meta``."""
    if not isinstance(record, dict):
        raise InvalidInputError(f"expected a JSON object, got {type(record).__name__}")
    known = {k: v for k, v in record.items() if k in COMPARISON_KEYS}
    extra = {k: v for k, v in record.items() if k not in COMPARISON_KEYS}
    meta = (
        dict(known.get("meta") or {}) if isinstance(known.get("meta"), dict) else known.get("meta")
    )
    if extra and isinstance(meta, dict):
        meta.update(extra)
    if meta is not None:
        known["meta"] = meta
    if source and not known.get("source"):
        known["source"] = source
    return parse(Comparison, known)
