"""The reward benchmark's result document: every backend's per-seed runs summarised over seeds.

Layout (``result["results"][backend]``):

- ``unseen[k]``: :func:`.metrics.summarize` of the unseen users' accuracy on their fixed test set
  after ``k`` shots: ``per_user``, ``per_user_ci95``, ``pooled``, ``pooled_ci95``,
  ``per_seed`` (every seed's ``per_user`` and ``pooled``), ``users``, ``comparisons``;
- ``slope``: per-user accuracy at the largest ``k`` minus the smallest, ``{"from", "to", "diff",
  "ci95", "per_seed"}`` (paired per-user differences);
- ``seen``: the seen users under the split by text; ``seen_old_split``: under the old 70/30 split
  by comparison (the first ``old_split_seeds`` seeds; None when 0);
- ``delta_vs[ref]``: per-user-averaged differences to ``bt`` / ``bt_residual`` (``seen`` and
  ``unseen[k]``), paired;
- cost: ``fit_s`` (mean) and ``fit_s_per_seed``, ``onboard_ms_median`` (``Engine.onboard`` at 10
  shots, all seeds), ``embed_ms_median`` (``embed_user`` alone), ``scores_per_s`` (median of
  seeds);
- ``fit_metrics`` (numeric ones averaged over seeds, others from the first seed) and
  ``fit_metrics_per_seed``.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from ..coldstart import ColdStartConfig
from ..config import make_config
from .metrics import UserCounts, paired_difference, summarize
from .reward import Prepared, RewardBenchOptions, SeedRun

REFERENCES = ("bt", "bt_residual")


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def mean_fit_metrics(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """Numeric metrics averaged over the seeds that report them; others from the first seed."""
    keys = list(dict.fromkeys(k for m in per_seed for k in m))
    out: dict[str, Any] = {}
    for k in keys:
        values = [m[k] for m in per_seed if k in m]
        numeric = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if numeric and len(numeric) == len(values):
            out[k] = float(np.mean(numeric))
        else:
            out[k] = values[0]
    return out


def backend_summary(runs: list[SeedRun], shots: list[int], boot_seed: int) -> dict[str, Any]:
    """One backend's figures over seeds (module docstring)."""
    lo, hi = min(shots), max(shots)
    unseen = {str(k): summarize([r.unseen[k] for r in runs], seed=boot_seed) for k in shots}
    slope = paired_difference(
        [r.unseen[hi] for r in runs], [r.unseen[lo] for r in runs], seed=boot_seed
    )
    old = [r.seen_old for r in runs if r.seen_old is not None]
    return {
        "unseen": unseen,
        "slope": None if slope is None else {"from": lo, "to": hi, **slope},
        "seen": summarize([r.seen for r in runs], seed=boot_seed),
        "seen_old_split": summarize(old, seed=boot_seed) if old else None,
        "fit_s": round(float(np.mean([r.fit_s for r in runs])), 3),
        "fit_s_per_seed": [round(r.fit_s, 3) for r in runs],
        "onboard_ms_median": _median([ms for r in runs for ms in r.onboard_ms]),
        "embed_ms_median": _median([ms for r in runs for ms in r.embed_ms]),
        "scores_per_s": round(statistics.median(r.scores_per_s for r in runs)),
        "scores_per_s_per_seed": [round(r.scores_per_s) for r in runs],
        "fit_metrics": mean_fit_metrics([r.fit_metrics for r in runs]),
        "fit_metrics_per_seed": [r.fit_metrics for r in runs],
    }


def _paired(a: list[UserCounts], b: list[UserCounts], seed: int) -> dict[str, Any] | None:
    return paired_difference(a, b, seed=seed)


def deltas(runs: list[SeedRun], ref: list[SeedRun], shots: list[int], seed: int) -> dict[str, Any]:
    """Per-user-averaged differences to a reference backend, paired over the same users."""
    return {
        "seen": _paired([r.seen for r in runs], [r.seen for r in ref], seed),
        "unseen": {
            str(k): _paired([r.unseen[k] for r in runs], [r.unseen[k] for r in ref], seed)
            for k in shots
        },
    }


def result_document(
    options: RewardBenchOptions,
    prepared: Prepared,
    runs: dict[str, list[SeedRun]],
    total_s: float,
) -> dict[str, Any]:
    """The RESULT.json document of a run."""
    shots = sorted(options.shots)
    boot = options.seed
    results = {name: backend_summary(r, shots, boot) for name, r in runs.items()}
    for name in results:
        refs = {ref: runs[ref] for ref in REFERENCES if ref in runs and ref != name}
        if refs:
            results[name]["delta_vs"] = {
                ref: deltas(runs[name], r, shots, boot) for ref, r in refs.items()
            }
    protocol = asdict(options.protocol)
    protocol.pop("seed")
    per_seed = []
    for sd in prepared.seeds:
        split = sd.split
        per_seed.append(
            {
                "seed": sd.seed,
                "users": {"seen": len(split.seen_users), "unseen": len(split.unseen_users)},
                "comparisons": dict(split.counts),
                "old_split": None if sd.old is None else dict(sd.old.counts),
                "notes": split.notes,
            }
        )
    return {
        "dataset": options.dataset or Path(options.data).stem,
        "data_file": str(options.data),
        "encoder": prepared.encoder.id,
        "seeds": options.seed_list(),
        "old_split_seeds": options.seed_list()[: options.old_split_seeds],
        "blas_threads": options.blas_threads,
        "shots": shots,
        "protocol": {
            **protocol,
            "cold_start": make_config(ColdStartConfig, options.cold_start).model_dump(),
            "onboarding": "Engine.onboard (shots recorded in prefixes)",
            "notes": prepared.load_notes,
        },
        "per_seed": per_seed,
        "distinct_texts": prepared.distinct_texts,
        "results": results,
        "timing": {"encode_s": round(prepared.encode_s, 2), "total_s": round(total_s, 2)},
    }
