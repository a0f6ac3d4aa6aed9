"""Stores for the conformance suite: every test that takes ``database`` runs once on SQLite and
once on PostgreSQL (a throwaway server started once per session, a fresh database per test).

The PostgreSQL runs never skip: without server binaries (or ``pgserver``) they fail and say what
to install.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import pytest

from persona_engine.store import StoreBase, open_store
from persona_engine.testing.postgres import PostgresServer, PostgresUnavailable, throwaway_postgres

_names = itertools.count()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    try:
        with throwaway_postgres() as server:
            yield server
    except PostgresUnavailable as e:
        pytest.fail(f"the PostgreSQL tests need a server: {e}", pytrace=False)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database on the test server."""
    name = f"pe_{os.getpid()}_{next(_names)}"
    url = postgres_server.create_database(name)
    yield url
    postgres_server.drop_database(name)


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path) -> str:
    """Where a fresh store lives: a SQLite file, or a ``postgresql://`` URL."""
    if request.param == "sqlite":
        return str(tmp_path / "store.db")
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def open_stores(database: str) -> Iterator[list[StoreBase]]:
    """Stores opened by a test through ``connect()`` below, closed after it."""
    opened: list[StoreBase] = []
    yield opened
    for s in opened:
        s.close()


@pytest.fixture
def connect(database: str, open_stores: list[StoreBase]):
    """``connect()``: one more store on the same database (another process would do the same)."""

    def connect() -> StoreBase:
        s = open_store(database)
        open_stores.append(s)
        return s

    return connect


@pytest.fixture
def store(connect) -> StoreBase:
    return connect()
