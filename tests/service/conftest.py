"""Fixtures of the service tests: an engine on the hashing encoder (no model to load), API keys,
and a tiny text population whose users disagree (so personalized scores differ)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi")

sys.path.insert(0, str(Path(__file__).parent))
from service_support import BT_FAST, Api, make_engine, open_api, population  # noqa: E402

from persona_engine.engine import Engine  # noqa: E402


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    """An empty store (no model)."""
    with open_api(make_engine(tmp_path / "home")) as api:
        yield api


@pytest.fixture(scope="session")
def trained_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with the population recorded and two models: bt-v1 and svc_peruser-v1 (active)."""
    home = tmp_path_factory.mktemp("trained")
    engine = make_engine(home)
    engine.record(population())
    engine.train("bt", BT_FAST)
    engine.train("svc_peruser")
    engine.store.close()
    return home


def trained_copy(trained_home: Path, tmp_path: Path) -> Engine:
    """An engine on a copy of the trained store, so a test may change it."""
    import shutil

    home = tmp_path / "home"
    shutil.copytree(trained_home, home)
    engine = make_engine(home)
    with engine.store.transaction() as conn:  # the registry keeps absolute model paths
        conn.execute("UPDATE models SET path = replace(path, ?, ?)", (str(trained_home), str(home)))
    return engine


@pytest.fixture
def trained_api(trained_home: Path, tmp_path: Path) -> Iterator[Api]:
    """A copy of the trained store, so each test may change it."""
    with open_api(trained_copy(trained_home, tmp_path)) as api:
        yield api


@pytest.fixture
def snapshot() -> Callable[[Api], dict[str, int]]:
    return lambda api: {**api.counts(), "keys": len(api.client.app.state.service.keys.list())}
