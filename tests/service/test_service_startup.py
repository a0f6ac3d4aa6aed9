"""Start-up: the active model is loaded and scored once before the first request, and
``freeze_heap`` (what `persona serve` sets) freezes the heap only after that warm-up."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import trained_copy
from service_support import open_api

from persona_engine.service import app as app_module


@pytest.mark.parametrize("freeze_heap", [True, False])
def test_the_heap_is_frozen_after_the_warm_up_and_only_when_asked(
    trained_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, freeze_heap: bool
) -> None:
    engine = trained_copy(trained_home, tmp_path)
    active = engine.load_model()[0].id
    engine._models.clear()  # as in a fresh process: nothing loaded yet
    before = engine.store.status()["counts"]
    seen: list[dict[str, Any]] = []

    def freeze() -> int:  # what start-up has done by the time it freezes
        seen.append({"models": sorted(engine._models), "counts": engine.store.status()["counts"]})
        return 1

    monkeypatch.setattr(app_module, "freeze_startup_objects", freeze)
    with open_api(engine, freeze_heap=freeze_heap) as api:
        assert api.call("GET", "/v1/models").status_code == 200
    if not freeze_heap:
        assert seen == []
        return
    # the model was loaded before the freeze, and the warm-up stored nothing (no features cached)
    assert seen == [{"models": [active], "counts": before}]


def test_a_backend_that_fails_the_warm_up_still_serves(
    trained_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = trained_copy(trained_home, tmp_path)
    backend = engine.load_model()[1]

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("this backend scores only stored users")

    monkeypatch.setattr(backend, "prior", refuse)
    with open_api(engine, freeze_heap=False) as api:
        assert api.call("GET", "/v1/models").status_code == 200
