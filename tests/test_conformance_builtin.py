"""Every installed reward backend passes the conformance suite, and the suite catches broken ones."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from pydantic import ConfigDict

from persona_engine.plugins import get_plugin_manager
from persona_engine.testing.backend_checks import (
    CHECKS,
    ConformanceFailure,
    ConformanceRun,
    run_conformance,
)

#: short training for backends whose defaults are sized for real data; a backend can instead
#: declare ``conformance_config`` (a dict of options, ``{}`` when its defaults are fast) on its class.
FAST_CONFIG: dict[str, dict[str, Any]] = {
    "bt": {"training": {"epochs": 60, "lr": 0.05, "patience": 5}},
}


def fast_config(name: str, cls: type) -> dict[str, Any] | None:
    """Short-training options for ``name``, or None when neither this file nor the class has any."""
    if name in FAST_CONFIG:
        return FAST_CONFIG[name]
    return getattr(cls, "conformance_config", None)


def installed_backends() -> list[str]:
    return get_plugin_manager().names("backends")


def conformance_params() -> list[Any]:
    """(backend, check) pairs; a backend without fast options runs its checks only with the slow
    tests (its default training may take minutes)."""
    params = []
    for name in installed_backends():
        cls = get_plugin_manager().get("backends", name)
        marks = () if fast_config(name, cls) is not None else (pytest.mark.slow,)
        params += [pytest.param(name, check, marks=marks, id=f"{name}-{check}") for check in CHECKS]
    return params


_runs: dict[str, ConformanceRun] = {}


def conformance_run(name: str) -> ConformanceRun:
    """One fitted model per backend, shared by its checks."""
    if name not in _runs:
        cls = get_plugin_manager().get("backends", name)
        _runs[name] = ConformanceRun(cls, fast_config(name, cls) or {})
    return _runs[name]


@pytest.mark.parametrize("backend,check", conformance_params())
def test_installed_backend_conforms(backend: str, check: str) -> None:
    conformance_run(backend).run(check)


def test_builtin_bt_is_checked() -> None:
    assert "bt" in installed_backends()


# -- the suite must fail on backends that break the contract ------------------------------------


def _bt() -> type:
    return get_plugin_manager().get("backends", "bt")


def _failures(cls: type, checks: tuple[str, ...]) -> dict[str, str]:
    report = run_conformance(cls, FAST_CONFIG["bt"], checks=checks)
    # every requested check ran, once, and landed on exactly one side
    assert sorted([*report.passed, *report.failed]) == sorted(checks), report
    return report.failed


def test_catches_onboarding_that_moves_shared_parameters() -> None:
    class Mutating(_bt()):  # type: ignore[misc,valid-type]
        def _embed_user(self, data):
            self.head[0].bias.data += 1.0
            return super()._embed_user(data)

    failed = _failures(Mutating, ("onboarding_frozen",))
    assert "changed shared parameters" in failed["onboarding_frozen"]
    assert failed["onboarding_frozen"].startswith("[bt] onboarding_frozen")


def test_catches_unseeded_randomness() -> None:
    class Unseeded(_bt()):  # type: ignore[misc,valid-type]
        def _fit(self, data, *, progress):
            out = super()._fit(data, progress=progress)
            self._b += float(
                np.random.default_rng().normal()
            )  # fresh entropy, not the config's seed
            return out

    failed = _failures(Unseeded, ("determinism",))
    assert "different scores" in failed["determinism"]


def test_catches_a_personalized_claim_without_user_vectors() -> None:
    class Claims(_bt()):  # type: ignore[misc,valid-type]
        personalized = True

    failed = _failures(Claims, ("contract", "known_answer"))
    assert "vector_dim 0" in failed["contract"]
    assert "known_answer" in failed


def test_catches_a_config_that_ignores_unknown_options() -> None:
    base = _bt()

    class LooseConfig(base.Config):  # type: ignore[name-defined,misc]
        model_config = ConfigDict(extra="ignore")

    class Loose(base):  # type: ignore[misc,valid-type]
        Config = LooseConfig

    failed = _failures(Loose, ("config_validation",))
    assert "did not raise InvalidInputError" in failed["config_validation"]


def test_failure_is_an_assertion_naming_the_backend() -> None:
    class Claims(_bt()):  # type: ignore[misc,valid-type]
        personalized = True

    run = ConformanceRun(Claims, FAST_CONFIG["bt"])
    with pytest.raises(ConformanceFailure, match=r"^\[bt\] contract"):
        run.check_contract()
    assert issubclass(ConformanceFailure, AssertionError)
