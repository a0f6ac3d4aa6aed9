"""Recording comparisons, onboarding users, reading and deleting their profiles."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from starlette.concurrency import run_in_threadpool

from ..errors import InvalidInputError, UnknownUserError
from ..schemas import Comparison, UserProfile, parse
from ..store.online import OnlineOutcomes
from .models import (
    ComparisonBatch,
    ComparisonIn,
    DeleteResult,
    ModelRef,
    OnboardIn,
    ProfileOut,
    RecordResult,
    UserOut,
)
from .state import Scope, ServiceState, State, engine_capability
from .tenancy import TenantScope

router = APIRouter(tags=["users"])

PathUserId = Annotated[
    str,
    Path(
        min_length=1,
        max_length=200,
        pattern=r"^[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f][^\x00-\x1f\x7f]*$",
        description="The user's id.",
    ),
]


def _comparisons(items: list[ComparisonIn], scope: TenantScope) -> list[Comparison]:
    return [
        parse(Comparison, {**c.model_dump(), "user_id": scope.stored_id(c.user_id)}) for c in items
    ]


def _record_for_tenant(
    state: ServiceState,
    scope: TenantScope,
    comps: list[Comparison],
    outcomes: OnlineOutcomes,
) -> int:
    """Runs on the writer: refuse users owned by another tenant, then store the comparisons and
    their online-evaluation outcomes in one transaction."""
    foreign = scope.foreign(c.user_id for c in comps)
    if foreign:
        raise UnknownUserError(f"unknown user {scope.api_id(foreign[0])!r}")
    return state.engine.record(comps, tenant=scope.tenant, outcomes=outcomes)


async def _record(
    state: ServiceState, scope: TenantScope, items: list[ComparisonIn], update_profile: bool = False
) -> RecordResult:
    if len(items) > state.config.max_batch:
        raise InvalidInputError(
            f"{len(items)} comparisons in one request; the most is {state.config.max_batch}"
        )
    update = (
        engine_capability(state.engine, "update_profiles", "online profile updates")
        if update_profile
        else None
    )
    comps = _comparisons(items, scope)
    # online evaluation is model inference: on the thread pool, before the write is queued
    outcomes = await run_in_threadpool(state.engine.online.outcomes, comps)
    added = await state.writer.run(
        _record_for_tenant, state, scope, comps, outcomes, timeout=state.config.write_timeout_s
    )
    result = RecordResult(added=added, duplicates=len(comps) - added)
    if update is not None:  # after the commit, off the writer: embedding is model inference
        users = list(dict.fromkeys(c.user_id for c in comps))
        result.profiles = dict(await run_in_threadpool(update, users))
    return result


UpdateProfile = Annotated[
    bool, Query(description="Also re-embed the users' profiles under the active model (no refit).")
]


@router.post(
    "/v1/comparisons", response_model=RecordResult, status_code=201, summary="Record one comparison"
)
async def record_comparison(
    body: ComparisonIn, state: State, scope: Scope, update_profile: UpdateProfile = False
) -> RecordResult:
    return await _record(state, scope, [body], update_profile)


@router.post(
    "/v1/comparisons/batch",
    response_model=RecordResult,
    status_code=201,
    summary="Record many comparisons (all or none)",
)
async def record_batch(
    body: ComparisonBatch, state: State, scope: Scope, update_profile: UpdateProfile = False
) -> RecordResult:
    return await _record(state, scope, body.comparisons, update_profile)


def _profile_out(profile: UserProfile, scope: TenantScope) -> ProfileOut:
    return ProfileOut.model_validate(
        {**profile.model_dump(), "user_id": scope.api_id(profile.user_id)}
    )


@router.post(
    "/v1/onboard",
    response_model=ProfileOut,
    summary="Place a user in the model's space from their comparisons",
)
async def onboard(body: OnboardIn, state: State, scope: Scope) -> ProfileOut:
    if body.comparisons:
        wrong = sorted({c.user_id for c in body.comparisons if c.user_id != body.user_id})
        if wrong:
            raise InvalidInputError(
                f"comparisons for onboarding {body.user_id!r} name other users: {wrong}"
            )
        await _record(state, scope, body.comparisons)
    stored = scope.require_user(body.user_id)
    profile = await run_in_threadpool(state.engine.onboard, stored, None, model=body.model)
    return _profile_out(profile, scope)


@router.get(
    "/v1/profiles/{user_id:path}",
    response_model=ProfileOut,
    summary="A user's profile under a model",
)
def get_profile(
    user_id: PathUserId,
    state: State,
    scope: Scope,
    model: Annotated[ModelRef | None, Query()] = None,
) -> ProfileOut:
    stored = scope.require_user(user_id)
    return _profile_out(state.engine.profile(stored, model=model), scope)


@router.delete(
    "/v1/profiles/{user_id:path}",
    response_model=DeleteResult,
    summary="Forget a user's profiles (their comparisons stay)",
)
async def delete_profile(
    user_id: PathUserId,
    state: State,
    scope: Scope,
    model: Annotated[ModelRef | None, Query()] = None,
) -> DeleteResult:
    stored = scope.require_user(user_id)
    model_id = None if model is None else state.engine.model_record(model).id
    n = await state.writer.run(
        state.engine.store.delete_profile, stored, model_id, timeout=state.config.write_timeout_s
    )
    return DeleteResult(user_id=user_id, deleted={"profiles": n})


@router.get(
    "/v1/users/{user_id:path}", response_model=UserOut, summary="What is stored about a user"
)
def get_user(user_id: PathUserId, state: State, scope: Scope) -> UserOut:
    row: dict[str, Any] = state.engine.store.user(scope.require_user(user_id))
    return UserOut(
        user_id=user_id,
        n_comparisons=row["n_comparisons"],
        created_at=row["created_at"],
        attributes=row["attributes"],
    )


def _delete_for_tenant(state: ServiceState, scope: TenantScope, user_id: str) -> dict[str, int]:
    stored = scope.require_user(user_id)  # checked again on the writer: no race with a re-creation
    counts = state.engine.delete_user(stored)
    state.training.note_deleted(stored)
    return counts


@router.delete(
    "/v1/users/{user_id:path}",
    response_model=DeleteResult,
    summary="Delete a user: comparisons, profiles, items only they used",
)
async def delete_user(user_id: PathUserId, state: State, scope: Scope) -> DeleteResult:
    scope.require_user(user_id)
    counts = await state.writer.run(
        _delete_for_tenant, state, scope, user_id, timeout=state.config.write_timeout_s
    )
    return DeleteResult(
        user_id=user_id, deleted={k: int(v) for k, v in counts.items() if isinstance(v, int)}
    )
