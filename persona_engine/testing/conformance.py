"""The backend conformance suite as a pytest class: one line in a plugin's tests runs it.

::

    from persona_engine.testing.conformance import BackendConformance

    class TestMyBackend(BackendConformance):
        backend_name = "mine"                       # found through the plugin's entry point
        # or: backend_class = MyBackend             # no installation needed
        config = {"training": {"epochs": 50}}       # optional: keep the two fits short

The class is not collected by itself (its name does not start with ``Test``). Each check is its own
test (``test_known_answer``, ``test_save_load``, ...); the fitted model is shared by the checks of
one class. The checks themselves live in :mod:`persona_engine.testing.backend_checks` and can be
run without pytest through :func:`run_conformance`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from .backend_checks import (
    CHECKS,
    ConformanceFailure,
    ConformanceReport,
    ConformanceRun,
    ConformanceSettings,
    run_conformance,
)

__all__ = [
    "CHECKS",
    "BackendConformance",
    "ConformanceFailure",
    "ConformanceReport",
    "ConformanceRun",
    "ConformanceSettings",
    "run_conformance",
]


class BackendConformance:
    """Subclass as ``Test<Something>`` and set ``backend_name`` or ``backend_class``.

    :cvar backend_name: the name the backend is registered under (looked up in the plugin manager,
        which also proves the entry point works).
    :cvar backend_class: the RewardBackend subclass itself (takes precedence over the name).
    :cvar config: options for the backend, e.g. fewer epochs; nested configs (such as
        ``training``) are replaced as a whole.
    :cvar settings: a :class:`ConformanceSettings` to change the population or the pass marks.
    :cvar reads_prompt: whether the reward reads the prompt under ``config`` (checked by
        ``test_prompt_dependence``); None takes the backend class's ``reads_prompt``.
    """

    backend_name: ClassVar[str] = ""
    backend_class: ClassVar[type | None] = None
    config: ClassVar[dict[str, Any]] = {}
    settings: ClassVar[ConformanceSettings | None] = None
    reads_prompt: ClassVar[bool | None] = None

    @classmethod
    def resolve_backend(cls) -> type:
        if cls.backend_class is not None:
            return cls.backend_class
        if not cls.backend_name:
            raise TypeError(f"{cls.__name__}: set backend_name or backend_class")
        from ..plugins import get_backend

        return get_backend(cls.backend_name)

    # a classmethod: pytest runs a class-scoped fixture once for the class, so it must not be an
    # instance method (deprecated in pytest 9.1, an error in pytest 10)
    @pytest.fixture(scope="class")
    @classmethod
    def conformance(cls) -> ConformanceRun:
        """The backend under test, fitted once for all the checks of this class."""
        return ConformanceRun(
            cls.resolve_backend(), dict(cls.config), cls.settings, cls.reads_prompt
        )

    def test_contract(self, conformance: ConformanceRun) -> None:
        conformance.check_contract()

    def test_known_answer(self, conformance: ConformanceRun) -> None:
        conformance.check_known_answer()

    def test_scores(self, conformance: ConformanceRun) -> None:
        conformance.check_scores()

    def test_onboarding_frozen(self, conformance: ConformanceRun) -> None:
        conformance.check_onboarding_frozen()

    def test_save_load(self, conformance: ConformanceRun) -> None:
        conformance.check_save_load()

    def test_config_validation(self, conformance: ConformanceRun) -> None:
        conformance.check_config_validation()

    def test_bad_inputs(self, conformance: ConformanceRun) -> None:
        conformance.check_bad_inputs()

    def test_determinism(self, conformance: ConformanceRun) -> None:
        conformance.check_determinism()

    def test_user_sensitivity(self, conformance: ConformanceRun) -> None:
        conformance.check_user_sensitivity()

    def test_prompt_dependence(self, conformance: ConformanceRun) -> None:
        conformance.check_prompt_dependence()

    def test_opposite_users(self, conformance: ConformanceRun) -> None:
        conformance.check_opposite_users()
