"""Moving a user's profiles between stores as JSON.

An export holds the user's attributes, their profiles (one per model version) and a fingerprint
of each model version (backend, version, encoder, training time). Import refuses a profile whose
model version is missing or is a different model under the same id, or whose vector length does
not match the model, so an imported vector is never read under a model it was not made for.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from .errors import ConflictError, InvalidInputError, NotFoundError, UnknownUserError
from .schemas import ModelRecord, Strict, UserProfile, parse, utcnow

EXPORT_FORMAT = "persona-engine.profile/1"


class ModelFingerprint(Strict):
    backend: str
    version: int
    encoder: str
    trained_at: datetime

    @classmethod
    def of(cls, rec: ModelRecord) -> ModelFingerprint:
        return cls(
            backend=rec.backend, version=rec.version, encoder=rec.encoder, trained_at=rec.trained_at
        )


class ProfileExport(Strict):
    """A user's profiles as a portable JSON document."""

    format: Literal["persona-engine.profile/1"] = Field(
        "persona-engine.profile/1", description="Document format and version."
    )
    user_id: str
    attributes: dict[str, Any] = Field(
        default_factory=dict, description="The user's side information."
    )
    profiles: list[UserProfile] = Field(
        default_factory=list, description="One profile per model version."
    )
    models: dict[str, ModelFingerprint] = Field(
        default_factory=dict, description="The model versions the profiles belong to."
    )
    exported_at: datetime = Field(default_factory=utcnow)


def export_profile(store: Any, user_id: str, model_ids: list[str] | None = None) -> ProfileExport:
    """The export document of ``user_id`` (profiles of ``model_ids``, default all)."""
    if not store.has_user(user_id):
        raise UnknownUserError(f"unknown user {user_id!r}")
    wanted = [m for m in store.profile_model_ids(user_id) if model_ids is None or m in model_ids]
    profiles = [p for p in (store.profile(user_id, m) for m in wanted) if p is not None]
    return ProfileExport(
        user_id=user_id,
        attributes=store.user(user_id)["attributes"],
        profiles=profiles,
        models={m: ModelFingerprint.of(store.model(m)) for m in wanted},
    )


def import_profile(
    store: Any,
    document: ProfileExport | dict[str, Any],
    vector_dim: Callable[[ModelRecord], int],
    *,
    as_user: str | None = None,
) -> list[UserProfile]:
    """Store the profiles (and attributes) of an export document; returns the stored profiles.

    ``vector_dim(rec)`` gives the user-vector length of a model version; ``as_user`` stores them
    under another user id.
    """
    doc = parse(ProfileExport, document) if isinstance(document, dict) else document
    user_id = as_user or doc.user_id
    if not user_id.strip():
        raise InvalidInputError("user id must not be empty")
    stored = []
    for prof in doc.profiles:
        try:
            rec = store.model(prof.model_id)
        except NotFoundError:
            raise NotFoundError(
                f"profile for model {prof.model_id!r}, which this store does not have; train or copy that model first"
            ) from None
        fp = doc.models.get(prof.model_id)
        if fp is not None and (fp.backend, fp.version, fp.encoder, fp.trained_at) != (
            rec.backend,
            rec.version,
            rec.encoder,
            rec.trained_at,
        ):
            raise ConflictError(
                f"model {prof.model_id!r} here is not the model the profile was made under (trained {fp.trained_at:%Y-%m-%d %H:%M:%S} with {fp.encoder}; here {rec.trained_at:%Y-%m-%d %H:%M:%S} with {rec.encoder})"
            )
        if prof.backend != rec.backend:
            raise ConflictError(
                f"profile says backend {prof.backend!r}, model {rec.id} is {rec.backend!r}"
            )
        dim = vector_dim(rec)
        if len(prof.vector) != dim:
            raise InvalidInputError(
                f"profile vector has {len(prof.vector)} values; model {rec.id} has {dim}-dimensional user vectors"
            )
        if prof.uncertainty is not None and len(prof.uncertainty) != dim:
            raise InvalidInputError(
                f"profile uncertainty has {len(prof.uncertainty)} values, expected {dim}"
            )
        stored.append(
            prof.model_copy(
                update={"user_id": user_id, "source": "imported", "updated_at": utcnow()}
            )
        )
    if doc.attributes:
        store.upsert_user(user_id, attributes=doc.attributes)
    elif not store.has_user(user_id):
        store.upsert_user(user_id)
    store.put_profiles(stored)
    return stored
