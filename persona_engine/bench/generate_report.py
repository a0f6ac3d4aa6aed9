"""Figures and markdown tables of a ``persona bench generate`` result, computed from its JSON alone
(``scores``: every answer's evaluation-judge measures per seed, method and user), so the tables
of BENCHMARKS.md can be regenerated from a saved result (``persona bench generate --report``).

A user's *target score* of an answer is the mean over the user's evaluation targets of
``direction * value / sd``, where ``sd`` is the standard deviation of that judge over the plain
answers: higher is more of what the user prefers, in plain-answer SDs, comparable across users
(NaN when a target has no value, e.g. readability of an answer under ``min_words``). Paired
differences (a method minus a baseline on the same prompts) and their 95% intervals come from
:func:`persona_engine.bench.metrics.paired_difference`, with prompts in the place of users: a
two-stage bootstrap over seeds and, within each, over the prompts both methods have a value on.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .generate_methods import split_key
from .metrics import UserCounts, paired_difference

OPERATING = ("pad", "drift")


def _arrays(result: dict[str, Any], seed: str, method: str, user: str) -> dict[str, np.ndarray]:
    per = result["scores"][seed][method]
    row = per[user] if user in per else per["*"]
    return {
        k: np.array([np.nan if v is None else v for v in vals], float) for k, vals in row.items()
    }


def plain_sd(result: dict[str, Any]) -> dict[str, float]:
    """Each evaluation judge's SD over the plain answers (1 where it has none)."""
    first = next(iter(result["scores"]))
    out = {}
    for k, v in _arrays(result, first, "plain", "*").items():
        sd = float(np.nanstd(v)) if np.isfinite(v).sum() > 1 else 0.0
        out[k] = sd if sd > 0 else 1.0
    return out


def target_score(arrs: dict[str, np.ndarray], targets: list, sd: dict[str, float]) -> np.ndarray:
    parts = [direction * arrs[judge] / sd[judge] for judge, direction in targets]
    return np.mean(parts, axis=0)


def paired_over_prompts(a: list[np.ndarray], b: list[np.ndarray]) -> dict[str, Any] | None:
    """Mean over seeds of the mean over prompts of ``a - b`` (one array per seed), with its
    paired 95% interval (prompts where either is NaN are left out)."""
    left, right = [], []
    for x, y in zip(a, b):
        keep = np.flatnonzero(np.isfinite(x) & np.isfinite(y))
        ids = [str(i) for i in keep]
        ones = np.ones(len(keep))
        left.append(UserCounts(ids, x[keep], ones))
        right.append(UserCounts(ids, y[keep], ones))
    out = paired_difference(left, right)
    if out is None or out["diff"] is None:
        return None
    return {
        "diff": round(out["diff"], 4),
        "ci95": None if out["ci95"] is None else [round(c, 4) for c in out["ci95"]],
        "per_seed": [None if d is None else round(d, 4) for d in out["per_seed"]],
        "prompts": [len(c.users) for c in left],
    }


def _nanmean(v: np.ndarray) -> float:
    """The mean of the finite values (NaN, without a warning, when there are none)."""
    finite = v[np.isfinite(v)]
    return float(finite.mean()) if len(finite) else math.nan


def _perplexity(logprobs: list[np.ndarray]) -> float:
    return float(math.exp(-np.mean([_nanmean(lp) for lp in logprobs])))


def _mean(values: list[np.ndarray]) -> float:
    return float(np.mean([_nanmean(v) for v in values]))


def _matched_guidance(ppl: dict[str, float], target: float) -> str:
    """The guidance setting (prompt-only included) whose perplexity is nearest ``target``'s."""
    keys = [k for k in ppl if k == "prompt" or k.startswith("guidance@")]
    return min(keys, key=lambda k: abs(math.log(ppl[k]) - math.log(target)))


def summarise_results(result: dict[str, Any]) -> dict[str, Any]:
    """Per user and method: target score, gain over plain, perplexity, relevance, the paired
    differences against prompt-only and against guidance at matched fluency; the mean over
    users; the checks at the operating points; a verdict per method."""
    cfg, seeds = result["config"], list(result["scores"])
    users = cfg["users"]
    methods = list(result["scores"][seeds[0]])
    sd = plain_sd(result)
    operating = {"pad": f"pad@{cfg['rm_weight']:g}", "drift": f"drift@{cfg['beta']:g}"}
    per_user: dict[str, Any] = {}
    targets: dict[str, dict[str, list[np.ndarray]]] = {}
    for u in users:
        spec = result["users"][u]
        arrs = {m: [_arrays(result, s, m, u) for s in seeds] for m in methods}
        t = {m: [target_score(a, spec["eval_targets"], sd) for a in arrs[m]] for m in methods}
        targets[u] = t
        rows: dict[str, Any] = {}
        for m in methods:
            rows[m] = {
                "target_score": round(_mean(t[m]), 4),
                "judges": {
                    j: round(_mean([a[j] for a in arrs[m]]), 3) for j, _ in spec["eval_targets"]
                },
                "perplexity": round(_perplexity([a["logprob"] for a in arrs[m]]), 3),
                "relevance": round(_mean([a["relevance"] for a in arrs[m]]), 4),
                "gain_vs_plain": paired_over_prompts(t[m], t["plain"]),
            }
            if m not in ("plain", "prompt"):
                rows[m]["vs_prompt"] = paired_over_prompts(t[m], t["prompt"])
        ppl = {m: r["perplexity"] for m, r in rows.items()}
        for m in methods:
            if split_key(m)[0] in OPERATING:
                g = _matched_guidance(ppl, ppl[m])
                rows[m]["matched_guidance"] = g
                rows[m]["vs_guidance_matched"] = paired_over_prompts(t[m], t[g])
                if m in operating.values():
                    rows[m]["vs_guidance"] = {
                        k: paired_over_prompts(t[m], t[k])
                        for k in methods
                        if k == "prompt" or k.startswith("guidance@")
                    }
        plain = rows["plain"]
        checks = {}
        for fam, m in operating.items():
            if m in rows:
                checks[fam] = {
                    "relevance_vs_plain": round(rows[m]["relevance"] / plain["relevance"], 3),
                    "perplexity_vs_plain": round(rows[m]["perplexity"] / plain["perplexity"], 3),
                    "relevance_ok": rows[m]["relevance"]
                    >= (1 - cfg["relevance_tolerance"]) * plain["relevance"],
                    "fluency_ok": rows[m]["perplexity"]
                    <= cfg["fluency_bound"] * plain["perplexity"],
                }
        per_user[u] = {"methods": rows, "checks": checks}

    def mean_over_users(m: str, ref_of: Any) -> dict[str, Any] | None:
        """Per seed and prompt, the mean over users of ``m - ref``, against zero."""
        diffs = []
        for i in range(len(seeds)):
            stacked = np.array([targets[u][m][i] - targets[u][ref_of(u)][i] for u in users])
            with np.errstate(all="ignore"):
                diffs.append(np.nanmean(stacked, axis=0) if len(users) > 1 else stacked[0])
        return paired_over_prompts(diffs, [np.zeros_like(d) for d in diffs])

    mean: dict[str, Any] = {}
    for m in methods:
        mean[m] = {
            "target_score": round(
                float(np.mean([per_user[u]["methods"][m]["target_score"] for u in users])), 4
            ),
            "perplexity": round(
                float(np.mean([per_user[u]["methods"][m]["perplexity"] for u in users])), 3
            ),
            "relevance": round(
                float(np.mean([per_user[u]["methods"][m]["relevance"] for u in users])), 4
            ),
            "gain_vs_plain": mean_over_users(m, lambda u: "plain"),
        }
        if m not in ("plain", "prompt"):
            mean[m]["vs_prompt"] = mean_over_users(m, lambda u: "prompt")
        if split_key(m)[0] in OPERATING:
            mean[m]["vs_guidance_matched"] = mean_over_users(
                m, lambda u, m=m: per_user[u]["methods"][m]["matched_guidance"]
            )

    def excludes_zero_above(d: dict[str, Any] | None) -> bool:
        return bool(d and d["ci95"] and d["ci95"][0] > 0)

    def excludes_zero_below(d: dict[str, Any] | None) -> bool:
        return bool(d and d["ci95"] and d["ci95"][1] < 0)

    verdict = {}
    for fam, m in operating.items():
        if m not in methods:
            continue
        picked = [per_user[u] for u in users]
        verdict[fam] = {
            "operating_point": m,
            "users": len(users),
            "beats_guidance_matched": sum(
                excludes_zero_above(r["methods"][m]["vs_guidance_matched"]) for r in picked
            ),
            "below_guidance_matched": sum(
                excludes_zero_below(r["methods"][m]["vs_guidance_matched"]) for r in picked
            ),
            "beats_prompt": sum(excludes_zero_above(r["methods"][m]["vs_prompt"]) for r in picked),
            "below_prompt": sum(excludes_zero_below(r["methods"][m]["vs_prompt"]) for r in picked),
            "relevance_ok": sum(r["checks"][fam]["relevance_ok"] for r in picked),
            "fluency_ok": sum(r["checks"][fam]["fluency_ok"] for r in picked),
        }
    return {
        "plain_sd": {k: round(v, 4) for k, v in sd.items()},
        "users": per_user,
        "mean": mean,
        "verdict": verdict,
        "operating": operating,
    }
