"""``persona bench reward``: the reward-model benchmark of the design notes.

For each of ``seeds`` seeds (``seed``, ``seed + 1``, ...), each seed redrawing the user split,
the shots and every backend's own seed:

1. The protocol (:func:`.protocol.split_by_text`) splits users into seen and unseen; seen users'
   comparisons into training and test pairs that share no text; each unseen user's into 20
   candidate shots and a test set fixed before any ``k`` is drawn (their comparisons sharing no
   text with the 20).
2. Each backend is fitted on the seen users' training pairs; each seen user is scored on their
   test pairs with their fitted state (*seen*, new split).
3. The fitted model is saved and registered with an :class:`~persona_engine.engine.Engine`
   (:mod:`.engine_path`), which loads it back; each unseen user records their shots in prefixes
   and is onboarded through :meth:`Engine.onboard` after the first ``k`` for each ``k`` (so
   ``k = 1`` gets the cold-start rule, as in the product); the state of the returned profile is
   scored with the loaded backend's ``reward`` on the user's fixed test set.
4. For the first ``old_split_seeds`` seeds the backend is also fitted on the old split's seen
   training pairs (70/30 by comparison, :func:`.protocol.split_by_comparison`) and scored on its
   seen test pairs (*seen, old split*), so the change of protocol is visible.

Accuracy is reported per user (the mean of each user's accuracy: the headline) and pooled, as
the mean over seeds with a 95% two-stage bootstrap interval over seeds and users
(:mod:`.metrics`), and every seed's figure. The *slope* is the per-user accuracy at the largest
``k`` minus at the smallest (20 minus 1), with a paired interval from per-user differences;
differences to ``bt`` and ``bt_residual`` are paired the same way. Cost: fit seconds, the median
milliseconds of :meth:`Engine.onboard` at 10 shots (and of ``embed_user`` alone), scores per
second. Fit metrics are kept per seed and averaged where numeric.

Features are encoded once through the store's feature cache (a persistent SQLite file, by default
``<user dir>/cache/bench_features.db``), so a second run on the same data encodes nothing.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..backends import PreferenceData, RewardBackend, UserState
from ..errors import InvalidInputError
from ..ingest import iter_jsonl
from ..schemas import Comparison, content_hash
from .engine_path import BenchEngine, baselines_registered
from .metrics import UserCounts, correct
from .protocol import ProtocolConfig, RewardSplit, split_by_comparison, split_by_text

ONBOARD_SHOTS = 10
THROUGHPUT_ROWS = 50_000


@dataclass
class RewardBenchOptions:
    data: Path
    backends: list[str] = field(default_factory=lambda: ["bt", "per_user", "bt_residual"])
    shots: list[int] = field(default_factory=lambda: [1, 5, 10, 20])
    seed: int = 0
    seeds: int = 3
    old_split_seeds: int = 1
    encoder: str = "minilm"
    encoder_config: dict[str, Any] = field(default_factory=dict)
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    cold_start: dict[str, Any] = field(default_factory=dict)
    cache: Path | None = None
    backend_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    dataset: str | None = None
    skip_bad: bool = False
    blas_threads: int | None = 1
    progress: bool = False

    def seed_list(self) -> list[int]:
        return [self.seed + i for i in range(self.seeds)]


def load_comparisons(path: Path, *, skip_bad: bool = False) -> tuple[list[Comparison], list[str]]:
    """The comparisons of a JSONL file in the interchange format, and notes on skipped lines.
    A bad line (e.g. an empty response) is an error unless ``skip_bad``."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"no such file: {path}")
    comps, bad = [], []
    for lineno, item in iter_jsonl(path):
        if isinstance(item, Exception):
            if not skip_bad:
                raise InvalidInputError(
                    f"{path.name} line {lineno}: {item} (pass skip_bad / --skip-bad to leave such lines out)"
                )
            bad.append(f"line {lineno}: {item}")
            continue
        comps.append(item)
    if not comps:
        raise InvalidInputError(f"{path} holds no comparisons")
    notes = [f"{len(bad)} invalid lines left out (first: {bad[0]})"] if bad else []
    return comps, notes


def backend_class(name: str) -> type[RewardBackend]:
    """A baseline by its key, else an installed backend plugin by its name."""
    from .baselines import PerUserBackend, ResidualBackend

    if name == "per_user":
        return PerUserBackend
    if name == "bt_residual":
        return ResidualBackend
    from ..plugins import get_backend

    return get_backend(name)


def seeded_config(cls: type[RewardBackend], options: dict[str, Any], seed: int) -> dict[str, Any]:
    """The backend's options with the run's seed where the backend has a seed (unless given)."""
    config = {k: (dict(v) if isinstance(v, dict) else v) for k, v in options.items()}
    fields = cls.Config.model_fields
    if "training" in fields:
        config.setdefault("training", {}).setdefault("seed", seed)
    elif "seed" in fields:
        config.setdefault("seed", seed)
    return config


def with_users(data: PreferenceData, owners: Sequence[str]) -> PreferenceData:
    """``data`` with row ``i`` belonging to ``owners[i]`` (a seed's pseudo-users)."""
    ids = list(dict.fromkeys(owners))
    pos = {u: i for i, u in enumerate(ids)}
    return replace(data, user_ids=ids, user_index=np.array([pos[o] for o in owners], np.int64))


@dataclass
class SeedData:
    """One seed's split of the encoded comparisons."""

    seed: int
    data: PreferenceData
    split: RewardSplit
    old: RewardSplit | None
    comps: list[Comparison]


@dataclass
class Prepared:
    seeds: list[SeedData]
    cache: Any  # the feature-cache Store, open
    encoder: Any
    encode_s: float
    distinct_texts: int
    load_notes: list[str]


def _open_cache(options: RewardBenchOptions) -> Any:
    from ..paths import cache_dir
    from ..store import Store

    return Store(Path(options.cache) if options.cache else cache_dir() / "bench_features.db")


def prepare(options: RewardBenchOptions) -> Prepared:
    """Split for every seed, then encode the union of the comparisons any split uses."""
    from ..engine import Engine

    comps, load_notes = load_comparisons(options.data, skip_bad=options.skip_bad)
    owners = [c.user_id for c in comps]
    ch = [content_hash(c.chosen) for c in comps]
    rj = [content_hash(c.rejected) for c in comps]
    seeds = options.seed_list()
    splits = {s: split_by_text(owners, ch, rj, replace(options.protocol, seed=s)) for s in seeds}
    olds = {
        s: split_by_comparison(owners, replace(options.protocol, seed=s), ch, rj)
        for s in seeds[: options.old_split_seeds]
    }
    used = np.unique(np.concatenate([sp.used_rows() for sp in [*splits.values(), *olds.values()]]))
    new_index = -np.ones(len(comps), dtype=np.int64)
    new_index[used] = np.arange(len(used))
    used_comps = [comps[i] for i in used]
    cache = _open_cache(options)
    try:
        engine = Engine(
            home=Path(cache.path).parent,
            store=cache,
            encoder=options.encoder,
            encoder_config=options.encoder_config,
        )
        enc = engine.encoder()
        started = time.perf_counter()
        data = engine.preference_data(used_comps, encoder=enc, progress=options.progress)
        encode_s = time.perf_counter() - started
    except BaseException:
        cache.close()
        raise
    out = []
    for s in seeds:
        user_of_row = [splits[s].user_of_row[i] for i in used]
        old = olds.get(s)
        out.append(
            SeedData(
                seed=s,
                data=with_users(data, user_of_row),
                split=splits[s].remapped(new_index, user_of_row),
                old=None if old is None else old.remapped(new_index, user_of_row),
                comps=used_comps,
            )
        )
    distinct = len(set(data.chosen_hash or []) | set(data.rejected_hash or []))
    return Prepared(out, cache, enc, encode_s, distinct, load_notes)


@dataclass
class SeedRun:
    """What one backend measured on one seed."""

    seed: int
    seen: UserCounts
    seen_old: UserCounts | None
    unseen: dict[int, UserCounts]
    fit_s: float
    fit_metrics: dict[str, Any]
    onboard_ms: list[float]
    embed_ms: list[float]
    scores_per_s: float
    states: dict[tuple[str, int], UserState] = field(default_factory=dict)
    model: RewardBackend | None = None


def _logits(
    model: RewardBackend, state: UserState, data: PreferenceData, rows: np.ndarray
) -> np.ndarray:
    return model.reward(state, data.prompt[rows], data.chosen[rows]) - model.reward(
        state, data.prompt[rows], data.rejected[rows]
    )


def _throughput(
    model: RewardBackend, data: PreferenceData, states: list[UserState], seed: int
) -> float:
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(data), THROUGHPUT_ROWS)
    vecs = np.stack([s.vector for s in states]).astype(np.float32)
    vectors = vecs[rng.integers(0, len(vecs), THROUGHPUT_ROWS)]
    prompt, items = data.prompt[rows], data.chosen[rows]
    best = np.inf
    for _ in range(3):
        started = time.perf_counter()
        model.reward_batch(vectors, prompt, items)
        best = min(best, time.perf_counter() - started)
    return THROUGHPUT_ROWS / best


def _seen_scores(model: RewardBackend, data: PreferenceData, split: RewardSplit) -> UserCounts:
    """Seen users' test pairs scored with their fitted states (users without test pairs left out)."""
    hits = {}
    for u in split.seen_users:
        test = split.seen_test[u]
        if len(test):
            state = model.users.get(u) or model.prior()
            hits[u] = correct(_logits(model, state, data, test))
    return UserCounts.from_scores(hits)


def _simple_metrics(metrics: dict[str, Any] | None) -> dict[str, Any]:
    return {
        k: v
        for k, v in (metrics or {}).items()
        if isinstance(v, (int, float, str, bool, type(None)))
    }


def evaluate_seed(
    name: str,
    sd: SeedData,
    options: RewardBenchOptions,
    bench: BenchEngine,
    *,
    keep_states: bool = False,
) -> SeedRun:
    """Fit one backend on one seed's seen training pairs, score seen users, onboard and score
    every unseen user at every ``k`` through the engine, and (old-split seeds) the old seen split."""
    data, split = sd.data, sd.split
    cls = backend_class(name)
    config = seeded_config(cls, options.backend_options.get(name, {}), sd.seed)
    model = cls(config)
    train = data.subset(split.train_rows())
    started = time.perf_counter()
    metrics = model.fit(train, progress=options.progress)
    fit_s = time.perf_counter() - started
    seen = _seen_scores(model, data, split)

    record = bench.register(model, name=name, seed=sd.seed, n_comparisons=len(train))
    served = bench.load(record)
    ks = sorted(set(options.shots) | {ONBOARD_SHOTS})
    hits: dict[int, dict[str, np.ndarray]] = {k: {} for k in options.shots}
    onboard_ms, embed_ms, last_states = [], [], []
    states: dict[tuple[str, int], UserState] = {}
    for j, u in enumerate(split.unseen_users):
        pool = split.unseen_pool[u]
        got = bench.onboard_prefixes(
            record, f"bench-s{sd.seed}-{name}-{j}", [sd.comps[i] for i in pool], ks
        )
        test = split.unseen_test[u]
        for k in options.shots:
            hits[k][u] = correct(_logits(served, got[k][0], data, test))
            if keep_states:
                states[(u, k)] = got[k][0]
        last_states.append(got[max(options.shots)][0])
        onboard_ms.append(got[ONBOARD_SHOTS][1])
        shot_data = data.subset(pool[:ONBOARD_SHOTS])
        started = time.perf_counter()
        served.embed_user(shot_data)
        embed_ms.append(1000 * (time.perf_counter() - started))

    seen_old = None
    if sd.old is not None:
        old_model = cls(config)
        old_model.fit(data.subset(sd.old.train_rows()), progress=options.progress)
        seen_old = _seen_scores(old_model, data, sd.old)
    return SeedRun(
        seed=sd.seed,
        seen=seen,
        seen_old=seen_old,
        unseen={k: UserCounts.from_scores(h) for k, h in hits.items()},
        fit_s=fit_s,
        fit_metrics=_simple_metrics(metrics),
        onboard_ms=onboard_ms,
        embed_ms=embed_ms,
        scores_per_s=_throughput(served, data, last_states, sd.seed),
        states=states,
        model=served if keep_states else None,
    )


def _blas_limit(threads: int | None) -> Any:
    """Limit numpy's BLAS threads for the run. Small per-user solves get slower, not faster, with
    more BLAS threads on a small shared machine; torch keeps its own thread setting."""
    if threads is None:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return contextlib.nullcontext()
    return threadpool_limits(limits=threads, user_api="blas")


def check_options(options: RewardBenchOptions) -> None:
    """Fail on bad options before any encoding."""
    if not options.backends:
        raise InvalidInputError("name at least one backend")
    if not options.shots or min(options.shots) < 1:
        raise InvalidInputError("shots must be positive integers")
    if options.seeds < 1 or options.old_split_seeds < 0:
        raise InvalidInputError("seeds must be at least 1 and old_split_seeds at least 0")
    if max(options.shots) > options.protocol.candidate_shots:
        options.protocol = replace(options.protocol, candidate_shots=max(options.shots))
    for name in options.backends:
        backend_class(name)  # unknown names fail before any encoding


def run_seeds(
    options: RewardBenchOptions, prepared: Prepared, *, log: Any = None, keep_states: bool = False
) -> dict[str, list[SeedRun]]:
    """Every backend on every seed: ``{backend: [SeedRun per seed]}``."""
    say = log or (lambda msg: None)
    runs: dict[str, list[SeedRun]] = {name: [] for name in options.backends}
    with (
        baselines_registered(),
        BenchEngine(
            prepared.cache,
            prepared.encoder,
            encoder_name=options.encoder,
            encoder_config=options.encoder_config,
            cold_start=options.cold_start,
        ) as bench,
    ):
        for sd in prepared.seeds:
            say(
                f"seed {sd.seed}: {len(sd.split.seen_users)} seen / {len(sd.split.unseen_users)} unseen users"
            )
            for name in options.backends:
                run = evaluate_seed(name, sd, options, bench, keep_states=keep_states)
                runs[name].append(run)
                k_hi = max(options.shots)
                say(
                    f"  {name}: fit {run.fit_s:.1f}s, seen {run.seen.per_user_accuracy()}, "
                    f"unseen k={k_hi} {run.unseen[k_hi].per_user_accuracy()}"
                )
    return runs


def run_reward_benchmark(options: RewardBenchOptions, *, log: Any = None) -> dict[str, Any]:
    """Run the benchmark and return the result (the RESULT.json document)."""
    from .reward_summary import result_document

    check_options(options)
    with _blas_limit(options.blas_threads):
        started = time.perf_counter()
        prepared = prepare(options)
        try:
            (log or (lambda m: None))(
                f"{len(prepared.seeds[0].data)} comparisons encoded in {prepared.encode_s:.1f}s"
            )
            runs = run_seeds(options, prepared, log=log)
        finally:
            prepared.cache.close()
        return result_document(options, prepared, runs, time.perf_counter() - started)
