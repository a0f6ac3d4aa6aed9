"""Helpers of the service tests (a module with a unique name: several test folders have a
``conftest.py``, so ``from conftest import ...`` would pick whichever was imported first)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient  # noqa: E402

from persona_engine.engine import Engine  # noqa: E402
from persona_engine.plugins import get_plugin_manager  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import peruser_backend  # noqa: E402

HASHING = {"dim": 32}
BT_FAST = {"training": {"epochs": 30, "patience": 5, "seed": 0}}


def population(n_users: int = 6, per_user: int = 8, prefix: str = "u") -> list[dict[str, Any]]:
    """Even users like long detailed answers, odd users like short ones."""
    out = []
    for u in range(n_users):
        for i in range(per_user):
            long = f"a long and detailed answer about topic {i} with many careful words"
            short = f"short {i}"
            chosen, rejected = (long, short) if u % 2 == 0 else (short, long)
            out.append(
                {
                    "user_id": f"{prefix}{u}",
                    "prompt": f"question {i}",
                    "chosen": chosen,
                    "rejected": rejected,
                }
            )
    return out


def make_engine(home: Path, database: str | None = None) -> Engine:
    """An engine on the hashing encoder, its store in ``home`` (or at ``database``: a URL)."""
    # load_backend() finds backends in the process-wide plugin manager, so the test backend goes there
    plugins = get_plugin_manager()
    if "svc_peruser" not in plugins.names("backends"):
        plugins.register_module(peruser_backend, name="svc_test")
    return Engine(
        home, database=database, encoder="hashing", encoder_config=HASHING, plugins=plugins
    )


class Api:
    """A TestClient with the keys of two tenants: the default one and 'shop'."""

    def __init__(self, client: TestClient, engine: Engine, keys: dict[str, str]):
        self.client, self.engine, self.keys = client, engine, keys

    def headers(self, tenant: str = "") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[tenant]}"}

    def call(self, method: str, path: str, tenant: str = "", **kwargs: Any) -> Any:
        return self.client.request(
            method, path, headers={**self.headers(tenant), **kwargs.pop("headers", {})}, **kwargs
        )

    def counts(self) -> dict[str, int]:
        return self.engine.store.status()["counts"]


@contextmanager
def open_api(engine: Engine, **options: Any) -> Iterator[Api]:
    from persona_engine.service.app import create_app

    app = create_app(engine, **options)
    keyring = app.state.service.keys
    keys = {"": keyring.create(name="test")[1], "shop": keyring.create(tenant="shop")[1]}
    with TestClient(app) as client:
        yield Api(client, engine, keys)
