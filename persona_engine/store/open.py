"""Choosing the store: a ``postgresql://`` URL is a :class:`~.postgres.PostgresStore`, a path (or
nothing) the SQLite :class:`~persona_engine.store.Store` (by default ``persona.db`` in the user
directory). ``PERSONA_ENGINE_DATABASE`` gives the default, ``persona --database`` and
``Engine(database=...)`` override it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InvalidInputError
from ..paths import user_dir

if TYPE_CHECKING:
    from .base import StoreBase

ENV_DATABASE = "PERSONA_ENGINE_DATABASE"


def database_setting(database: str | Path | None = None) -> str | Path | None:
    """``database``, else ``$PERSONA_ENGINE_DATABASE``, else None (the default SQLite file)."""
    if database is None or str(database) == "":
        database = os.environ.get(ENV_DATABASE) or None
    return database


def open_store(database: str | Path | None = None, *, home: str | Path | None = None) -> StoreBase:
    """The store ``database`` names (see the module's docstring); ``home`` holds the default
    SQLite file (default: the user directory)."""
    from . import Store
    from .postgres import is_postgres_url

    database = database_setting(database)
    if database is None:
        return Store(Path(home if home is not None else user_dir()) / "persona.db")
    if is_postgres_url(database):
        from .postgres import PostgresStore

        return PostgresStore(str(database))
    if "://" in str(database):
        scheme = str(database).split("://", 1)[0]
        raise InvalidInputError(
            f"unsupported database URL scheme {scheme!r}: give a postgresql:// URL or a file path"
        )
    return Store(Path(database).expanduser())
