"""``persona bench onboarding``: cold-start priors and active onboarding on real users.

Data: comparisons in the interchange format, split by the reward protocol
(:mod:`persona_engine.bench.protocol`): the backend is fitted on the seen users' training
comparisons; the unseen users are the new users. For POPQUORN offensiveness, ``--ratings
raw_data.csv`` adds the annotators' demographics (``user_id`` is the same id as in
``pairs.jsonl``) and their 1-5 ratings.

**Cold start** (0-5 answers): for each unseen user and k = 0..5, ``draws`` seeded draws of k shots
from their shot pool; accuracy on their test comparisons whose two texts are not among the
shots (new-item), averaged per user, then over users with a bootstrap CI. Priors compared:
``population`` (``backend.prior()``), ``attributes`` (ridge from one-hot demographics to the
fitted users' vectors), and for k >= 1 ``embed`` (the backend's own onboarding from the k shots),
``neighbours`` (fitted users weighed by the likelihood of the shots) and ``neighbours+attributes``.

**Active onboarding**: per unseen user, a pool of answerable pairs and a test set of pairs whose
texts are not in the pool. With ratings, the user's rated comments are split in two halves and
every differently rated pair within a half is used; otherwise the protocol's shot pool and test
comparisons. Starting from no answers, the user answers one pool pair per step, chosen at
random or by :mod:`persona_engine.active` (the backend's posterior when it has one, else the
generic population+bootstrap method); after each answer the user is re-estimated with the
engine's rule (prior at 0 answers, neighbour prior at 1, ``embed_user`` from 2 on).
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..active import plausible_vectors, select_queries
from ..backends.base import RewardBackend, UserState
from ..backends.data import PreferenceData
from ..coldstart import AttributePrior, neighbour_posterior
from .protocol import ProtocolConfig, make_split, new_item_mask, texts_of

DEMOGRAPHICS = ("gender", "race", "age", "occupation", "education")
PROMPT = "Which comment is more acceptable?"


@dataclass
class OnboardingBenchConfig:
    pairs: str
    ratings: str | None = None
    backend: str = "lore"
    backend_options: dict[str, Any] = field(default_factory=dict)
    encoder: str = "minilm"
    encoder_options: dict[str, Any] = field(default_factory=dict)
    shots: tuple[int, ...] = (0, 1, 2, 3, 4, 5)
    draws: int = 5
    active_steps: int = 10
    random_repeats: int = 3
    seed: int = 0
    cache: str | None = None


def _bootstrap(values: np.ndarray, seed: int, n: int = 1000) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (n, len(values)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def _accuracy(backend: RewardBackend, state: UserState, data: PreferenceData) -> float:
    return float((backend.preference_logits(state, data) > 0).mean())


class _Features:
    """Item features through the feature cache of a bench store."""

    def __init__(self, cfg: OnboardingBenchConfig):
        from ..paths import user_dir
        from ..plugins import get_plugin_manager
        from ..store import Store

        path = Path(cfg.cache) if cfg.cache else user_dir() / "cache" / "bench_features.db"
        self.store = Store(path)
        self.encoder = get_plugin_manager().get("encoders", cfg.encoder)(cfg.encoder_options)
        if self.encoder.reads_prompt:
            from ..errors import InvalidInputError

            raise InvalidInputError(
                f"the onboarding scale bench keys features by text and takes prompt-free encoders "
                f"(minilm, hashing); {cfg.encoder!r} reads the prompt: use `persona bench reward`"
            )

    def __call__(self, texts: list[str]) -> dict[str, np.ndarray]:
        from ..encoders.cache import encode_cached

        distinct = list(dict.fromkeys(texts))
        feats = encode_cached(self.store, self.encoder, distinct, progress=True)
        return dict(zip(distinct, feats))


def _to_data(
    rows: list[dict[str, Any]], feats: dict[str, np.ndarray], names: list[str]
) -> PreferenceData:
    from ..schemas import content_hash

    users: dict[str, int] = {}
    for r in rows:
        users.setdefault(r["user_id"], len(users))
    return PreferenceData(
        user_ids=list(users),
        user_index=np.array([users[r["user_id"]] for r in rows], dtype=np.int64),
        prompt=np.stack([feats[r["prompt"]] for r in rows]),
        chosen=np.stack([feats[r["chosen"]] for r in rows]),
        rejected=np.stack([feats[r["rejected"]] for r in rows]),
        chosen_hash=[content_hash(r["chosen"]) for r in rows],
        rejected_hash=[content_hash(r["rejected"]) for r in rows],
        feature_names=names,
    )


def load_demographics(
    pairs: list[dict[str, Any]], ratings_path: str | None
) -> dict[str, dict[str, str]]:
    """Annotator demographics by user id: raw_data.csv (user_id column = pairs.jsonl user_id),
    else the ``meta.annotator`` of the pairs."""
    demo: dict[str, dict[str, str]] = {}
    if ratings_path:
        with open(ratings_path, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                demo.setdefault(
                    str(row["user_id"]), {k: row[k] for k in DEMOGRAPHICS if row.get(k)}
                )
    for p in pairs:
        ann = (p.get("meta") or {}).get("annotator")
        if isinstance(ann, dict):
            demo.setdefault(str(p["user_id"]), {k: str(v) for k, v in ann.items()})
    return demo


def load_ratings(path: str) -> dict[str, dict[str, float]]:
    """Each user's ratings: {user: {comment text: offensiveness}}."""
    out: dict[str, dict[str, float]] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            try:
                out.setdefault(str(row["user_id"]), {})[row["text"]] = float(row["offensiveness"])
            except (TypeError, ValueError):
                continue
    return out


def run_onboarding_bench(cfg: OnboardingBenchConfig, *, log: Any = print) -> dict[str, Any]:
    from ..plugins import get_plugin_manager
    from .scale_plugin import register_scale_plugins

    register_scale_plugins()  # lowrank-laplace is a valid --backend here too

    t_start = time.perf_counter()
    pairs = [
        json.loads(line)
        for line in Path(cfg.pairs).read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    for p in pairs:
        p["user_id"] = str(p["user_id"])
        p.setdefault("prompt", "")
    ratings = load_ratings(cfg.ratings) if cfg.ratings else {}
    demo = load_demographics(pairs, cfg.ratings)
    features = _Features(cfg)
    texts = (
        [p["prompt"] for p in pairs]
        + [t for p in pairs for t in (p["chosen"], p["rejected"])]
        + [t for r in ratings.values() for t in r]
        + [PROMPT]
    )
    feats = features(texts)
    names = features.encoder.feature_names
    data = _to_data(pairs, feats, names)
    split = make_split([p["user_id"] for p in pairs], ProtocolConfig(seed=cfg.seed))
    backend = get_plugin_manager().get("backends", cfg.backend)(cfg.backend_options)
    train = data.subset(split.train_rows())
    t0 = time.perf_counter()
    backend.fit(train)
    fit_s = time.perf_counter() - t0
    log(
        f"fitted {cfg.backend} on {len(train)} comparisons of {len(split.seen_users)} users in {fit_s:.0f}s"
    )
    fitted = [u for u in split.seen_users if u in backend.users]
    population = np.stack([backend.users[u].vector for u in fitted]) if backend.vector_dim else None
    attr_prior = None
    if population is not None and all(u in demo for u in fitted):
        attr_prior = AttributePrior.fit([demo[u] for u in fitted], population, seed=cfg.seed)
    out: dict[str, Any] = {
        "config": asdict(cfg),
        "data": {
            "comparisons": len(data),
            "users": data.n_users,
            "seen": len(split.seen_users),
            "unseen": len(split.unseen_users),
            "encoder": features.encoder.id,
        },
        "fit_seconds": fit_s,
        "vector_dim": backend.vector_dim,
        "backend_has_uncertainty": backend.prior().uncertainty is not None,
        "attribute_prior": None,
    }
    if attr_prior is not None and population is not None:
        spread = max(float(population.var(axis=0).sum()), 1e-12)
        out["attribute_prior"] = {
            "alpha": attr_prior.alpha,
            "columns": len(attr_prior.encoder.columns),
            "cv_residual_var_over_population_var": float(attr_prior.residual_var.sum()) / spread,
        }
    out["cold_start"] = _cold_start(cfg, backend, data, split, population, attr_prior, demo, log)
    pools = _user_pools(cfg, ratings, split, pairs)
    if pools and backend.vector_dim:
        out["active"] = _active(cfg, backend, feats, pools, population, names, log)
    out["seconds"] = time.perf_counter() - t_start
    return out


def _cold_start(cfg, backend, data, split, population, attr_prior, demo, log) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    methods = ["population", "attributes", "embed", "neighbours", "neighbours+attributes"]
    per_user: dict[str, dict[int, list[float]]] = {m: {k: [] for k in cfg.shots} for m in methods}
    rng = np.random.default_rng(cfg.seed)
    for u in split.unseen_users:
        pool, test_rows = split.unseen_pool[u], split.unseen_test[u]
        attr_state = (
            attr_prior.state(demo[u])
            if attr_prior is not None and u in demo and attr_prior.encoder.covers(demo[u])
            else None
        )
        for k in cfg.shots:
            scores: dict[str, list[float]] = {m: [] for m in methods}
            for _ in range(cfg.draws if k else 1):
                shots = (
                    np.sort(rng.choice(pool, min(k, len(pool)), replace=False))
                    if k
                    else np.zeros(0, dtype=np.int64)
                )
                known = texts_of(shots, data.chosen_hash, data.rejected_hash)
                keep = test_rows[
                    new_item_mask(
                        [data.chosen_hash[i] for i in test_rows],
                        [data.rejected_hash[i] for i in test_rows],
                        known,
                    )
                ]
                if not len(keep):
                    continue
                test = data.subset(keep)
                scores["population"].append(_accuracy(backend, backend.prior(), test))
                if attr_state is not None:
                    scores["attributes"].append(_accuracy(backend, attr_state, test))
                if k and backend.vector_dim:
                    sd = data.subset(shots)
                    scores["embed"].append(_accuracy(backend, backend.embed_user(sd), test))
                    scores["neighbours"].append(
                        _accuracy(backend, neighbour_posterior(backend, population, sd), test)
                    )
                    if attr_state is not None:
                        scores["neighbours+attributes"].append(
                            _accuracy(
                                backend,
                                neighbour_posterior(backend, population, sd, attr_state),
                                test,
                            )
                        )
            for m in methods:
                if scores[m]:
                    per_user[m][k].append(float(np.mean(scores[m])))
    table: dict[str, dict[str, Any]] = {}
    for m in methods:
        for k in cfg.shots:
            vals = np.asarray(per_user[m][k])
            if len(vals):
                lo, hi = _bootstrap(vals, cfg.seed)
                table.setdefault(m, {})[str(k)] = {
                    "accuracy": float(vals.mean()),
                    "ci95": [lo, hi],
                    "users": len(vals),
                }
    # paired difference attributes - population at k = 0 (same users, same test sets)
    diffs = {}
    for k in cfg.shots:
        a, p = np.asarray(per_user["attributes"][k]), np.asarray(per_user["population"][k])
        if len(a) and len(a) == len(p):
            lo, hi = _bootstrap(a - p, cfg.seed)
            diffs[str(k)] = {"mean": float((a - p).mean()), "ci95": [lo, hi]}
    log(
        "cold start (new-item accuracy): "
        + "; ".join(
            f"{m} k=0..: " + " ".join(f"{v['accuracy']:.3f}" for v in table[m].values())
            for m in table
        )
    )
    return {"accuracy": table, "attributes_minus_population": diffs}


def _rating_pairs(items: list[str], ratings: dict[str, float]) -> list[tuple[str, str]]:
    """(chosen, rejected) for every pair of ``items`` rated differently (less offensive is chosen)."""
    out = []
    for i in range(len(items)):
        for j in range(i + 1, len(items)):
            a, b = items[i], items[j]
            if ratings[a] != ratings[b]:
                out.append((a, b) if ratings[a] < ratings[b] else (b, a))
    return out


def _user_pools(
    cfg, ratings, split, pairs
) -> dict[str, tuple[str, list[tuple[str, str]], list[tuple[str, str]]]]:  # type: ignore[no-untyped-def]
    """Per unseen user: (prompt, pool pairs, test pairs), each pair (chosen, rejected).

    With ratings: the user's rated comments split in halves, every differently rated pair within
    a half. Without: the protocol's shot pool and the test comparisons holding no pool text.
    """
    out = {}
    for n_user, u in enumerate(split.unseen_users):
        if ratings:
            if len(ratings.get(u, {})) < 10:
                continue
            rated = sorted(ratings[u])
            order = np.random.default_rng([cfg.seed, 7, n_user]).permutation(len(rated))
            pool = _rating_pairs([rated[i] for i in order[: len(rated) // 2]], ratings[u])
            test = _rating_pairs([rated[i] for i in order[len(rated) // 2 :]], ratings[u])
            out[u] = (PROMPT, pool, test)
        else:
            pool = [(pairs[i]["chosen"], pairs[i]["rejected"]) for i in split.unseen_pool[u]]
            seen = {t for p in pool for t in p}
            test = [(pairs[i]["chosen"], pairs[i]["rejected"]) for i in split.unseen_test[u]]
            test = [t for t in test if t[0] not in seen and t[1] not in seen]
            out[u] = (pairs[split.unseen_pool[u][0]]["prompt"], pool, test)
    return out


def _active(cfg, backend, feats, pools, population, names, log) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    steps = cfg.active_steps
    strategies = ["random", "active-generic"] + (
        ["active-posterior"]
        if backend.prior().uncertainty is not None
        or any(s.uncertainty is not None for s in list(backend.users.values())[:1])
        else []
    )
    curves: dict[str, list[list[float]]] = {s: [] for s in strategies}
    users = list(pools)
    used = 0
    for n_user, u in enumerate(users):
        prompt, pool_pairs, test_pairs = pools[u]
        if len(pool_pairs) < steps or not test_pairs:
            continue
        used += 1
        prompt_f = feats[prompt]
        pool_items = list(dict.fromkeys(t for p in pool_pairs for t in p))
        test = _pairs_data(test_pairs, feats, prompt_f, names)
        pool_feats = np.stack([feats[t] for t in pool_items])
        pos = {t: i for i, t in enumerate(pool_items)}
        pool_idx = np.array([(pos[a], pos[b]) for a, b in pool_pairs], dtype=np.int64)
        for strategy in strategies:
            repeats = cfg.random_repeats if strategy == "random" else 1
            for rep in range(repeats):
                rng = np.random.default_rng([cfg.seed, 11, n_user, rep])
                curves[strategy].append(
                    _one_user_curve(
                        backend,
                        strategy,
                        steps,
                        pool_pairs,
                        pool_idx,
                        pool_feats,
                        prompt_f,
                        test,
                        population,
                        names,
                        feats,
                        rng,
                        seed=cfg.seed + rep,
                    )
                )
        if (n_user + 1) % 10 == 0:
            log(f"active: {n_user + 1}/{len(users)} users")
    result: dict[str, Any] = {"users": used, "steps": steps, "curves": {}, "minus_random": {}}
    per_user: dict[str, np.ndarray] = {}
    for s in strategies:
        arr = np.asarray(curves[s])
        if not len(arr):
            continue
        if s == "random":  # average the repeats of each user first
            arr = arr.reshape(-1, cfg.random_repeats, arr.shape[1]).mean(axis=1)
        per_user[s] = arr
        result["curves"][s] = {
            "accuracy": arr.mean(axis=0).tolist(),
            "ci95": [list(_bootstrap(arr[:, t], cfg.seed)) for t in range(arr.shape[1])],
            "users": len(arr),
        }
    for s, arr in per_user.items():  # paired: the same users, the same pools and test pairs
        if s != "random" and "random" in per_user:
            diff = arr - per_user["random"]
            result["minus_random"][s] = {
                "mean": diff.mean(axis=0).tolist(),
                "ci95": [list(_bootstrap(diff[:, t], cfg.seed)) for t in range(diff.shape[1])],
            }
    # answers (>= 1) each strategy needs before its mean accuracy first reaches the accuracy
    # random selection has after 2, 4, ... answers
    rand = np.asarray(result["curves"]["random"]["accuracy"])
    targets = sorted({round(float(rand[t]), 3) for t in range(2, len(rand), 2)})
    result["answers_to_reach"] = {
        s: {
            str(t): next(
                (i for i, a in enumerate(c["accuracy"]) if i >= 1 and round(a, 3) >= t), None
            )
            for t in targets
        }
        for s, c in result["curves"].items()
    }
    log(
        "active: "
        + "; ".join(
            f"{s}: " + " ".join(f"{a:.3f}" for a in c["accuracy"])
            for s, c in result["curves"].items()
        )
    )
    return result


def _pairs_data(
    pairs: list[tuple[str, str]],
    feats: dict[str, np.ndarray],
    prompt_f: np.ndarray,
    names: list[str],
) -> PreferenceData:
    n = len(pairs)
    return PreferenceData(
        ["u"],
        np.zeros(n, dtype=np.int64),
        np.tile(prompt_f, (n, 1)),
        np.stack([feats[a] for a, _ in pairs]),
        np.stack([feats[b] for _, b in pairs]),
        feature_names=names,
    )


def _estimate(
    backend: RewardBackend, answered: PreferenceData | None, population: np.ndarray | None
) -> UserState:
    """The engine's rule: prior at 0 answers, neighbour prior at 1, embed_user from 2."""
    if answered is None or len(answered) == 0:
        return backend.prior()
    if len(answered) <= 1 and population is not None:
        return neighbour_posterior(backend, population, answered)
    return backend.embed_user(answered)


def _one_user_curve(
    backend,
    strategy,
    steps,
    pool_pairs,
    pool_idx,
    pool_feats,
    prompt_f,
    test,
    population,
    names,
    feats,
    rng,
    seed,
) -> list[float]:  # type: ignore[no-untyped-def]
    answered: list[int] = []
    remaining = list(range(len(pool_pairs)))
    curve = []
    for _ in range(steps + 1):
        data = (
            _pairs_data([pool_pairs[i] for i in answered], feats, prompt_f, names)
            if answered
            else None
        )
        state = _estimate(backend, data, population)
        curve.append(_accuracy(backend, state, test))
        if len(curve) > steps or not remaining:
            break
        if strategy == "random":
            pick = remaining[int(rng.integers(len(remaining)))]
        else:
            vecs, w, _ = plausible_vectors(
                backend,
                state,
                data,
                population,
                use_uncertainty=strategy == "active-posterior",
                seed=seed,
            )
            # candidate pairs unordered: the answer decides which item is chosen
            cand = pool_idx[remaining]
            best = select_queries(backend, vecs, w, prompt_f, pool_feats, cand, 1)
            pick = remaining[[tuple(p) for p in cand.tolist()].index((best[0][0], best[0][1]))]
        answered.append(pick)
        remaining.remove(pick)
    return curve


def plot_onboarding(result: dict[str, Any], path: str | Path) -> Path:
    """Left: new-item accuracy of each prior against answers (0-5); right: active vs random."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 2 if result.get("active") else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4))
    axes = np.atleast_1d(axes)
    for m, rows in result["cold_start"]["accuracy"].items():
        ks = sorted(int(k) for k in rows)
        acc = [rows[str(k)]["accuracy"] for k in ks]
        lo = [rows[str(k)]["ci95"][0] for k in ks]
        hi = [rows[str(k)]["ci95"][1] for k in ks]
        axes[0].errorbar(
            ks,
            acc,
            yerr=[np.subtract(acc, lo), np.subtract(hi, acc)],
            marker="o",
            capsize=3,
            label=m,
        )
    axes[0].set(
        xlabel="answers (shots)",
        ylabel="new-item accuracy (unseen users)",
        title=f"cold start, {result['config']['backend']}",
    )
    axes[0].legend(fontsize=8)
    if panels == 2:
        for s, c in result["active"]["curves"].items():
            curve = np.asarray(c["accuracy"])
            band = np.asarray(c["ci95"])
            xs = np.arange(len(curve))
            axes[1].plot(xs, curve, marker="o", label=s)
            axes[1].fill_between(xs, band[:, 0], band[:, 1], alpha=0.15)
        axes[1].set(
            xlabel="answers",
            ylabel="accuracy on held-out new-item pairs",
            title="active vs random onboarding",
        )
        axes[1].legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
