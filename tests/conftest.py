import itertools
import os
from collections.abc import Iterator

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tiny models train faster on one thread, and parallel CI jobs do not oversubscribe the cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# one process runs every CLI call here: no gc.freeze (see persona_engine.heap)
os.environ.setdefault("PERSONA_ENGINE_GC_FREEZE", "0")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from persona_engine.testing.postgres import (  # noqa: E402
    PostgresServer,
    PostgresUnavailable,
    throwaway_postgres,
)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
_names = itertools.count()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL server for the session. The PostgreSQL tests never skip: without
    server binaries (or ``pgserver``) they fail and say what to install."""
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


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    """Every test gets its own user directory (and the default store in it)."""
    home = tmp_path / "persona_home"
    monkeypatch.setenv("PERSONA_ENGINE_HOME", str(home))
    monkeypatch.delenv("PERSONA_ENGINE_DATABASE", raising=False)
    yield home


@pytest.fixture
def shared_data():
    """../shared/data, or skip when this checkout has none beside it."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


def pytest_report_header(config):
    import sqlite3

    return f"sqlite {sqlite3.sqlite_version}"
