"""Markdown tables of a ``persona bench generate`` result (printed by the CLI; BENCHMARKS.md's
generation section is rewritten from them): everything is read from the result's ``summary``
(:func:`.generate_report.summarise_results`), which a saved JSON holds or can recompute."""

from __future__ import annotations

from typing import Any

from .generate_methods import split_key


def label(method: str, n: int = 4) -> str:
    family, strength = split_key(method)
    return {
        "plain": "plain",
        "prompt": "prompt-only",
        "bestofn": f"best-of-{n}",
        "guidance": f"guidance g={strength:g}" if strength is not None else "guidance",
        "pad": f"PAD w={strength:g}" if strength is not None else "PAD",
        "drift": f"Drift beta={strength:g}" if strength is not None else "Drift",
    }[family]


def ci_cell(d: dict[str, Any] | None) -> str:
    """``+0.12 [+0.03, +0.20]`` (a * marks an interval that excludes zero)."""
    if not d:
        return "-"
    if not d.get("ci95"):
        return f"{d['diff']:+.2f}"
    lo, hi = d["ci95"]
    star = "*" if lo > 0 or hi < 0 else ""
    return f"{d['diff']:+.2f} [{lo:+.2f}, {hi:+.2f}]{star}"


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


def _targets(targets: list) -> str:
    """``readability_grade lower, sentiment higher``."""
    return ", ".join(f"{j} {'higher' if d > 0 else 'lower'}" for j, d in targets)


def _order(methods: list[str]) -> list[str]:
    rank = {"plain": 0, "prompt": 1, "guidance": 2, "bestofn": 3, "pad": 4, "drift": 5}

    def key(m: str) -> tuple[int, float]:
        family, strength = split_key(m)
        if family == "drift" and strength is not None:
            return rank[family], -strength  # smaller beta: stronger
        return rank[family], strength or 0.0

    return sorted(methods, key=key)


def markdown_report(result: dict[str, Any]) -> str:
    """Every table of a run: gains over plain, the paired differences against the baselines,
    the strength sweeps, the raw judge values, the verdict, latency, and the fitted models."""
    cfg, s = result["config"], result["summary"]
    users, op = cfg["users"], s["operating"]
    n = cfg.get("bestofn", 4)
    methods = _order(list(s["mean"]))
    baselines = [m for m in methods if split_key(m)[0] in ("prompt", "guidance", "bestofn")]
    shown = [*baselines, *(m for m in op.values() if m in s["mean"])]
    seeds = len(result["scores"])
    lines = [
        f"Target-attribute gain over plain decoding (evaluation judges; plain-answer SD units; "
        f"paired 95% CI over {len(result['prompts'])} prompts x {seeds} seed(s); * excludes 0):",
        "",
    ]
    rows = [
        [f"{u} ({_targets(result['users'][u]['eval_targets'])})"]
        + [ci_cell(s["users"][u]["methods"][m]["gain_vs_plain"]) for m in shown]
        for u in users
    ]
    rows.append(["**mean over users**"] + [ci_cell(s["mean"][m]["gain_vs_plain"]) for m in shown])
    lines += _table(["user (target judges)", *(label(m, n) for m in shown)], rows)

    lines += [
        "",
        "PAD and Drift at their operating points against the baselines (paired difference of the target score; guidance at matched fluency: the g, prompt-only included, whose perplexity is nearest):",
        "",
    ]
    head = ["user"]
    for m in op.values():
        if m in s["mean"]:
            head += [f"{label(m)} - guidance (matched g)", f"{label(m)} - prompt-only"]
    rows = []
    for u in users:
        r = [u]
        for m in op.values():
            if m in s["mean"]:
                x = s["users"][u]["methods"][m]
                g = x["matched_guidance"]
                r += [f"{ci_cell(x['vs_guidance_matched'])} ({label(g)})", ci_cell(x["vs_prompt"])]
        rows.append(r)
    last = ["**mean over users**"]
    for m in op.values():
        if m in s["mean"]:
            last += [
                ci_cell(s["mean"][m]["vs_guidance_matched"]),
                ci_cell(s["mean"][m]["vs_prompt"]),
            ]
    rows.append(last)
    lines += _table(head, rows)

    plain = s["mean"]["plain"]
    lines += [
        "",
        "Strength sweeps, mean over users (target gain over plain; fluency: perplexity under the base LM; relevance: MiniLM cosine of prompt and answer):",
        "",
    ]
    rows = [
        [
            label(m, n),
            ci_cell(s["mean"][m]["gain_vs_plain"]) if m != "plain" else "0",
            f"{s['mean'][m]['perplexity']:.2f}",
            f"{s['mean'][m]['perplexity'] / plain['perplexity']:.2f}x",
            f"{s['mean'][m]['relevance']:.3f}",
            f"{s['mean'][m]['relevance'] / plain['relevance']:.3f}",
        ]
        for m in methods
    ]
    lines += _table(
        ["method", "target gain", "perplexity", "vs plain", "relevance", "vs plain"], rows
    )

    lines += [
        "",
        "Evaluation judges in their own units (mean per answer; readability: textstat grade, answers >= "
        f"{cfg['min_words']} words only; sentiment: VADER compound; content words: count):",
        "",
    ]
    rows = []
    for u in users:
        for j, _ in result["users"][u]["eval_targets"]:
            rows.append(
                [u, j]
                + [f"{s['users'][u]['methods'][m]['judges'][j]:.2f}" for m in ["plain", *shown]]
            )
    lines += _table(["user", "judge", *(label(m, n) for m in ["plain", *shown])], rows)

    lines += [
        "",
        "Verdict at the operating points (users out of all; a CI excluding zero counts):",
        "",
    ]
    rows = [
        [
            label(v["operating_point"]),
            f"{v['beats_guidance_matched']}/{v['users']}",
            f"{v['below_guidance_matched']}/{v['users']}",
            f"{v['beats_prompt']}/{v['users']}",
            f"{v['below_prompt']}/{v['users']}",
            f"{v['relevance_ok']}/{v['users']}",
            f"{v['fluency_ok']}/{v['users']}",
        ]
        for v in s["verdict"].values()
    ]
    lines += _table(
        [
            "method",
            "beats guidance (matched)",
            "below guidance",
            "beats prompt-only",
            "below prompt-only",
            f"relevance within {cfg['relevance_tolerance']:.0%} of plain",
            f"perplexity <= {cfg['fluency_bound']:g}x plain",
        ],
        rows,
    )

    lat = result["latency"]
    lines += [
        "",
        f"Per-token latency at batch 1 (median of {lat['settings']['reps']} runs of {lat['plain']['tokens']} tokens; fastest run beside it):",
        "",
    ]
    rows = []
    for m in ("plain", "guidance", "drift", "pad"):
        over = "1.00x" if m == "plain" else f"{lat[m]['overhead_vs_plain']:.2f}x"
        extra = f" ({lat[m]['rows_per_step']} rows per step)" if m == "drift" else ""
        rows.append(
            [
                f"{m}{extra}",
                f"{lat[m]['decode_ms_per_token']:.1f}",
                f"{lat[m]['decode_ms_per_token_best']:.1f}",
                over,
            ]
        )
    lines += _table(
        ["decoding", "ms / token (median)", "ms / token (fastest)", "overhead vs plain"], rows
    )

    lines += [
        "",
        "Fitted per seed: Drift's weights from each user's comparisons (top 3), PAD's DPO head:",
        "",
    ]
    rows = []
    for u in users:
        for r in result["users"][u]["per_seed"]:
            top = sorted(r["weights"].items(), key=lambda kv: -abs(kv[1]))[:3]
            rows.append(
                [
                    u,
                    str(r["seed"]),
                    ", ".join(f"{k} {v:+.2f}" for k, v in top),
                    f"{r['train_accuracy']:.2f}",
                    ", ".join(map(str, r["profile_rank"])),
                ]
            )
    lines += _table(
        ["user", "seed", "Drift weights", "train accuracy", "profile rank (of 8)"], rows
    )
    for t in result["pad_training"]:
        m = t["metrics"]
        if t["objective"] == "dpo":
            lines.append(
                f"\nPAD head, seed {t['seed']}: DPO on {m['pairs']} pairs ({m['tokens']} tokens), {m['epochs']} epochs, "
                f"loss {m['loss_before']:.3f} -> {m.get('train_loss', float('nan')):.3f} (val {m.get('val_loss', float('nan')):.3f}), "
                f"train accuracy {m.get('train_accuracy', float('nan')):.2f}, val accuracy {m.get('val_accuracy', float('nan')):.2f}; channels {', '.join(t['trained'])}."
            )
        else:
            lines.append(
                f"\nPAD head, seed {t['seed']}: distill objective, channels {', '.join(t['trained'])}."
            )
    sec = result["seconds"]
    lines += [
        "",
        f"Run time {sec['total']:.0f} s wall, {sec['process_cpu']:.0f} s CPU ({', '.join(f'{k} {v:.0f} s' for k, v in sec.items() if k not in ('total', 'process_cpu'))}).",
    ]
    return "\n".join(lines)
