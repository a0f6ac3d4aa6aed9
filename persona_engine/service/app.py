"""The FastAPI application: ``create_app(engine=None, ...)``.

Routes are thin: they check input (pydantic models), resolve the caller's tenant, and call the
:class:`~persona_engine.engine.Engine`. Writes go through the single writer
(:mod:`.writer`); reads and model inference run on the thread pool, never on the event loop;
training runs in a subprocess (:mod:`.training`). The OpenAPI schema is at ``/openapi.json``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI
from starlette.concurrency import run_in_threadpool

from .. import __version__
from ..engine import Engine
from ..errors import PersonaEngineError
from ..heap import freeze_startup_objects
from .auth import KeyRing
from .config import ServiceConfig
from .dashboard import install_dashboard
from .errors import ERROR_RESPONSES, install_error_handlers
from .limits import BodySizeLimit
from .metrics import MetricsMiddleware, ServiceMetrics
from .reads import StoreReader
from .routes_admin import health_router
from .routes_admin import router as admin_router
from .routes_scoring import router as scoring_router
from .routes_users import router as users_router
from .state import ServiceState, authenticate
from .training import TrainingRunner
from .writer import SingleWriter

log = logging.getLogger("persona_engine.service")


def _preload(engine: Engine) -> None:
    """Load the active model and its encoder, and score once under the population prior, before
    the first request: the model files, the encoder's weights and the modules torch imports on
    first use are then in place (and, with ``freeze_heap``, out of the collector's reach). The
    warm-up texts are encoded directly, never stored or cached."""
    try:
        rec, backend = engine.load_model()
        encoder = engine.model_encoder(rec)
    except (
        PersonaEngineError
    ) as e:  # no model yet: scoring answers 404 no_model until one is trained
        log.info("no model preloaded: %s", e)
        return
    prompt, candidates = "warm-up", ["a warm-up answer", "another warm-up answer"]
    try:
        items = encoder.encode_pairs([prompt] * len(candidates), candidates)
        backend.reward(backend.prior(), encoder.encode_prompts([prompt])[0], items)
    except Exception:  # a warm-up only: a backend that cannot score this way still serves
        log.warning("warm-up score under model %s failed", rec.id, exc_info=True)


def create_app(
    engine: Engine | None = None, *, config: ServiceConfig | None = None, **options: Any
) -> FastAPI:
    """Build the service around ``engine`` (default: ``Engine`` on the user directory).

    :param config: a :class:`ServiceConfig`; keyword ``options`` override its fields.
    """
    config = ServiceConfig(**options) if config is None else config.model_copy(update=options)
    if engine is None:
        engine = Engine(encoder=config.encoder, encoder_config=config.encoder_config)
    if config.synchronous == "full":
        engine.store.set_durability(True)
    reader = StoreReader(engine.store)
    writer = SingleWriter(config.write_queue)
    state = ServiceState(
        config=config,
        engine=engine,
        keys=KeyRing(engine.store),
        reader=reader,
        writer=writer,
        training=TrainingRunner(engine, writer, reader, timeout_s=config.train_timeout_s),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        writer.start()
        await run_in_threadpool(_preload, engine)
        # other replicas' profile changes reach this one's indexes as they commit (PostgreSQL)
        unfollow = engine.follow_profile_changes()
        await run_in_threadpool(lambda: None)  # the thread pool's modules, imported on first use
        if config.freeze_heap:
            freeze_startup_objects()  # everything start-up imported and loaded: persona_engine.heap
        yield
        if unfollow is not None:
            unfollow()
        state.training.shutdown()
        writer.stop()

    app = FastAPI(
        title="persona_engine",
        version=__version__,
        summary="Personalized reward models: record preferences, onboard users, score, rank and generate for them.",
        lifespan=lifespan,
        responses=ERROR_RESPONSES,
    )
    state.metrics = ServiceMetrics(state)
    app.state.service = state
    app.add_middleware(BodySizeLimit, max_bytes=config.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)  # outermost: sees every request
    install_error_handlers(app)
    app.include_router(health_router)
    protected = [Depends(authenticate)]
    for router in (users_router, scoring_router, admin_router):
        app.include_router(router, dependencies=protected)
    install_dashboard(app)  # its pages check the key in their own login cookie
    return app
