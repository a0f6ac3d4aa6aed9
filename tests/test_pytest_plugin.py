"""The fixtures persona-engine gives every pytest run (entry point ``pytest11``). The two examples
below are quoted in docs/plugins/testing.md."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from persona_engine import hookimpl, user_dir
from persona_engine.backends import RewardBackend, UserState
from persona_engine.plugins import get_backend

HERE = Path(__file__).parent


class Always(RewardBackend):
    """Scores every item by its first feature (a population-only toy)."""

    name = "always"
    personalized = False

    def _fit(self, data, *, progress):
        self.users = {u: UserState(np.zeros(0, np.float32)) for u in data.user_ids}
        return {}

    def _embed_user(self, data):
        return UserState(np.zeros(0, np.float32))

    def _reward(self, vectors, prompt, items):
        return items[:, 0]

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


def test_a_backend_registered_for_one_test(persona_engine_plugin, synthetic_population):
    class Plugin:
        @hookimpl
        def register_backends(self, register):
            register(Always)

    persona_engine_plugin(Plugin(), "test-always")
    backend = get_backend("always")()
    backend.fit(synthetic_population.data)
    assert backend.plugin == "test-always"


def test_engine_in_a_fresh_home(persona_engine_home):
    assert user_dir() == persona_engine_home
    assert list(persona_engine_home.iterdir()) == []


def test_registration_ends_with_the_test(tmp_path):
    """In a run of its own (so the order of this file's tests does not matter): a backend that the
    first test registers is gone in the second, and it was there in the first."""
    (tmp_path / "test_order.py").write_text(
        "from persona_engine import hookimpl\n"
        "from persona_engine.plugins import get_plugin_manager\n"
        "from test_pytest_plugin import Always\n"
        "class Plugin:\n"
        "    @hookimpl\n"
        "    def register_backends(self, register):\n"
        "        register(Always)\n"
        "def test_registers(persona_engine_plugin):\n"
        "    assert 'always' not in get_plugin_manager().names('backends')\n"
        "    persona_engine_plugin(Plugin(), 'test-always')\n"
        "    assert 'always' in get_plugin_manager().names('backends')\n"
        "def test_gone_afterwards():\n"
        "    assert 'always' not in get_plugin_manager().names('backends')\n"
    )
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        },
    )
    assert "2 passed" in out.stdout, out.stdout + out.stderr


def test_synthetic_population_fixture_has_opposite_groups(synthetic_population):
    w = synthetic_population.true_weights
    assert len(synthetic_population.data.user_ids) == 20
    assert float(w["u0"] @ w["u1"]) < 0 < float(w["u0"] @ w["u2"])


def test_loaded_through_the_pytest11_entry_point(pytestconfig):
    plugin = pytestconfig.pluginmanager.get_plugin("persona_engine")
    assert plugin is not None and plugin.__name__ == "persona_engine.testing.pytest_plugin"


def test_importing_the_pytest_plugin_stays_light():
    code = (
        "import sys, persona_engine.testing.pytest_plugin\n"
        "print([m for m in ('numpy', 'torch', 'transformers') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_conformance_fixture_is_a_classmethod():
    """pytest 9.1 deprecates a class-scoped fixture defined as an instance method (pytest 10 drops
    it: the plugin authors' suites would break); the pytest installed here may predate the
    warning, so the definition itself is checked."""
    from persona_engine.testing.conformance import BackendConformance

    fixture = BackendConformance.__dict__["conformance"]
    assert isinstance(fixture.__wrapped__, classmethod)
