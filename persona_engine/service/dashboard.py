"""The dashboard at ``/dashboard``: server-rendered pages for a product team (Jinja2, no scripts).

- ``/dashboard/login``: paste an API key; a valid one is kept in an HttpOnly, SameSite=Strict
  cookie and verified with the service's :class:`~.auth.KeyRing` on every page, exactly like the
  key of an API call. No valid key: every page redirects to the login page (and shows no data).
- ``/dashboard``: model versions (offline figure, online curves by answers and by day), the
  tenant's data counts, the online warning.
- ``/dashboard/users``: a 2-D PCA map of the tenant's profiles under a model version, coloured by
  each user's online accuracy or by a user attribute (``?colour=<attribute>``); the users list.
- ``/dashboard/user?id=<user>``: a user's comparisons, profile, similar users, online outcomes,
  and a "try it" form that ranks candidate texts for them (``POST /dashboard/user/rank``).

Pages are read-only: they change stored data only as the API calls they share code with do. The
try-it form takes the path of ``POST /v1/rank`` (which may fill the feature cache) and records
nothing; similar users take the path of ``POST /v1/similar-users`` (which may build and save the
similar-user index). Every page shows the key's tenant only:
users come from :class:`~.tenancy.TenantScope` and are shown under the ids the tenant gave them.
Templates autoescape, and a strict Content-Security-Policy allows no script at all.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path as FilePath
from typing import Annotated, Any
from urllib.parse import parse_qs

import numpy as np
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from ..errors import InvalidInputError, PersonaEngineError, UnknownUserError
from ..schemas import utcnow
from .auth import Principal
from .dashboard_cache import PageCache, store_marks
from .dashboard_data import (
    COMPARISONS_PAGE,
    ProfileMap,
    profile_map,
    tenant_counts,
    user_comparisons,
    user_outcomes,
    users_page,
)
from .dashboard_plots import answers_curve_png, daily_png, data_uri, map_png
from .errors import ForbiddenError, UnauthorizedError
from .models import ScoreIn
from .routes_scoring import score_candidates, similar_in_tenant
from .state import ServiceState, service_state
from .tenancy import TenantScope

COOKIE = "persona_dashboard"
#: how long the login cookie lives (the key is checked on every page regardless)
COOKIE_MAX_AGE_S = 12 * 3600
SIMILAR_USERS = 10
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

router = APIRouter(prefix="/dashboard", include_in_schema=False)


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(FilePath(__file__).parent / "templates" / "dashboard"),
        autoescape=True,
        undefined=StrictUndefined,
    )
    env.filters["figure"] = lambda v, fmt=".3f": "–" if v is None else format(v, fmt)
    env.filters["interval"] = lambda ci: "–" if ci is None else f"{ci[0]:.3f}–{ci[1]:.3f}"
    return env


templates = Jinja2Templates(env=_environment())


class LoginRequired(Exception):
    """Raised by :func:`viewer` when the request carries no valid key: answered by a redirect."""


def _base(request: Request) -> str:
    return f"{request.scope.get('root_path', '')}/dashboard"


def principal_of(request: Request) -> Principal | None:
    """The principal of the key in the dashboard cookie; None when it is missing or invalid."""
    state = service_state(request)
    if not state.config.auth:
        return Principal(key_id="local", tenant="")
    try:
        return state.keys.verify(request.cookies.get(COOKIE))
    except UnauthorizedError:
        return None


class Viewer:
    """A logged-in page request: the service, the key and its tenant scope."""

    def __init__(self, request: Request, principal: Principal):
        self.request = request
        self.state: ServiceState = service_state(request)
        self.principal = principal
        self.scope = TenantScope(principal.tenant, self.state.reader)
        self.cache: PageCache = request.app.state.dashboard_cache

    def render(self, name: str, status: int = 200, **context: Any) -> Response:
        return render(self.request, name, status, principal=self.principal, **context)


async def viewer(request: Request) -> Viewer:
    principal = principal_of(request)
    if principal is None:
        raise LoginRequired
    return Viewer(request, principal)


View = Annotated[Viewer, Depends(viewer)]


def render(request: Request, name: str, status: int = 200, **context: Any) -> Response:
    context.setdefault("principal", None)
    context.setdefault("page_name", name.removesuffix(".html"))
    return templates.TemplateResponse(
        request, name, {"base": _base(request), **context}, status_code=status, headers=HEADERS
    )


async def same_site(request: Request) -> None:
    """Refuse a form posted from another site (browsers say so in ``Sec-Fetch-Site``): no page
    elsewhere may log a visitor in with a key of its own, or post for them."""
    if request.headers.get("sec-fetch-site", "").lower() == "cross-site":
        raise ForbiddenError("the dashboard's forms accept posts from its own pages only")


async def _form(request: Request) -> dict[str, str]:
    """A urlencoded form body (the body size limit applies before this)."""
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        raise InvalidInputError("send the form as application/x-www-form-urlencoded")
    try:
        body = (await request.body()).decode("utf-8")
        fields = parse_qs(body, keep_blank_values=True, max_num_fields=20, strict_parsing=False)
    except (UnicodeDecodeError, ValueError) as e:
        raise InvalidInputError(f"unreadable form: {e}") from None
    return {k: v[0] for k, v in fields.items()}


# -- login ------------------------------------------------------------------------------------
@router.get("/login")
async def login_page(request: Request) -> Response:
    if principal_of(request) is not None:
        return RedirectResponse(_base(request), status_code=303)
    return render(request, "login.html")


@router.post("/login", dependencies=[Depends(same_site)])
async def login(request: Request) -> Response:
    state = service_state(request)
    try:
        key = (await _form(request)).get("key", "").strip()
        if state.config.auth and not key:
            raise UnauthorizedError("paste an API key")
        principal = state.keys.verify(key) if state.config.auth else None
    except (UnauthorizedError, InvalidInputError) as e:
        return render(request, "login.html", 401, error=str(e))
    response = RedirectResponse(_base(request), status_code=303)
    if principal is not None:
        response.set_cookie(
            COOKIE,
            key,
            max_age=COOKIE_MAX_AGE_S,
            path=_base(request),
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
    return response


@router.post("/logout", dependencies=[Depends(same_site)])
async def logout(request: Request) -> Response:
    response = RedirectResponse(f"{_base(request)}/login", status_code=303)
    response.delete_cookie(COOKIE, path=_base(request), httponly=True, samesite="strict")
    return response


# -- overview ---------------------------------------------------------------------------------
def _overview_data(view: Viewer) -> dict[str, Any]:
    """``/v1/metrics/online`` for the viewer's tenant (same defaults, same figures), the tenant's
    counts, and the plots of each version with outcomes."""
    scope = view.scope
    report = view.state.engine.online_report(tenant=scope.tenant)
    for m in report["models"]:
        for u in m["worst_users"]:
            u["user_id"] = scope.api_id(u["user_id"])
    plots = {
        m["model_id"]: (data_uri(answers_curve_png(m)), data_uri(daily_png(m)))
        for m in report["models"]
        if m["overall"]["n"]
    }
    return {
        "report": report,
        "counts": tenant_counts(view.state.reader, scope.tenant),
        "plots": plots,
        "computed_at": utcnow(),
    }


@router.get("")
def overview(view: View) -> Response:
    marks = store_marks(view.state.reader)
    data = view.cache.get(("overview", view.scope.tenant), marks, partial(_overview_data, view))
    report = data["report"]
    return view.render(
        "overview.html",
        models=view.state.engine.store.models()[::-1],
        online={m["model_id"]: m for m in report["models"]},
        warnings=[m["warning"] for m in report["models"] if m["warning"]],
        **data,
    )


# -- users map --------------------------------------------------------------------------------
def _map_image(pmap: ProfileMap, colour: str) -> str:
    """The map coloured by ``colour`` ('accuracy' or an attribute), drawn once per cached map."""
    if colour not in pmap.images:
        pmap.images[colour] = data_uri(map_png(pmap, None if colour == "accuracy" else colour))
    return pmap.images[colour]


@router.get("/users")
def users(
    view: View,
    colour: Annotated[str, Query(max_length=200)] = "accuracy",
    model: Annotated[str | None, Query(max_length=200)] = None,
    page: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> Response:
    state, scope = view.state, view.scope
    models = state.engine.store.models()
    chosen = next((m for m in models if m.id == model), None)
    note = None
    if model and chosen is None:
        note = f"no model version {model!r}; showing the active one"
    chosen = chosen or state.engine.store.active_model()
    listed, more = users_page(state.reader, scope.tenant, page)
    pmap, plot, attributes = None, None, []
    if chosen is not None:
        model_id = chosen.id
        pmap = view.cache.get(
            ("map", scope.tenant, model_id),
            store_marks(state.reader),
            lambda: profile_map(state.reader, scope.tenant, model_id),
        )
        attributes = pmap.attribute_names()
        if colour != "accuracy" and colour not in attributes:
            note, colour = f"no user attribute {colour!r}; coloured by online accuracy", "accuracy"
        if pmap.n_profiles and pmap.dim:
            plot = _map_image(pmap, colour)
    accuracy = {} if pmap is None else pmap.accuracy
    return view.render(
        "users.html",
        models=models,
        model=chosen,
        colour=colour,
        page=page,
        more=more,
        note=note,
        profile_map=pmap,
        plot=plot,
        attributes=attributes,
        users=[(scope.api_id(u), n, accuracy.get(u)) for u, n in listed],
    )


# -- one user ---------------------------------------------------------------------------------
def _user_page(
    view: Viewer,
    user_id: str,
    page: int = 0,
    status: int = 200,
    *,
    form: dict[str, str] | None = None,
    ranking: dict[str, Any] | None = None,
    rank_error: str | None = None,
) -> Response:
    """The user page; ``form``, ``ranking``, ``rank_error``: the try-it form's fields and result."""
    state, scope = view.state, view.scope
    engine = state.engine
    try:
        stored = scope.require_user(user_id)
    except UnknownUserError as e:
        return view.render("message.html", 404, title="Unknown user", message=str(e))
    row = engine.store.user(stored)
    active = engine.store.active_model()
    profile = None if active is None else engine.store.profile(stored, active.id)
    similar: list[tuple[str, float | None]] = []
    similar_error = None
    if active is not None:
        try:
            similar = [
                (scope.api_id(u), d)
                for u, d in similar_in_tenant(engine, scope, stored, SIMILAR_USERS, active.id)
            ]
        except PersonaEngineError as e:
            similar_error = str(e)
    weights = None
    if profile is not None and profile.weights:
        weights = sorted(profile.weights.items(), key=lambda kv: -abs(kv[1]))[:30]
    return view.render(
        "user.html",
        status,
        page_name="users",
        page_size=COMPARISONS_PAGE,
        user_id=user_id,
        row=row,
        page=page,
        comparisons=user_comparisons(state.reader, stored, page),
        active=active,
        profile=profile,
        vector=None if profile is None else _vector_summary(profile.vector),
        weights=weights,
        similar=similar,
        similar_error=similar_error,
        outcomes=user_outcomes(engine, stored),
        prompt=(form or {}).get("prompt", ""),
        candidates=(form or {}).get("candidates", ""),
        ranking=ranking,
        rank_error=rank_error,
    )


def _vector_summary(vector: list[float]) -> dict[str, Any]:
    v = np.asarray(vector, dtype=np.float64)
    return {
        "dim": len(v),
        "norm": float(np.linalg.norm(v)) if len(v) else 0.0,
        "head": [float(x) for x in v[:8]],
    }


@router.get("/user")
def user(
    view: View,
    user_id: Annotated[str, Query(alias="id", min_length=1, max_length=200)],
    page: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> Response:
    return _user_page(view, user_id, page)


@router.post("/user/rank", dependencies=[Depends(same_site)])
async def try_it(view: View) -> Response:
    """Rank candidate texts (one per line) for the user, as ``POST /v1/rank`` does; stores nothing."""
    state = view.state
    try:
        form = await _form(view.request)
    except InvalidInputError as e:
        return view.render("message.html", 415, title="Unreadable form", message=str(e))
    user_id, prompt = form.get("id", ""), form.get("prompt", "")
    text = form.get("candidates", "")
    candidates = [line.strip() for line in text.splitlines() if line.strip()]

    def rank() -> Response:
        try:
            stored = view.scope.require_user(user_id)
            body = ScoreIn(user_id=user_id, prompt=prompt, candidates=candidates)
            rec, source, scores = score_candidates(
                state.engine, stored, body, state.config.max_candidates
            )
        except UnknownUserError as e:
            return view.render("message.html", 404, title="Unknown user", message=str(e))
        except ValidationError as e:
            problems = "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())
            return _user_page(view, user_id, status=422, rank_error=problems, form=form)
        except PersonaEngineError as e:
            return _user_page(view, user_id, status=e.status, rank_error=str(e), form=form)
        order = sorted(range(len(scores)), key=lambda i: -scores[i])
        ranking = {
            "model_id": rec.id,
            "source": source,
            "rows": [(candidates[i], scores[i]) for i in order],
        }
        return _user_page(view, user_id, ranking=ranking, form=form)

    return await run_in_threadpool(rank)


def install_dashboard(app: FastAPI) -> None:
    """Mount the dashboard on ``app`` (after ``app.state.service`` is set)."""
    app.state.dashboard_cache = PageCache()

    @app.exception_handler(LoginRequired)
    async def to_login(request: Request, exc: LoginRequired) -> Response:
        response = RedirectResponse(f"{_base(request)}/login", status_code=303)
        if COOKIE in request.cookies:  # a revoked or unknown key: forget it
            response.delete_cookie(COOKIE, path=_base(request), httponly=True, samesite="strict")
        return response

    app.include_router(router)
