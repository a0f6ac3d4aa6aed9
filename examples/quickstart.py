"""Quickstart: real annotators' preferences in, personalized rankings out, and what that buys.

1. ingest POPQUORN (262 real annotators' offensiveness judgements, as pairs) into a fresh store,
2. hold out 20% of the annotators and train the personalized backend ``hier`` and the
   non-personalized ``bt`` on the others,
3. onboard each held-out annotator from their first few comparisons through ``Engine.onboard``
   (no retraining: only their vector is fitted),
4. print (a) the same comments ranked for the two held-out annotators whose profiles disagree most,
   (b) per-user accuracy on each held-out annotator's other pairs, of ``hier`` against ``bt`` and
   against ``hier`` with no shots (the population prior), with paired bootstrap CIs, on pairs of
   texts new to the annotator (the headline) and on pairs that reuse a text from their shots,
   (c) where the full benchmark lives.

Run from the repository root (the data lives in ../shared/data beside it):

    python examples/quickstart.py [--shots 10] [--data PATH] [--home DIR]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "popquorn" / "pairs.jsonl"
PRIOR_USER = "quickstart-nobody"  # never has comparisons: scored with the population prior


def paired_ci(a: Sequence[float], b: Sequence[float], seed: int = 0) -> tuple[float, float, float]:
    """Mean of ``a - b`` over users and its 95% bootstrap CI (users resampled, pairs kept)."""
    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(2000, len(diff)))].mean(axis=1)
    return float(diff.mean()), float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def accuracy(engine: Any, user: str, pairs: Sequence[Any], model: str) -> float:
    """Share of ``pairs`` whose chosen text ``user`` scores above the rejected one (ties: half)."""
    by_prompt: dict[str, set[str]] = {}
    for c in pairs:
        by_prompt.setdefault(c.prompt, set()).update((c.chosen, c.rejected))
    score = {}
    for prompt, texts in by_prompt.items():
        ordered = sorted(texts)
        score.update(
            {
                (prompt, t): s
                for t, s in zip(ordered, engine.score(user, prompt, ordered, model=model))
            }
        )
    wins = [
        np.sign(score[(c.prompt, c.chosen)] - score[(c.prompt, c.rejected)]) * 0.5 + 0.5
        for c in pairs
    ]
    return float(np.mean(wins))


def verdict(lo: float, hi: float) -> str:
    """What a 95% CI of a difference says, in words."""
    if lo > 0:
        return "ahead"
    if hi < 0:
        return "behind"
    return "not distinguishable from 0 here"


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="comparisons as JSON Lines")
    parser.add_argument("--backend", default="hier", help="the personalized backend")
    parser.add_argument("--baseline", default="bt", help="the non-personalized baseline")
    parser.add_argument(
        "--home",
        type=Path,
        default=None,
        help="user directory for this run (default: a 'quickstart' folder in the persona_engine user dir)",
    )
    parser.add_argument(
        "--shots", type=int, default=10, help="first comparisons used to onboard a held-out user"
    )
    parser.add_argument("--encoder", default=None, help="text encoder (default: the engine's)")
    parser.add_argument("--limit", type=int, default=None, help="read only the first N lines")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from persona_engine import Engine, PersonaEngineError, user_dir

    if not args.data.is_file():
        print(f"error: no data at {args.data} (pass --data FILE.jsonl)", file=sys.stderr)
        return 2
    home = args.home or user_dir() / "quickstart"
    engine = Engine(home, **({"encoder": args.encoder} if args.encoder else {}))
    started = time.perf_counter()
    try:
        t0 = time.perf_counter()
        report = engine.ingest(args.data, limit=args.limit, progress=True)
        print(f"ingest: {report.summary()} ({time.perf_counter() - t0:.1f}s)")

        counts = engine.store.comparison_counts()
        users = sorted(u for u, n in counts.items() if n >= args.shots + 10)
        rng = random.Random(args.seed)
        rng.shuffle(users)
        held_out = sorted(users[: max(2, len(users) // 5)])
        train_users = [u for u in counts if u not in set(held_out)]
        models = {}
        for name in (args.backend, args.baseline):
            t0 = time.perf_counter()
            rec = engine.train(name, users=train_users, progress=True)
            models[name] = rec.id
            print(
                f"train: {rec.id} on {rec.data['comparisons']} comparisons of {rec.data['users']} users ({time.perf_counter() - t0:.1f}s)"
            )
        model = models[args.backend]

        acc: dict[str, dict[str, list[float]]] = {"new": {}, "reused": {}}
        onboard_ms = []
        for u in held_out:
            comps = engine.store.comparisons(u)
            rng.shuffle(comps)
            shots, rest = comps[: args.shots], comps[args.shots :]
            shot_texts = {t for c in shots for t in (c.chosen, c.rejected)}
            split = {
                "new": [c for c in rest if not {c.chosen, c.rejected} & shot_texts],
                "reused": [c for c in rest if {c.chosen, c.rejected} & shot_texts],
            }
            new_id = f"heldout-{u}"  # a fresh user carrying only the shots
            t1 = time.perf_counter()
            engine.onboard(
                new_id,
                [
                    {
                        "user_id": new_id,
                        "prompt": c.prompt,
                        "chosen": c.chosen,
                        "rejected": c.rejected,
                    }
                    for c in shots
                ],
                model=model,
            )
            onboard_ms.append((time.perf_counter() - t1) * 1000)
            for kind, pairs in split.items():
                if not pairs:
                    continue
                for label, who, m in (
                    ("onboarded", new_id, model),
                    ("prior", PRIOR_USER, model),
                    ("baseline", new_id, models[args.baseline]),
                ):
                    acc[kind].setdefault(label, []).append(accuracy(engine, who, pairs, m))
                acc[kind].setdefault("users", []).append(float(len(pairs)))

        # (a) the same comments for the two held-out annotators whose profiles disagree most
        prompt = engine.store.comparisons(held_out[0])[0].prompt
        pool = sorted({c.chosen for u in held_out for c in engine.store.comparisons(u)})
        candidates = random.Random(args.seed).sample(pool, min(6, len(pool)))
        scores = {
            u: engine.score(f"heldout-{u}", prompt, candidates, model=model) for u in held_out
        }
        rho, a, b = min(
            (spearman(scores[a], scores[b]), a, b)
            for i, a in enumerate(held_out)
            for b in held_out[i + 1 :]
        )
        print(
            f"\n(a) the same {len(candidates)} comments ranked for the two held-out annotators whose "
            f"onboarded profiles disagree most (Spearman {rho:+.2f}), '{prompt}', best first:"
        )
        print(f"    {'annotator ' + a:<46}  {'annotator ' + b:<46}")
        ranked = {u: sorted(zip(scores[u], candidates), reverse=True) for u in (a, b)}
        for i, ((sa, ta), (sb, tb)) in enumerate(zip(ranked[a], ranked[b]), 1):
            print(f" {i}. {sa:+6.2f} {ta[:38]!r:<40}  {sb:+6.2f} {tb[:38]!r:<40}")

        # (b) what onboarding buys, per user, with paired bootstrap CIs over users
        onboard_ms.sort()
        print(
            f"\n(b) {len(held_out)} held-out annotators, each onboarded from their first {args.shots} "
            f"comparisons (median {onboard_ms[len(onboard_ms) // 2]:.1f} ms, storing the shots "
            "included); accuracy averaged per user, 95% bootstrap CI over users:"
        )
        for kind, what in (
            ("new", "pairs of texts new to the annotator (the headline)"),
            ("reused", "pairs reusing a text from the annotator's shots"),
        ):
            r = acc[kind]
            if not r:
                continue
            n_pairs = int(sum(r["users"]))
            print(f"  {what}: {len(r['users'])} users, {n_pairs} pairs")
            print(
                f"    {args.backend} onboarded {np.mean(r['onboarded']):.3f}   {args.baseline} "
                f"{np.mean(r['baseline']):.3f}   {args.backend} prior (no shots) {np.mean(r['prior']):.3f}"
            )
            for label, other in (("baseline", args.baseline), ("prior", "its prior")):
                d, lo, hi = paired_ci(r["onboarded"], r[label], args.seed)
                print(
                    f"    {kind} {args.backend} - {other}: {d:+.3f} "
                    f"(95% CI {lo:+.3f} to {hi:+.3f}: {verdict(lo, hi)})"
                )
        if "popquorn" in str(args.data).lower():
            print(
                "\n  Why the gain on new texts is small: on POPQUORN annotators mostly agree with "
                "the crowd (the other annotators' consensus predicts about 79% of a user's pairs, "
                "benchmarks/results/popquorn_headroom.json), and what a few answers reveal about "
                "a user carries over little to texts they have not rated. On pairs that reuse a "
                "text from the shots the onboarded vector shows what it learned, partly by "
                "remembering those answers."
            )
        print(
            "\n(c) every backend, several seeds, k = 1/5/10/20 shots, and two more data sets: "
            f"BENCHMARKS.md (benchmarks/results/). Quickstart run time {time.perf_counter() - started:.0f}s."
        )
    except PersonaEngineError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
