"""Health, model versions, status, and background training."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response

from .. import __version__
from ..schemas import ModelRecord
from .auth import Principal
from .metrics import CONTENT_TYPE_LATEST
from .models import HealthOut, ModelOut, StatusOut, TrainIn, TrainJobOut
from .state import Scope, State, authenticate, require_default_tenant

health_router = APIRouter(tags=["health"])
router = APIRouter(tags=["models"])


@health_router.get("/health", response_model=HealthOut, summary="Liveness (no key needed)")
async def health(state: State) -> HealthOut:
    state.reader.store.ping()
    return HealthOut(status="ok", version=__version__)


@health_router.get(
    "/metrics",
    summary="Prometheus metrics of this process (no key needed; no user data)",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
)
def metrics(state: State) -> Response:
    assert state.metrics is not None  # set by create_app
    return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)


def _model_out(rec: ModelRecord) -> ModelOut:
    return ModelOut.model_validate(rec.model_dump(exclude={"path", "config"}))


@router.get("/v1/models", response_model=list[ModelOut], summary="Trained model versions")
def list_models(state: State, _: Annotated[Principal, Depends(authenticate)]) -> list[ModelOut]:
    return [_model_out(m) for m in state.engine.store.models()]


@router.get(
    "/v1/status",
    response_model=StatusOut,
    summary="The active model, training runs, and what is stored",
)
def status(state: State, scope: Scope) -> StatusOut:
    active = state.engine.store.active_model()
    counts = state.engine.store.status()["counts"] if scope.tenant == "" else {}
    return StatusOut(
        version=__version__,
        tenant=scope.tenant,
        users=scope.count_users(),
        counts=counts,
        active_model=None if active is None else _model_out(active),
        training=[TrainJobOut.model_validate(j.public()) for j in state.training.jobs.values()],
        write_queue=state.writer.pending,
    )


@router.get(
    "/v1/metrics/online",
    summary="Online evaluation of each model version on this tenant's recent comparisons",
)
def online_metrics(
    state: State,
    scope: Scope,
    model: Annotated[str | None, Query(description="A model id or backend name.")] = None,
    since: Annotated[
        str | None, Query(description="A date (2026-12-01) or the last N days (7d).")
    ] = None,
    window: Annotated[int, Query(ge=1, le=1_000_000)] = 1000,
    worst: Annotated[int, Query(ge=0, le=1000)] = 10,
) -> dict[str, Any]:
    """What ``persona eval online --json`` prints, for the caller's tenant only."""
    report = state.engine.online_report(
        model=model, since=since, tenant=scope.tenant, window=window, worst=worst
    )
    for m in report["models"]:
        for u in m["worst_users"]:
            u["user_id"] = scope.api_id(u["user_id"])
    return report


@router.post(
    "/v1/train",
    response_model=TrainJobOut,
    status_code=202,
    summary="Train a new model version in the background",
)
def train(
    body: TrainIn, state: State, _: Annotated[Principal, Depends(require_default_tenant)]
) -> TrainJobOut:
    return TrainJobOut.model_validate(state.training.start(body.backend, body.config).public())


@router.get("/v1/train/{job_id}", response_model=TrainJobOut, summary="A training run's state")
def train_job(
    job_id: str, state: State, _: Annotated[Principal, Depends(authenticate)]
) -> TrainJobOut:
    return TrainJobOut.model_validate(state.training.job(job_id).public())
