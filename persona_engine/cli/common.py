from __future__ import annotations

import json
from typing import Any

import click


def database_option() -> str | None:
    """The global ``persona --database`` of the running command (None: the default)."""
    ctx = click.get_current_context(silent=True)
    return None if ctx is None else ctx.find_root().params.get("database")


def get_engine() -> Any:
    from ..engine import Engine

    return Engine(database=database_option())


def get_store() -> Any:
    """The store ``persona --database`` names (see :func:`persona_engine.store.open_store`)."""
    from ..store import open_store

    return open_store(database_option())


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))
