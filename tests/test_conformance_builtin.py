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
        _runs[name] = ConformanceRun(cls, fast_config(name, cls) or {}, None)
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


# -- prompt dependence and opposite users ---------------------------------------------------------


def _hier() -> type:
    return get_plugin_manager().get("backends", "hier")


def test_catches_a_backend_that_claims_to_read_the_prompt_and_ignores_it() -> None:
    class Deaf(_bt()):  # type: ignore[misc,valid-type]
        reads_prompt = True

    failed = _failures(Deaf, ("prompt_dependence",))
    assert "the reward ignores the prompt" in failed["prompt_dependence"]


def test_catches_a_backend_that_reads_the_prompt_the_wrong_way() -> None:
    class Misread(_bt()):  # type: ignore[misc,valid-type]
        reads_prompt = True

        def _reward(self, vectors, prompt, items):
            # the prompt moves the scores, but along a feature unrelated to the true topic term
            return super()._reward(vectors, prompt, items) + 3.0 * prompt[:, 0] * items[:, 0]

    failed = _failures(Misread, ("prompt_dependence",))
    assert "unlike the true reward's" in failed["prompt_dependence"]


def test_catches_a_batch_scored_under_its_first_prompt() -> None:
    class FirstPrompt(_bt()):  # type: ignore[misc,valid-type]
        def _reward(self, vectors, prompt, items):
            return super()._reward(vectors, prompt, items) + prompt[0, 0] * items[:, 0]

    failed = _failures(FirstPrompt, ("scores",))
    assert "different prompts" in failed["scores"]


def test_prompt_population_has_a_known_answer_a_prompt_reader_reaches() -> None:
    """The topic term is in the labels: the true reward of one user changes with the topic."""
    run = ConformanceRun(_bt(), FAST_CONFIG["bt"], reads_prompt=True)
    pop, data = run.split.population, run.split.train
    topic = pop.topic(data.prompt)
    assert set(np.unique(topic)) == {-1.0, 1.0}
    u, items = data.user_ids[0], data.chosen[:20]
    plus, minus = data.prompt[topic > 0][0], data.prompt[topic < 0][0]
    change = pop.true_reward(u, plus, items) - pop.true_reward(u, minus, items)
    assert np.abs(change).mean() > 0.5


def test_catches_onboarding_that_returns_the_prior() -> None:
    class Prior(_hier()):  # type: ignore[misc,valid-type]
        def _embed_user(self, data):
            return self.prior()

    report = run_conformance(Prior, {}, checks=("opposite_users",))
    assert "opposite_users" in report.failed, report
    assert "each got their own preferred response" in report.failed["opposite_users"]


def test_catches_opposite_users_whose_vectors_differ_but_preferences_agree() -> None:
    """What the old check accepted: two users' vectors differ, their preferences do not."""

    class Nudged(_hier()):  # type: ignore[misc,valid-type]
        def _embed_user(self, data):
            state = self.prior()
            bump = 1e-3 * float(np.tanh(data.chosen.sum() - data.rejected.sum()))
            return type(state)(vector=state.vector + bump)

    report = run_conformance(Nudged, {}, checks=("opposite_users",))
    assert report.metrics["opposite_agreement"] < 0.1, report
    assert "opposite_users" in report.failed
