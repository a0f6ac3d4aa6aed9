"""Markdown tables of a ``persona bench generate`` result (printed by the CLI, pasted in BENCHMARKS.md)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .generate_judges import JUDGES

METHODS = ["plain", "prompt", "drift", "pad"]


def summarise_results(
    cfg: Any,
    prompts: list[str],
    texts: dict,
    plain: dict,
    measured: dict,
    users: dict,
    pad_metrics: dict,
    judge: Any,
) -> dict[str, Any]:
    sd = {j: float(np.nanstd(plain["scores"][j])) or 1.0 for j in JUDGES}

    def summary(meas: dict[str, Any]) -> dict[str, Any]:
        out = {j: round(float(np.nanmean(meas["scores"][j])), 3) for j in JUDGES}
        out["perplexity"] = round(float(math.exp(-np.mean(meas["logprob"]))), 2)
        return out

    base = summary(plain)
    per_user: dict[str, Any] = {}
    for u in cfg.users:
        spec = users[u]
        j, d = spec["judge"], spec["direction"]
        rows = {m: summary(measured[m][u]) for m in METHODS[1:]}
        checks = {}
        for m in ("prompt", "drift", "pad"):
            target = measured[m][u]["scores"][j]
            wins = (
                float(np.mean(d * (target - measured["prompt"][u]["scores"][j]) > 0))
                if m != "prompt"
                else None
            )
            off = {k: round(abs(rows[m][k] - base[k]) / sd[k], 2) for k in JUDGES if k != j}
            checks[m] = {
                "target_vs_plain": round(d * (rows[m][j] - base[j]), 3),
                "target_vs_prompt": round(d * (rows[m][j] - rows["prompt"][j]), 3)
                if m != "prompt"
                else None,
                "prompt_wins_share": None if wins is None else round(wins, 2),
                "moves_toward_vs_plain": bool(d * (rows[m][j] - base[j]) > 0),
                "beats_prompt": None
                if m == "prompt"
                else bool(d * (rows[m][j] - rows["prompt"][j]) > 0),
                "off_target_sd": off,
                "off_target_ok": all(v <= cfg.off_target_tolerance for v in off.values()),
                "perplexity_vs_prompt": round(
                    rows[m]["perplexity"] / rows["prompt"]["perplexity"], 2
                ),
                "fluency_ok": rows[m]["perplexity"]
                <= cfg.fluency_bound * rows["prompt"]["perplexity"],
            }
        per_user[u] = {
            "target": j,
            "direction": d,
            "means": rows,
            "checks": checks,
            **{k: v for k, v in users[u].items() if k not in ("judge", "direction", "opposite")},
        }
    opposites = []
    for u in cfg.users:
        v = users[u]["opposite"]
        if v in cfg.users and u < v:
            j, d = users[u]["judge"], users[u]["direction"]
            gap = {
                m: round(d * (per_user[u]["means"][m][j] - per_user[v]["means"][m][j]), 3)
                for m in ("prompt", "drift", "pad")
            }
            opposites.append(
                {
                    "users": [u, v],
                    "judge": j,
                    "gap": gap,
                    "apart": {m: g > 0 for m, g in gap.items()},
                }
            )
    verdict = {
        m: {
            "moves_toward_vs_plain": sum(
                per_user[u]["checks"][m]["moves_toward_vs_plain"] for u in cfg.users
            ),
            "beats_prompt": sum(bool(per_user[u]["checks"][m]["beats_prompt"]) for u in cfg.users),
            "off_target_ok": sum(per_user[u]["checks"][m]["off_target_ok"] for u in cfg.users),
            "fluency_ok": sum(per_user[u]["checks"][m]["fluency_ok"] for u in cfg.users),
            "opposites_apart": sum(o["apart"][m] for o in opposites),
            "users": len(cfg.users),
            "opposite_pairs": len(opposites),
        }
        for m in ("drift", "pad", "prompt")
    }
    samples = {
        "prompt": prompts[0],
        "plain": texts["plain"]["*"][0][:300],
        **{f"{m}/{u}": texts[m][u][0][:300] for m in METHODS[1:] for u in cfg.users},
    }
    return {
        "judges": {
            "plain_sd": {k: round(v, 3) for k, v in sd.items()},
            "friendliness_loo_accuracy": round(judge.loo_accuracy, 3),
        },
        "plain": base,
        "users": per_user,
        "opposites": opposites,
        "verdict": verdict,
        "pad_head": pad_metrics,
        "samples": samples,
    }


def markdown_report(result: dict[str, Any]) -> str:
    """The tables of a run (what the CLI prints and BENCHMARKS.md shows)."""
    cfg = result["config"]
    lines = [
        "| user (target, preferred) | plain | prompt-only | drift | pad | drift vs prompt | pad vs prompt | off-target ok (drift/pad) | ppl / prompt-only ppl (drift/pad) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for u, r in result["users"].items():
        j, means, ch = r["target"], r["means"], r["checks"]
        arrow = "higher" if r["direction"] > 0 else "lower"
        lines.append(
            f"| {u} ({j}, {arrow}) | {result['plain'][j]:.2f} | {means['prompt'][j]:.2f} | {means['drift'][j]:.2f} | {means['pad'][j]:.2f} "
            f"| {ch['drift']['target_vs_prompt']:+.2f} ({ch['drift']['prompt_wins_share']:.0%} of prompts) "
            f"| {ch['pad']['target_vs_prompt']:+.2f} ({ch['pad']['prompt_wins_share']:.0%}) "
            f"| {'yes' if ch['drift']['off_target_ok'] else 'no'} / {'yes' if ch['pad']['off_target_ok'] else 'no'} "
            f"| {ch['drift']['perplexity_vs_prompt']:.2f} / {ch['pad']['perplexity_vs_prompt']:.2f} |"
        )
    lines += [
        "",
        "| opposite users | judge | gap prompt-only | gap drift | gap pad |",
        "|---|---|---|---|---|",
    ]
    for o in result["opposites"]:
        g = o["gap"]
        lines.append(
            f"| {o['users'][0]} vs {o['users'][1]} | {o['judge']} | {g['prompt']:+.2f} | {g['drift']:+.2f} | {g['pad']:+.2f} |"
        )
    lines += [
        "",
        "| method | moves toward (vs plain) | beats prompt-only | off-target within tolerance | fluency within bound | opposites apart |",
        "|---|---|---|---|---|---|",
    ]
    for m, v in result["verdict"].items():
        n, k = v["users"], v["opposite_pairs"]
        beats = "-" if m == "prompt" else f"{v['beats_prompt']}/{n}"
        lines.append(
            f"| {m} | {v['moves_toward_vs_plain']}/{n} | {beats} | {v['off_target_ok']}/{n} | {v['fluency_ok']}/{n} | {v['opposites_apart']}/{k} |"
        )
    lat = result["latency"]
    lines += [
        "",
        "| decoding (batch 1) | ms / token (decode steps) | ms / token (with prefill) | overhead vs plain |",
        "|---|---|---|---|",
    ]
    for m in ("plain", "drift", "drift_1", "pad"):
        over = "1.00x" if m == "plain" else f"{lat[m]['overhead_vs_plain']:.2f}x"
        extra = f" ({lat[m]['rows_per_step']} rows per step)" if m.startswith("drift") else ""
        lines.append(
            f"| {m}{extra} | {lat[m]['decode_ms_per_token']:.1f} | {lat[m]['ms_per_token']:.1f} | {over} |"
        )
    lines += [
        "",
        "| user | drift weights fitted from comparisons (top 3) | train accuracy | profile attribute's rank (of 8, sign-aware) | PAD channel explained (val) |",
        "|---|---|---|---|---|",
    ]
    for u, r in result["users"].items():
        top = sorted(r["drift_weights"].items(), key=lambda kv: -abs(kv[1]))[:3]
        attr = next(iter(r["profile"]))
        lines.append(
            f"| {u} | {', '.join(f'{k} {v:+.2f}' for k, v in top)} | {r['drift_train_accuracy']:.2f} | {r['drift_profile_rank']} "
            f"| {result['pad_head'][attr].get('val_explained', float('nan')):.2f} |"
        )
    lines += [
        "",
        f"Tolerances: off-target shift <= {cfg['off_target_tolerance']} SD of the plain outputs; perplexity <= {cfg['fluency_bound']}x prompt-only's. "
        f"Friendliness judge leave-one-out accuracy {result['judges']['friendliness_loo_accuracy']:.2f}. Run time {result['seconds']['total']:.0f} s wall, {result['seconds']['process_cpu']:.0f} s CPU (pool cached: {result['setup']['pool_cached']}).",
    ]
    return "\n".join(lines)
