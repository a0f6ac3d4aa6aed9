"""``persona serve``: the HTTP service under uvicorn."""

from __future__ import annotations

import json

import click

from ..errors import InvalidInputError
from . import cli
from .common import database_option


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--port", default=8000, show_default=True, type=int, help="TCP port.")
@click.option(
    "--encoder",
    default="minilm",
    show_default=True,
    help="Text encoder for models trained through the service.",
)
@click.option("--encoder-config", default="{}", help="Options of that encoder, as JSON.")
@click.option(
    "--no-auth", is_flag=True, help="Accept requests without an API key (loopback hosts only)."
)
@click.option(
    "--max-body-bytes",
    default=4 << 20,
    show_default=True,
    type=int,
    help="Largest request body accepted.",
)
@click.option(
    "--durable",
    is_flag=True,
    help="SQLite synchronous=FULL: acknowledged writes survive power loss, not only a killed process.",
)
@click.option(
    "--cpus",
    default=None,
    help="Run the server on these CPUs only, e.g. 0 or 0-1 (Linux): one core avoids handing the "
    "interpreter lock between cores (see persona_engine.cpus). Default: wherever the OS puts it.",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
)
def serve(
    host: str,
    port: int,
    encoder: str,
    encoder_config: str,
    no_auth: bool,
    max_body_bytes: int,
    durable: bool,
    cpus: str | None,
    log_level: str,
) -> None:
    """Serve the engine over HTTP (API keys: `persona keys create`; docs at /docs)."""
    from ..extras import require

    uvicorn = require("uvicorn", "serve", "persona serve")
    require("fastapi", "serve", "persona serve")
    from ..service.app import create_app
    from ..service.config import LOOPBACK_HOSTS, ServiceConfig

    if no_auth and host not in LOOPBACK_HOSTS:
        raise InvalidInputError(
            "--no-auth is only allowed on a loopback host (127.0.0.1, ::1, localhost)"
        )
    try:
        enc_config = json.loads(encoder_config)
    except json.JSONDecodeError as e:
        raise InvalidInputError(f"--encoder-config is not JSON: {e}") from None
    config = ServiceConfig(
        host=host,
        port=port,
        encoder=encoder,
        encoder_config=enc_config,
        auth=not no_auth,
        max_body_bytes=max_body_bytes,
        synchronous="full" if durable else "normal",
        freeze_heap=True,
    )
    if cpus is not None:
        from ..cpus import parse_cpus, pin_to_cpus

        pin_to_cpus(parse_cpus(cpus))
    from ..engine import Engine

    engine = Engine(database=database_option(), encoder=encoder, encoder_config=enc_config)
    app = create_app(engine, config=config)
    if config.auth and not any(k["revoked_at"] is None for k in app.state.service.keys.list()):
        click.echo(
            "warning: no API key yet, so every request but /health gets 401; create one with `persona keys create`",
            err=True,
        )
    uvicorn.run(
        app, host=host, port=port, log_level=log_level, workers=1, timeout_graceful_shutdown=10
    )
