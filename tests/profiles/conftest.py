"""Fixtures of the profile tests: a small synthetic population on the real Store, synthetic item
features (``seeded-random``) and a personalized backend: the fast stand-in ``lowrank-laplace`` by
default, or a shipped one (``hier``, ``lore``) for a test parametrized with
``@pytest.mark.parametrize("trained", BACKENDS, indirect=True)``.

Each backend's population model is trained once per session; each test gets its own copy of that
home directory (store, saved model, no index yet), so tests can change it freely.
"""

from __future__ import annotations

import shutil
import sqlite3

import pytest

from persona_engine.bench.scale_plugin import register_scale_plugins, unregister_scale_plugins
from persona_engine.bench.scale_population import PROMPT, ScalePopulation

#: options of each backend, fast on the population below (a few seconds at most)
FAST_TRAINING = {
    "lowrank-laplace": {
        "rank": 4,
        "training": {"epochs": 40, "batch_size": 256, "lr": 0.03, "patience": 6},
    },
    "hier": {"rank": 2, "max_iter": 10},
    "lore": {
        "rank": 4,
        "training": {"epochs": 80, "batch_size": 256, "lr": 0.5, "patience": 15, "seed": 0},
    },
}
#: a smaller second fit of each (a new model version for the refit tests)
REFIT = {
    "lowrank-laplace": {"rank": 3, "training": {"epochs": 3}},
    "hier": {"rank": 1, "max_iter": 3},
    "lore": {"rank": 3, "training": {"epochs": 3}},
}
BACKENDS = list(FAST_TRAINING)
TRAINED_USERS = 100


def make_population() -> ScalePopulation:
    return ScalePopulation(
        n_users=120, per_user=20, pool=400, dim=8, groups=2, individual=0.3, noise=0.1, seed=3
    )


def make_engine(home, population: ScalePopulation, **kwargs):
    from persona_engine.engine import Engine

    return Engine(
        home,
        encoder="seeded-random",
        encoder_config={"dim": population.dim, "seed": population.seed},
        **kwargs,
    )


@pytest.fixture(scope="session")
def _scale_plugins_session():
    register_scale_plugins()
    yield
    unregister_scale_plugins()


@pytest.fixture
def scale_plugins(_scale_plugins_session):
    register_scale_plugins()  # idempotent; a test may have reset the plugin manager


@pytest.fixture(scope="session")
def _trained_templates(tmp_path_factory, _scale_plugins_session):
    """The home directory of each backend's trained population, built when first asked for."""
    homes = {}

    def template(backend: str):
        if backend not in homes:
            home = tmp_path_factory.mktemp(f"profiles-{backend}") / "home"
            population = make_population()
            engine = make_engine(home, population)
            for chunk in population.chunks(60):
                engine.record(chunk)
            engine.train(
                backend,
                FAST_TRAINING[backend],
                users=[population.user_id(u) for u in range(TRAINED_USERS)],
            )
            engine.store.close()
            homes[backend] = home
        return homes[backend]

    return template


@pytest.fixture
def population():
    return make_population()


@pytest.fixture
def prompt():
    return PROMPT


@pytest.fixture
def trained(request, _trained_templates, _isolated_home, scale_plugins, population):
    """An engine (at PERSONA_ENGINE_HOME) whose store holds 120 synthetic users, with the backend
    (``request.param``, default ``lowrank-laplace``) trained on the first 100; users 100-119 have
    comparisons, no profile."""
    template = _trained_templates(getattr(request, "param", "lowrank-laplace"))
    shutil.copytree(template, _isolated_home)
    conn = sqlite3.connect(_isolated_home / "persona.db")
    conn.execute(
        "UPDATE models SET path = replace(path, ?, ?)", (str(template), str(_isolated_home))
    )
    conn.commit()
    conn.close()
    return make_engine(_isolated_home, population)
