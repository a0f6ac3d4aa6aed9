"""The checks of the backend conformance suite, usable without pytest.

:class:`ConformanceRun` fits one backend class on a tiny synthetic population whose right answer
is known (:func:`persona_engine.testing.synthetic_population`) and checks the contract of
:class:`persona_engine.backends.RewardBackend`:

``contract``            name, ``Config`` (a described ``PluginConfig``), ``personalized``, ``vector_dim``
``known_answer``        a personalized backend tells two groups with opposite tastes apart on
                        held-out pairs, for training users and for users onboarded from a few
                        shots; a non-personalized one beats chance when users share a direction
``scores``              ``reward`` gives finite float32 scores of the right shape, equal to ``reward_batch``
                        and to scoring each row alone, on rows with different prompts
``onboarding_frozen``   ``embed_user`` leaves the shared parameters (``state_dict``) and the
                        training users' vectors untouched
``save_load``           a saved and re-loaded model gives identical scores, config and users
``config_validation``   unknown options raise InvalidInputError; the config survives JSON
``bad_inputs``          zero comparisons, mismatched feature dimensions, an unknown user, NaNs,
                        use before ``fit`` each raise the right PersonaEngineError
``determinism``         two fits with the same config give the same scores, whatever the global
                        random state was before
``user_sensitivity``    a personalized backend's reward depends on the user: swapping a training
                        user's state for another's changes the reward margins of their held-out
                        comparisons (relative swap sensitivity, see :func:`swap_sensitivity`);
                        a backend whose reward ignores the user vector (VPL's posterior collapse)
                        scores 0
``prompt_dependence``   a backend that declares ``reads_prompt`` scores the same responses
                        differently under prompts of the two topics the population tells apart,
                        the way the true reward does (:func:`.preference_checks.prompt_correlation`)
``opposite_users``      two users of opposite groups, onboarded from their shots, are each given
                        their own preferred response on the pairs they truly disagree about, which
                        is the other's dispreferred (:func:`.preference_checks.opposite_agreement`)

Each ``check_*`` method raises :class:`ConformanceFailure` (an AssertionError) with a message that
names the backend. :func:`run_conformance` runs them all and returns a report.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..backends.base import RewardBackend, UserState
from ..backends.data import PreferenceData
from ..backends.sensitivity import swap_sensitivity as margin_swap_sensitivity
from ..config import PluginConfig
from ..errors import InvalidInputError, NoModelError, UnknownUserError
from .conformance_population import ConformanceSettings, Split, conformance_split
from .preference_checks import opposite_agreement, prompt_correlation

CHECKS = (
    "contract",
    "known_answer",
    "scores",
    "onboarding_frozen",
    "save_load",
    "config_validation",
    "bad_inputs",
    "determinism",
    "user_sensitivity",
    "prompt_dependence",
    "opposite_users",
)


class ConformanceFailure(AssertionError):
    """A backend broke the RewardBackend contract."""


@dataclass
class ConformanceReport:
    backend: str
    passed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed


def _fail(backend: str, check: str, msg: str) -> ConformanceFailure:
    return ConformanceFailure(f"[{backend}] {check}: {msg}")


def _accuracy(backend: RewardBackend, state: UserState, data: PreferenceData) -> float:
    return float((backend.preference_logits(state, data) > 0).mean())


def swap_sensitivity(
    backend: RewardBackend,
    states: dict[str, UserState],
    comparisons: dict[str, PreferenceData],
    seed: int = 0,
) -> tuple[float, float]:
    """``(absolute, relative)`` swap sensitivity of ``backend``'s reward margins
    (:func:`persona_engine.backends.sensitivity.swap_sensitivity`); 0 means the reward ignores
    the user."""
    return margin_swap_sensitivity(backend.preference_logits, states, comparisons, seed=seed)


def _expect_error(
    backend: str, check: str, what: str, kind: type[Exception], fn: Callable[[], Any]
) -> None:
    try:
        fn()
    except kind:
        return
    except Exception as e:  # the wrong kind of error is a failure too
        raise _fail(
            backend, check, f"{what} raised {type(e).__name__}: {e} (expected {kind.__name__})"
        ) from e
    raise _fail(backend, check, f"{what} did not raise {kind.__name__}")


def _scramble_global_rngs(seed: int) -> None:
    """Move the global random states, so a backend that relies on them instead of its own seed
    gives different results in the determinism check."""
    import random

    random.seed(seed)
    np.random.seed(seed)
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency, but a backend may not need it
        return
    torch.manual_seed(seed)


class ConformanceRun:
    """One backend class under test, with its fitted model cached across checks.

    :param backend_cls: a subclass of RewardBackend.
    :param config: options passed to the backend (keep training short: the suite fits twice).
    :param settings: population size and pass marks.
    :param reads_prompt: whether the backend's reward reads the prompt under ``config``; by
        default its class attribute ``reads_prompt``.
    """

    def __init__(
        self,
        backend_cls: type[RewardBackend],
        config: dict[str, Any] | None = None,
        settings: ConformanceSettings | None = None,
        reads_prompt: bool | None = None,
    ):
        self.cls = backend_cls
        self.reads_prompt = (
            bool(getattr(backend_cls, "reads_prompt", False))
            if reads_prompt is None
            else reads_prompt
        )
        self.config = dict(config or {})
        self.s = settings or ConformanceSettings()
        self.label = getattr(backend_cls, "name", "") or getattr(
            backend_cls, "__name__", repr(backend_cls)
        )
        self._model: RewardBackend | None = None
        self._split: Split | None = None
        self.metrics: dict[str, float] = {}

    # -- shared fixtures ---------------------------------------------------------------------
    @property
    def personalized(self) -> bool:
        return bool(getattr(self.cls, "personalized", True))

    @property
    def split(self) -> Split:
        if self._split is None:
            self._split = conformance_split(
                self.s, personalized=self.personalized, reads_prompt=self.reads_prompt
            )
        return self._split

    def new(self) -> RewardBackend:
        return self.cls(self.config)

    @property
    def model(self) -> RewardBackend:
        if self._model is None:
            model = self.new()
            t0 = time.perf_counter()
            model.fit(self.split.train)
            self.metrics["fit_seconds"] = time.perf_counter() - t0
            self._model = model
        return self._model

    def fail(self, check: str, msg: str) -> ConformanceFailure:
        return _fail(self.label, check, msg)

    def probe(self, model: RewardBackend) -> np.ndarray:
        """Scores of every seen user's test chosen items, and of one onboarded user's: a
        fingerprint of a fitted model."""
        parts = [
            model.reward(model.user_state(u), d.prompt, d.chosen)
            for u, d in self.split.seen_test.items()
        ]
        u, shots = next(iter(self.split.unseen_shots.items()))
        test = self.split.unseen_test[u]
        parts.append(model.reward(model.embed_user(shots), test.prompt, test.chosen))
        return np.concatenate(parts)

    # -- the checks --------------------------------------------------------------------------
    def check_contract(self) -> None:
        c = "contract"
        if not (isinstance(self.cls, type) and issubclass(self.cls, RewardBackend)):
            raise self.fail(
                c, f"{self.cls!r} is not a subclass of persona_engine.backends.RewardBackend"
            )
        if not isinstance(self.cls.name, str) or not self.cls.name:
            raise self.fail(c, "the class has no 'name' (the name users pick the backend by)")
        if not (isinstance(self.cls.Config, type) and issubclass(self.cls.Config, PluginConfig)):
            raise self.fail(c, "Config must be a subclass of persona_engine.config.PluginConfig")
        undescribed = [k for k, f in self.cls.Config.model_fields.items() if not f.description]
        if undescribed:
            raise self.fail(
                c,
                f"config fields without a description: {undescribed} (use Field(description=...))",
            )
        model = self.model
        if self.personalized and model.vector_dim <= 0:
            raise self.fail(
                c, f"personalized backend has vector_dim {model.vector_dim}; users need a vector"
            )
        for u in self.split.seen_test:
            vec = model.user_state(u).vector
            if np.asarray(vec).shape != (model.vector_dim,):
                raise self.fail(
                    c,
                    f"user {u!r} has a vector of shape {np.shape(vec)}, expected ({model.vector_dim},)",
                )
        prior = model.prior()
        if np.asarray(prior.vector).shape != (model.vector_dim,):
            raise self.fail(
                c,
                f"prior() vector has shape {np.shape(prior.vector)}, expected ({model.vector_dim},)",
            )
        state = model.state_dict()
        bad = [
            k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, np.ndarray)
        ]
        if bad:
            raise self.fail(c, f"state_dict must map str to numpy arrays; bad entries: {bad[:5]}")

    def check_known_answer(self) -> None:
        c, s, model, split = "known_answer", self.s, self.model, self.split
        by_group: dict[int, list[float]] = {}
        seen = []
        for u, d in split.seen_test.items():
            acc = _accuracy(model, model.user_state(u), d)
            seen.append(acc)
            by_group.setdefault(self.split.groups[u], []).append(acc)
        seen_acc = float(np.mean(seen))
        self.metrics["seen_accuracy"] = seen_acc
        if not self.personalized:
            if seen_acc < s.min_population_accuracy:
                raise self.fail(
                    c,
                    f"held-out accuracy {seen_acc:.3f} < {s.min_population_accuracy} on a population that shares a preferred direction",
                )
            return
        unseen = [
            _accuracy(model, model.embed_user(shots), split.unseen_test[u])
            for u, shots in split.unseen_shots.items()
        ]
        unseen_acc = float(np.mean(unseen))
        group_acc = {g: float(np.mean(v)) for g, v in by_group.items()}
        self.metrics["unseen_accuracy"] = unseen_acc
        self.metrics.update({f"group{g}_accuracy": a for g, a in group_acc.items()})
        where = (
            f"(two groups with opposite tastes: a population model scores ~0.5; groups {group_acc})"
        )
        if seen_acc < s.min_seen_accuracy:
            raise self.fail(
                c,
                f"held-out accuracy of training users {seen_acc:.3f} < {s.min_seen_accuracy} {where}",
            )
        if min(group_acc.values()) < s.min_group_accuracy:
            raise self.fail(
                c,
                f"one group is served badly: {group_acc} (each must reach {s.min_group_accuracy})",
            )
        if unseen_acc < s.min_unseen_accuracy:
            raise self.fail(
                c,
                f"accuracy of users onboarded from {s.shots} shots {unseen_acc:.3f} < {s.min_unseen_accuracy} {where}",
            )

    def check_scores(self) -> None:
        c, model = "scores", self.model
        u, d = next(iter(self.split.seen_test.items()))
        state = model.user_state(u)
        scores = model.reward(state, d.prompt[0], d.chosen)
        if (
            not isinstance(scores, np.ndarray)
            or scores.shape != (len(d),)
            or scores.dtype != np.float32
        ):
            raise self.fail(
                c,
                f"reward returned {type(scores).__name__} {getattr(scores, 'shape', None)} {getattr(scores, 'dtype', None)}, expected float32 ({len(d)},)",
            )
        if not np.isfinite(scores).all():
            raise self.fail(c, "reward returned NaN or infinite scores")
        vecs = np.broadcast_to(
            np.asarray(state.vector, dtype=np.float32), (len(d), model.vector_dim)
        )
        batch = model.reward_batch(vecs, np.broadcast_to(d.prompt[0], d.prompt.shape), d.chosen)
        if not np.allclose(scores, batch, atol=self.s.score_atol, rtol=self.s.score_rtol):
            raise self.fail(c, "reward and reward_batch disagree on the same rows")
        # rows with their own prompts: a batch must score each row under that row's prompt
        rows = model.reward_batch(vecs, d.prompt, d.chosen)
        alone = np.concatenate(
            [model.reward(state, d.prompt[i], d.chosen[i : i + 1]) for i in range(len(d))]
        )
        if not np.allclose(rows, alone, atol=self.s.score_atol, rtol=self.s.score_rtol):
            raise self.fail(
                c,
                "reward_batch on rows with different prompts differs from scoring each row alone "
                "under its own prompt",
            )
        one = model.reward(state, d.prompt[0], d.chosen[:1])
        if not np.allclose(one, scores[:1], atol=self.s.score_atol, rtol=self.s.score_rtol):
            raise self.fail(c, "an item's score depends on the other candidates scored with it")
        prior_scores = model.reward(model.prior(), d.prompt[0], d.chosen)
        if not np.isfinite(prior_scores).all():
            raise self.fail(c, "scores for the cold-start prior are not finite")

    def check_onboarding_frozen(self) -> None:
        c, model = "onboarding_frozen", self.model
        before = {k: np.array(v, copy=True) for k, v in model.state_dict().items()}
        users_before = {u: np.array(st.vector, copy=True) for u, st in model.users.items()}
        shots = list(self.split.unseen_shots.values())
        first = model.embed_user(shots[0])
        if np.asarray(first.vector).shape != (model.vector_dim,):
            raise self.fail(
                c,
                f"embed_user returned a vector of shape {np.shape(first.vector)}, expected ({model.vector_dim},)",
            )
        if not np.isfinite(first.vector).all():
            raise self.fail(c, "embed_user returned a non-finite vector")
        for d in shots[1:]:
            model.embed_user(d)
        after = model.state_dict()
        if set(after) != set(before):
            raise self.fail(
                c,
                f"onboarding changed the shared parameter names: {sorted(set(after) ^ set(before))}",
            )
        changed = [
            k
            for k in before
            if before[k].shape != np.shape(after[k]) or not np.array_equal(before[k], after[k])
        ]
        if changed:
            raise self.fail(c, f"onboarding changed shared parameters {changed[:5]}")
        moved = [
            u
            for u, v in users_before.items()
            if u not in model.users or not np.array_equal(v, model.users[u].vector)
        ]
        if moved:
            raise self.fail(c, f"onboarding changed the vectors of training users {moved[:5]}")
        again = model.embed_user(shots[0])
        if not np.allclose(
            first.vector, again.vector, atol=self.s.score_atol, rtol=self.s.score_rtol
        ):
            raise self.fail(c, "onboarding the same comparisons twice gave different vectors")

    def check_save_load(self) -> None:
        c, model = "save_load", self.model
        with tempfile.TemporaryDirectory(prefix="persona-conformance-") as tmp:
            path = model.save(f"{tmp}/model")
            try:
                loaded = type(model).load(path)
            except Exception as e:
                raise self.fail(c, f"load of a saved model raised {type(e).__name__}: {e}") from e
        if loaded.config != model.config:
            raise self.fail(
                c, f"config changed across save/load: {model.config!r} -> {loaded.config!r}"
            )
        if sorted(loaded.users) != sorted(model.users):
            raise self.fail(c, "the training users changed across save/load")
        if (loaded.dim, loaded.prompt_dim) != (model.dim, model.prompt_dim):
            raise self.fail(c, "feature dimensions changed across save/load")
        a, b = self.probe(model), self.probe(loaded)
        if not np.allclose(a, b, atol=self.s.score_atol, rtol=self.s.score_rtol):
            worst = float(np.max(np.abs(a - b)))
            raise self.fail(
                c,
                f"scores differ after save/load (max difference {worst:.3g}), for training or onboarded users",
            )
        with tempfile.TemporaryDirectory(prefix="persona-conformance-") as empty:
            _expect_error(
                self.label,
                c,
                "load() of an empty directory",
                NoModelError,
                lambda: self.cls.load(empty),
            )

    def expect_errors(
        self, check: str, cases: list[tuple[str, type[Exception], Callable[[], Any]]]
    ) -> None:
        """Each ``(what, error class, call)``: the call must raise that error class."""
        for what, kind, fn in cases:
            _expect_error(self.label, check, what, kind, fn)

    def check_config_validation(self) -> None:
        c, bogus, cls = "config_validation", "no_such_option_for_conformance", self.cls
        self.expect_errors(
            c,
            [
                (
                    f"{self.label}({{{bogus!r}: 1}})",
                    InvalidInputError,
                    lambda: cls({**self.config, bogus: 1}),
                ),
                (
                    f"{self.label}({bogus}=1)",
                    InvalidInputError,
                    lambda: cls(self.config, **{bogus: 1}),
                ),
                (f"{self.label}('not a mapping')", InvalidInputError, lambda: cls("not a mapping")),
            ],
        )
        cfg = self.new().config
        again = self.cls(json.loads(json.dumps(cfg.model_dump(mode="json")))).config
        if again != cfg:
            raise self.fail(
                c, f"the config does not survive a JSON round trip: {cfg!r} -> {again!r}"
            )

    def check_bad_inputs(self) -> None:
        train, model, d0 = self.split.train, self.model, next(iter(self.split.seen_test.values()))
        state, shots = model.prior(), next(iter(self.split.unseen_shots.values()))
        wide = PreferenceData(
            user_ids=shots.user_ids,
            user_index=shots.user_index,
            prompt=shots.prompt,
            chosen=np.pad(shots.chosen, ((0, 0), (0, 1))),
            rejected=np.pad(shots.rejected, ((0, 0), (0, 1))),
        )
        nan_items = d0.chosen.copy()
        nan_items[0, 0] = np.nan
        wrong_vector = np.zeros(model.vector_dim + 3, np.float32)
        wide_prompt = np.zeros(d0.prompt_dim + 1, np.float32)
        bad = InvalidInputError
        self.expect_errors(
            "bad_inputs",
            [
                ("fit() on zero comparisons", bad, lambda: self.new().fit(train.subset([]))),
                (
                    "reward() before fit",
                    NoModelError,
                    lambda: self.new().reward(state, d0.prompt, d0.chosen),
                ),
                (
                    "embed_user() on zero comparisons",
                    bad,
                    lambda: model.embed_user(shots.subset([])),
                ),
                ("embed_user() on two users' comparisons", bad, lambda: model.embed_user(train)),
                (
                    "embed_user() with item features of another dimension",
                    bad,
                    lambda: model.embed_user(wide),
                ),
                (
                    "reward() with item features of another dimension",
                    bad,
                    lambda: model.reward(state, d0.prompt[0], wide.chosen),
                ),
                (
                    "reward() with prompt features of another dimension",
                    bad,
                    lambda: model.reward(state, wide_prompt, d0.chosen),
                ),
                (
                    "reward() with 1-d items",
                    bad,
                    lambda: model.reward(state, d0.prompt[0], d0.chosen[0]),
                ),
                (
                    "reward() with NaN features",
                    bad,
                    lambda: model.reward(state, d0.prompt[0], nan_items),
                ),
                (
                    "reward() with a user vector of the wrong length",
                    bad,
                    lambda: model.reward(wrong_vector, d0.prompt[0], d0.chosen),
                ),
                (
                    "user_state() of an unknown user",
                    UnknownUserError,
                    lambda: model.user_state("no-such-user"),
                ),
            ],
        )

    def check_determinism(self) -> None:
        c = "determinism"
        a = self.probe(self.model)
        _scramble_global_rngs(12345)
        other = self.new()
        other.fit(self.split.train)
        b = self.probe(other)
        if not np.allclose(a, b, atol=self.s.score_atol, rtol=self.s.score_rtol):
            worst = float(np.max(np.abs(a - b)))
            raise self.fail(
                c,
                f"two fits with the same config (and seed) gave different scores (max difference {worst:.3g}); seed every random source from the config, not the global state",
            )

    def check_user_sensitivity(self) -> None:
        c, model, split = "user_sensitivity", self.model, self.split
        if not self.personalized:
            return
        states = {u: model.user_state(u) for u in split.seen_test}
        absolute, relative = swap_sensitivity(model, states, split.seen_test, seed=self.s.seed)
        self.metrics["swap_sensitivity"] = absolute
        self.metrics["swap_sensitivity_relative"] = relative
        if relative < self.s.min_swap_sensitivity:
            raise self.fail(
                c,
                f"swapping a user's state for another user's changes their reward margins by "
                f"{absolute:.3g} on average ({relative:.3f} of a margin, below "
                f"{self.s.min_swap_sensitivity}) on two groups with opposite tastes: the reward "
                "ignores the user (posterior collapse, for a latent-variable model)",
            )

    def check_prompt_dependence(self) -> None:
        c, model, split = "prompt_dependence", self.model, self.split
        if not self.reads_prompt:
            return
        states = {u: model.user_state(u) for u in split.seen_test}
        correlation, change = prompt_correlation(
            model, split.population, states, split.seen_test, split.train
        )
        self.metrics["prompt_correlation"] = correlation
        self.metrics["prompt_change"] = change
        if change <= self.s.score_atol:
            raise self.fail(
                c,
                "the backend declares reads_prompt, but it scores the same responses alike under "
                "prompts of two topics that the population tells apart: the reward ignores the prompt",
            )
        if correlation < self.s.min_prompt_correlation:
            raise self.fail(
                c,
                f"from a prompt of one topic to one of the other, the scores of the same responses "
                f"change unlike the true reward's (correlation {correlation:.3f} < "
                f"{self.s.min_prompt_correlation})",
            )

    def check_opposite_users(self) -> None:
        c, model, split = "opposite_users", self.model, self.split
        if not self.personalized:
            return
        states = {u: model.embed_user(d) for u, d in split.unseen_shots.items()}
        ids = {g: [u for u in states if split.groups[u] == g] for g in (0, 1)}
        if not (ids[0] and ids[1]):
            raise self.fail(c, "the population has no unseen users of both groups (settings)")
        shares, sizes = [], []
        for a in ids[0]:
            for b in ids[1]:
                for u in (a, b):
                    share, n = opposite_agreement(
                        model,
                        split.population,
                        (a, states[a]),
                        (b, states[b]),
                        split.unseen_test[u],
                    )
                    shares.append(share * n)
                    sizes.append(n)
        agreement = float(np.sum(shares) / max(np.sum(sizes), 1))
        self.metrics["opposite_agreement"] = agreement
        if agreement < self.s.min_opposite_agreement:
            raise self.fail(
                c,
                f"on the pairs two onboarded users of opposite groups truly disagree about, each "
                f"got their own preferred response (the other's dispreferred) on {agreement:.3f} "
                f"of them (< {self.s.min_opposite_agreement})",
            )

    def run(self, check: str) -> None:
        if check not in CHECKS:
            raise ValueError(f"unknown conformance check {check!r}; known: {', '.join(CHECKS)}")
        getattr(self, f"check_{check}")()


def run_conformance(
    backend_cls: type,
    config: dict[str, Any] | None = None,
    settings: ConformanceSettings | None = None,
    checks: tuple[str, ...] = CHECKS,
) -> ConformanceReport:
    """Run every check on ``backend_cls``; the report lists what passed and why others failed."""
    run = ConformanceRun(backend_cls, config, settings)
    report = ConformanceReport(backend=run.label)
    t0 = time.perf_counter()
    for check in checks:
        try:
            run.run(check)
        except ConformanceFailure as e:
            report.failed[check] = str(e)
        except Exception as e:  # a crash inside the backend is a failure of that check
            report.failed[check] = f"[{run.label}] {check}: raised {type(e).__name__}: {e}"
        else:
            report.passed.append(check)
    report.metrics = dict(run.metrics)
    report.seconds = time.perf_counter() - t0
    return report
