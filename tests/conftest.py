import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tiny models train faster on one thread, and parallel CI jobs do not oversubscribe the cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


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
