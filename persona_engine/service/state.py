"""What every request handler reaches: the engine, the key ring, the writer, the trainer; and the
FastAPI dependencies that authenticate a request and give it its tenant scope."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from ..engine import Engine
from .auth import KeyRing, Principal
from .config import ServiceConfig
from .errors import ForbiddenError, NotImplementedInEngineError
from .metrics import ServiceMetrics
from .reads import StoreReader
from .tenancy import TenantScope
from .training import TrainingRunner
from .writer import SingleWriter


@dataclass
class ServiceState:
    config: ServiceConfig
    engine: Engine
    keys: KeyRing
    reader: StoreReader
    writer: SingleWriter
    training: TrainingRunner
    metrics: ServiceMetrics | None = None


def service_state(request: Request) -> ServiceState:
    return request.app.state.service  # type: ignore[no-any-return]


async def get_state(request: Request) -> ServiceState:
    """Dependencies are async where they do no blocking work: FastAPI runs sync ones on the thread pool."""
    return service_state(request)


_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <API key>")
_header = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    description="The API key, as an alternative to the bearer header.",
)


async def authenticate(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    api_key: Annotated[str | None, Security(_header)],
) -> Principal:
    """The caller's key (401 when missing, unknown or revoked).

    Async on purpose: the check is one indexed read on a WAL reader connection (microseconds), and
    a thread-pool hop per request would cost more than the read."""
    state = service_state(request)
    if not state.config.auth:
        return Principal(key_id="local", tenant="")
    return state.keys.verify(bearer.credentials if bearer is not None else api_key)


async def tenant_scope(
    request: Request, principal: Annotated[Principal, Depends(authenticate)]
) -> TenantScope:
    request.state.tenant = principal.tenant  # error messages are cleaned of the tenant prefix
    return TenantScope(principal.tenant, service_state(request).reader)


async def require_default_tenant(
    principal: Annotated[Principal, Depends(authenticate)],
) -> Principal:
    """Operations on the shared population model are for keys of the default tenant."""
    if not principal.is_default_tenant:
        raise ForbiddenError(
            "training changes the model every tenant uses; it needs a key of the default tenant"
        )
    return principal


State = Annotated[ServiceState, Depends(get_state)]
Scope = Annotated[TenantScope, Depends(tenant_scope)]


def engine_capability(engine: Engine, name: str, what: str) -> Any:
    """``engine.<name>``, or a 501 when this installation's engine has no such method."""
    method = getattr(engine, name, None)
    if not callable(method):
        raise NotImplementedInEngineError(f"this installation's engine has no {name}() ({what})")
    return method
