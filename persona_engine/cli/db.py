from __future__ import annotations

import click

from . import cli
from .common import database_option, echo_json


@cli.group()
def db() -> None:
    """Where the store lives and what it holds."""


@db.command("path")
def db_path_cmd() -> None:
    """Print where the store lives: the SQLite file, or the database URL (without password)."""
    from ..paths import db_path
    from ..store.open import database_setting
    from ..store.postgres import is_postgres_url, redact_url

    database = database_setting(database_option())
    if database is None:
        click.echo(str(db_path()))
    else:
        click.echo(redact_url(str(database)) if is_postgres_url(database) else str(database))


@db.command("status")
def db_status() -> None:
    """Counts of users, items, comparisons, features, models and profiles."""
    from .common import get_store

    store = get_store()
    echo_json({**store.status(), "integrity": store.integrity_check()})
