"""Scoring, ranking, similar users, next queries and generation: all read-only, on the thread pool.

Similar users and next queries call ``Engine.similar_users`` / ``Engine.next_queries`` (the profile
index and active onboarding); an engine without them answers 501 ``not_implemented``.
"""

from __future__ import annotations

import base64
import dataclasses
import io
from typing import Any

import numpy as np
from fastapi import APIRouter

from ..backends.base import UserState
from ..engine import Engine
from ..errors import InvalidInputError
from ..schemas import ModelRecord
from .models import (
    GenerateIn,
    GenerateOut,
    Neighbour,
    NextQueriesIn,
    NextQueriesOut,
    QueryOut,
    RankedCandidate,
    RankOut,
    ScoreIn,
    ScoreOut,
    SimilarIn,
    SimilarOut,
)
from .state import Scope, State, engine_capability
from .tenancy import TenantScope

router = APIRouter(tags=["scoring"])


def score_candidates(
    engine: Engine, stored_user: str | None, body: ScoreIn, max_candidates: int
) -> tuple[ModelRecord, str, list[float]]:
    """Scores for a stored user (their profile, else the cold-start prior), an explicit vector, or
    nobody (the population prior), under one model version read once."""
    if len(body.candidates) > max_candidates:
        raise InvalidInputError(
            f"{len(body.candidates)} candidates in one request; the most is {max_candidates}"
        )
    if any(not c.strip() or "\x00" in c for c in body.candidates):
        raise InvalidInputError("every candidate must be a non-empty text without NUL characters")
    if body.vector is not None:
        rec, backend = engine.load_model(body.model)
        if len(body.vector) != backend.vector_dim:  # checked before anything is encoded or cached
            raise InvalidInputError(
                f"vector has {len(body.vector)} values; model {rec.id} takes {backend.vector_dim}"
            )
        state, source = UserState(np.asarray(body.vector, dtype=np.float32)), "vector"
    elif stored_user is not None:
        rec, backend, state, source = engine.user_state(stored_user, model=body.model)
    else:
        rec, backend = engine.load_model(body.model)
        state, source = backend.prior(), "prior"
    prompt_vec, items = engine.candidate_features(
        body.prompt, body.candidates, engine.model_encoder(rec)
    )
    scores = backend.reward(state, prompt_vec, items)
    return rec, source, [float(s) for s in scores]


def _stored_user(scope: TenantScope, body: ScoreIn) -> str | None:
    if body.user_id is None:
        return None
    return scope.require_user(body.user_id)


@router.post("/v1/score", response_model=ScoreOut, summary="Score candidates for a user")
def score(body: ScoreIn, state: State, scope: Scope) -> ScoreOut:
    rec, source, scores = score_candidates(
        state.engine, _stored_user(scope, body), body, state.config.max_candidates
    )
    return ScoreOut(user_id=body.user_id, model_id=rec.id, profile_source=source, scores=scores)


@router.post("/v1/rank", response_model=RankOut, summary="Rank candidates for a user, best first")
def rank(body: ScoreIn, state: State, scope: Scope) -> RankOut:
    rec, source, scores = score_candidates(
        state.engine, _stored_user(scope, body), body, state.config.max_candidates
    )
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    ranking = [
        RankedCandidate(index=i, candidate=body.candidates[i], score=scores[i]) for i in order
    ]
    return RankOut(user_id=body.user_id, model_id=rec.id, profile_source=source, ranking=ranking)


def _neighbour(item: Any) -> tuple[str, float | None]:
    """Engine.similar_users results (SimilarUser objects, or (id, distance) pairs) as pairs."""
    if isinstance(item, (tuple, list)):
        return str(item[0]), (float(item[1]) if len(item) > 1 and item[1] is not None else None)
    return str(item.user_id), getattr(item, "distance", None)


def similar_in_tenant(
    engine: Engine, scope: TenantScope, stored: str, k: int, model: str | None = None
) -> list[tuple[str, float | None]]:
    """The ``k`` nearest users of the stored user ``stored`` among the tenant's own users, as
    (stored id, distance), closest first (the API route and the dashboard's user page)."""
    find = engine_capability(engine, "similar_users", "the profile index")
    fetch = k
    while (
        True
    ):  # other tenants' users are filtered out, so ask for more until k remain or none are left
        found = [_neighbour(x) for x in find(stored, k=fetch, model=model)]
        visible = scope.visible(u for u, _ in found)
        mine = [(u, d) for u, d in found if u in visible and u != stored]
        if len(mine) >= k or len(found) < fetch or fetch >= 10_000:
            break
        fetch = min(10_000, fetch * 4 + 16)
    return mine[:k]


@router.post(
    "/v1/similar-users",
    response_model=SimilarOut,
    summary="The users nearest to a user in the model's space",
)
def similar_users(body: SimilarIn, state: State, scope: Scope) -> SimilarOut:
    engine_capability(state.engine, "similar_users", "the profile index")
    stored = scope.require_user(body.user_id)
    mine = similar_in_tenant(state.engine, scope, stored, body.k, body.model)
    return SimilarOut(
        user_id=body.user_id,
        neighbours=[
            Neighbour(user_id=scope.api_id(u), distance=None if d is None else float(d))
            for u, d in mine
        ],
    )


@router.post(
    "/v1/next-queries",
    response_model=NextQueriesOut,
    summary="The comparisons to ask a user next (active onboarding)",
)
def next_queries(body: NextQueriesIn, state: State, scope: Scope) -> NextQueriesOut:
    pick = engine_capability(state.engine, "next_queries", "active onboarding")
    if (body.candidates is None) == (body.pairs is None):
        raise InvalidInputError("give either 'candidates' (items to pair up) or 'pairs', not both")
    stored = scope.require_user(body.user_id)
    candidates: list[Any] = (
        body.candidates if body.candidates is not None else [tuple(p) for p in body.pairs or []]
    )
    queries = pick(stored, candidates, body.n, prompt=body.prompt, model=body.model)
    return NextQueriesOut(
        user_id=body.user_id,
        queries=[QueryOut.model_validate(dataclasses.asdict(q)) for q in queries],
    )


def _png_base64(image: Any) -> str:
    from PIL import Image

    if not hasattr(image, "save"):
        arr = np.asarray(image)
        if arr.dtype != np.uint8:
            arr = (np.clip(arr, 0.0, 1.0) * 255).round().astype(np.uint8)
        image = Image.fromarray(arr)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _json_safe(info: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in info.items():
        if isinstance(v, (str, int, bool)) or v is None:
            out[k] = v
        elif isinstance(v, float):
            out[k] = v if np.isfinite(v) else None
        elif isinstance(v, (list, tuple)) and all(
            isinstance(x, (str, int, float, bool)) for x in v
        ):
            out[k] = [x if not isinstance(x, float) or np.isfinite(x) else None for x in v]
    return out


@router.post(
    "/v1/generate",
    response_model=GenerateOut,
    summary="Personalized text (or images) from a generator plugin",
)
def generate(body: GenerateIn, state: State, scope: Scope) -> GenerateOut:
    stored = None if body.user_id is None else scope.require_user(body.user_id)
    result = state.engine.generate(
        stored, body.prompt, generator=body.generator, config=body.config, **body.options
    )
    return GenerateOut(
        user_id=body.user_id,
        generator=body.generator,
        texts=[str(t) for t in getattr(result, "texts", [])],
        images=[_png_base64(im) for im in getattr(result, "images", [])],
        info=_json_safe(dict(getattr(result, "info", {}) or {})),
    )
