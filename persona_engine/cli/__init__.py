"""The ``persona`` command line. Commands live in one module per group; plugins add more through
the ``register_commands`` hook."""

from __future__ import annotations

import sys
from typing import Any

import click

from ..errors import PersonaEngineError


class PersonaGroup(click.Group):
    """Turns user-facing errors into one clear line and a non-zero exit."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PersonaEngineError as e:
            click.echo(f"Error: {e}", err=True)
            sys.exit(1)


@click.group(cls=PersonaGroup)
@click.version_option(package_name="persona-engine")
@click.option(
    "--database",
    metavar="URL|PATH",
    default=None,
    help="The store: a postgresql:// URL or a SQLite file "
    "(default: $PERSONA_ENGINE_DATABASE, else persona.db in the user directory).",
)
def cli(database: str | None) -> None:
    """persona: personalized reward models, user onboarding and personalized generation."""


# Command modules, one per line (keep sorted): each registers its commands on `cli` when imported.
from . import (  # noqa: E402,F401
    bench,
    bench_encoders,
    bench_generate,
    bench_images,
    bench_online,
    bench_reward,
    bench_scale,
    bench_serve,
    core,
    data,
    db,
    encode,
    eval_cmd,
    generate,
    keys,
    plugin_new,
    plugins_cmd,
    profiles_cmd,
    serve,
)


def _register_plugin_commands() -> None:
    from ..plugins import get_plugin_manager

    get_plugin_manager().call_register_commands(cli)


_register_plugin_commands()
