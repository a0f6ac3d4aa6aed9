"""Tables (markdown, also what the CLI prints) and the plot of a reward-benchmark result
(the layout of :mod:`.reward_summary`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

BASELINES = ("bt", "per_user", "bt_residual")


def _cell(acc: float | None, ci: list[float] | None) -> str:
    if acc is None:
        return "-"
    return f"{acc:.3f} ({ci[0]:.3f}-{ci[1]:.3f})" if ci else f"{acc:.3f}"


def _summary_cell(s: dict[str, Any] | None, how: str) -> str:
    return "-" if not s else _cell(s.get(how), s.get(f"{how}_ci95"))


def _delta_cell(delta: dict[str, Any] | None) -> str:
    if not delta or delta.get("diff") is None:
        return "-"
    if delta.get("ci95") is None:
        return f"{delta['diff']:+.3f}"
    lo, hi = delta["ci95"]
    return f"{delta['diff']:+.3f} ({lo:+.3f} to {hi:+.3f})"


def _table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def accuracy_table(result: dict[str, Any], how: str = "per_user") -> str:
    """New-item accuracy of unseen users at each k, the slope (per-user only), seen accuracy
    under the split by text and the old split; ``how``: "per_user" or "pooled"."""
    shots = [str(k) for k in result["shots"]]
    head = ["backend", *[f"unseen k={k}" for k in shots]]
    if how == "per_user":
        head.append(f"slope (k={shots[-1]} - k={shots[0]})")
    head += ["seen (split by text)", "seen (old split)"]
    rows = []
    for name, r in result["results"].items():
        row = [name, *[_summary_cell(r["unseen"].get(k), how) for k in shots]]
        if how == "per_user":
            row.append(_delta_cell(r.get("slope")))
        row += [_summary_cell(r["seen"], how), _summary_cell(r.get("seen_old_split"), how)]
        rows.append(row)
    return _table(head, rows)


def delta_table(result: dict[str, Any], ref: str) -> str:
    """Per-user accuracy minus ``ref``'s, with paired 95% intervals, per backend."""
    shots = [str(k) for k in result["shots"]]
    rows = []
    for name, r in result["results"].items():
        d = r.get("delta_vs", {}).get(ref)
        if d is None:
            continue
        rows.append(
            [name, *[_delta_cell(d["unseen"].get(k)) for k in shots], _delta_cell(d["seen"])]
        )
    head = ["backend", *[f"unseen k={k}" for k in shots], "seen"]
    return _table(head, rows) if rows else ""


def _seed_value(summary: dict[str, Any] | None, i: int, fmt: str = ".3f") -> str:
    """Seed ``i``'s per-user figure of a summary (or of a paired difference), formatted."""
    if not summary:
        return "-"
    values = summary["per_seed"]
    values = values["per_user"] if isinstance(values, dict) else values
    v = values[i] if i < len(values) else None
    return "-" if v is None else format(v, fmt)


def per_seed_table(result: dict[str, Any]) -> str:
    """Every seed's per-user figures (never only the mean)."""
    lo, hi = str(result["shots"][0]), str(result["shots"][-1])
    rows = []
    for name, r in result["results"].items():
        for i, seed in enumerate(result["seeds"]):
            rows.append(
                [
                    name,
                    str(seed),
                    _seed_value(r["unseen"][lo], i),
                    _seed_value(r["unseen"][hi], i),
                    _seed_value(r.get("slope"), i, "+.3f"),
                    _seed_value(r["seen"], i),
                    f"{r['fit_s_per_seed'][i]:.1f}",
                ]
            )
    head = ["backend", "seed", f"unseen k={lo}", f"unseen k={hi}", "slope", "seen", "fit (s)"]
    return _table(head, rows)


def cost_table(result: dict[str, Any]) -> str:
    rows = []
    for name, r in result["results"].items():
        ms, em = r["onboard_ms_median"], r.get("embed_ms_median")
        rows.append(
            [
                name,
                f"{r['fit_s']:.1f}",
                "-" if ms is None else f"{ms:.2f}",
                "-" if em is None else f"{em:.2f}",
                f"{r['scores_per_s']:,.0f}",
            ]
        )
    head = [
        "backend",
        "fit (s, mean)",
        "Engine.onboard, 10 shots (ms, median)",
        "embed_user alone (ms, median)",
        "scores / s",
    ]
    return _table(head, rows)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def fit_metrics_table(result: dict[str, Any]) -> str:
    rows = [
        [name, ", ".join(f"{k}={_fmt(v)}" for k, v in r["fit_metrics"].items()) or "-"]
        for name, r in result["results"].items()
    ]
    return _table(["backend", "fit metrics (mean over seeds where numeric)"], rows)


def _split_lines(result: dict[str, Any]) -> list[str]:
    lines = []
    for s in result["per_seed"]:
        c = s["comparisons"]
        line = (
            f"seed {s['seed']}: {s['users']['seen']} seen / {s['users']['unseen']} unseen users; "
            f"seen pairs {c['seen_train']} train / {c['seen_test']} test / {c['seen_dropped']} dropped; "
            f"unseen {c['unseen_shots']} shots / {c['unseen_test']} test / {c['unseen_dropped']} dropped"
        )
        if c.get("unseen_left_out_users"):
            line += f"; {c['unseen_left_out_users']} unseen users left out"
        if s.get("old_split"):
            o = s["old_split"]
            line += f"; old split: seen {o['seen_train']} train / {o['seen_test']} test"
            if "seen_test_new_items" in o:
                line += f" ({o['seen_test_new_items']} of them new-item)"
        lines.append(line)
    return lines


def markdown_report(result: dict[str, Any]) -> str:
    """Everything a run measured, as markdown (the CLI prints this)."""
    seeds = result["seeds"]
    first = result["per_seed"][0]
    parts = [
        f"dataset {result['dataset']}: {result['distinct_texts']} distinct texts; encoder {result['encoder']}; "
        f"seeds {', '.join(map(str, seeds))} (old split on {', '.join(map(str, result['old_split_seeds'])) or 'none'})",
        *_split_lines(result),
        *[f"note: {n}" for n in [*result["protocol"]["notes"], *first["notes"]]],
        "",
        f"Accuracy per user (mean over users; mean of {len(seeds)} seeds, 95% CI over seeds and users). "
        "Unseen: onboarded through Engine.onboard from k shots, scored on the fixed test set (no text "
        "shared with the 20 candidate shots). Seen: test pairs share no text with the user's training pairs.",
        "",
        accuracy_table(result, "per_user"),
        "",
        "Accuracy pooled over comparisons (same runs):",
        "",
        accuracy_table(result, "pooled"),
    ]
    for ref in ("bt", "bt_residual"):
        table = delta_table(result, ref)
        if table:
            parts += ["", f"Per-user accuracy minus {ref} (paired 95% CI):", "", table]
    parts += ["", "Every seed (per-user accuracy):", "", per_seed_table(result)]
    parts += ["", "Cost:", "", cost_table(result)]
    parts += ["", "Fit metrics:", "", fit_metrics_table(result)]
    return "\n".join(parts)


def plot_shots(result: dict[str, Any], path: str | Path) -> Path:
    """PNG of unseen-user accuracy on the fixed new-item test set against shots for every backend:
    per-user averaged (left, the headline) and pooled (right), 95% intervals as bands."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shots = [str(k) for k in result["shots"]]
    xs = [int(k) for k in shots]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharey=True)
    for ax, how, title in (
        (axes[0], "per_user", "per-user accuracy"),
        (axes[1], "pooled", "pooled accuracy"),
    ):
        for name, r in result["results"].items():
            ys = [r["unseen"][k][how] for k in shots]
            if any(y is None for y in ys):
                continue
            (line,) = ax.plot(
                xs, ys, marker="o", label=name, linestyle="--" if name in BASELINES else "-"
            )
            cis = [r["unseen"][k][f"{how}_ci95"] for k in shots]
            if all(c is not None for c in cis):
                ax.fill_between(
                    xs, [c[0] for c in cis], [c[1] for c in cis], color=line.get_color(), alpha=0.12
                )
        ax.set_xscale("log")
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.set_xlabel("shots (comparisons of the new user)")
        ax.set_title(f"unseen users, new-item test set, {title}")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy")
    axes[1].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
    unseen = result["per_seed"][0]["users"]["unseen"]
    fig.suptitle(
        f"{result['dataset']} (~{unseen} unseen users per seed, {len(result['seeds'])} seeds, "
        f"encoder {result['encoder'].split('+')[0]})"
    )
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
