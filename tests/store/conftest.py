"""Stores for the conformance suite: every test that takes ``database`` runs once on SQLite and
once on PostgreSQL (``postgres_url`` of ``tests/conftest.py``: a throwaway server started once
per session, a fresh database per test).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from persona_engine.store import StoreBase, open_store


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
