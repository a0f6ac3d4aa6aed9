"""The strength sweeps of ``persona bench generate`` as one PNG: per user (and the mean over users)
the target-attribute gain over plain against fluency (perplexity under the base LM, left) and
relevance (MiniLM cosine of prompt and answer, right). PAD (w), Drift (beta) and guidance (g,
starting at prompt-only, g = 1) are lines in order of strength; plain and best-of-N are points."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .generate_methods import split_key
from .generate_tables import label

STYLE = {
    "guidance": {"color": "tab:gray", "marker": "s"},
    "pad": {"color": "tab:blue", "marker": "o"},
    "drift": {"color": "tab:orange", "marker": "^"},
}


def _families(methods: list[str]) -> dict[str, list[str]]:
    """Each swept family's methods in order of strength (guidance from prompt-only)."""
    out: dict[str, list[tuple[float, str]]] = {
        "guidance": [(1.0, "prompt")],
        "pad": [],
        "drift": [],
    }
    for m in methods:
        family, strength = split_key(m)
        if family in out and strength is not None:
            # Drift is stronger for smaller beta
            out[family].append((1 / strength if family == "drift" else strength, m))
    return {f: [m for _, m in sorted(v)] for f, v in out.items() if v}


def _gain(figures: dict[str, Any], m: str) -> float:
    """The target gain over plain (NaN, not drawn, where no prompt had a value)."""
    if m == "plain":
        return 0.0
    g = figures[m]["gain_vs_plain"]
    return float(g["diff"]) if g else float("nan")


def plot_sweeps(result: dict[str, Any], path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import ScalarFormatter

    s = result["summary"]
    users = result["config"]["users"]
    panels = [(u, s["users"][u]["methods"]) for u in users] + [("mean over users", s["mean"])]
    families = _families(list(s["mean"]))
    n = result["config"].get("bestofn", 4)
    fig, axes = plt.subplots(len(panels), 2, figsize=(11, 2.9 * len(panels)), squeeze=False)
    for row, (name, figures) in enumerate(panels):
        for col, (measure, xlabel) in enumerate(
            (
                ("perplexity", "perplexity under the base LM"),
                ("relevance", "relevance (MiniLM cosine)"),
            )
        ):
            ax = axes[row][col]

            for family, ms in families.items():
                ax.plot(
                    [figures[m][measure] for m in ms],
                    [_gain(figures, m) for m in ms],
                    label=family if family != "guidance" else "guidance (from prompt-only)",
                    linestyle="-",
                    **STYLE[family],
                )
                for m in ms:
                    ax.annotate(
                        label(m).split(" ")[-1],
                        (figures[m][measure], _gain(figures, m)),
                        fontsize=6,
                        xytext=(3, 3),
                        textcoords="offset points",
                    )
            ax.scatter(
                [figures["plain"][measure]],
                [0.0],
                color="black",
                marker="x",
                label="plain",
                zorder=3,
            )
            if "bestofn" in figures:
                ax.scatter(
                    [figures["bestofn"][measure]],
                    [_gain(figures, "bestofn")],
                    color="tab:green",
                    marker="D",
                    label=f"best-of-{n}",
                    zorder=3,
                )
            if measure == "perplexity":
                ax.set_xscale("log")
                ax.xaxis.set_major_formatter(ScalarFormatter())
                ax.xaxis.set_minor_formatter(ScalarFormatter())
            ax.axhline(0, color="black", linewidth=0.5)
            ax.set_xlabel(xlabel, fontsize=8)
            ax.set_ylabel("target gain (plain SDs)", fontsize=8)
            ax.set_title(name, fontsize=9)
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=7)
    axes[0][1].legend(fontsize=7, loc="best")
    cfg = result["config"]
    fig.suptitle(
        f"persona bench generate: strength sweeps ({result['setup']['lm']}, {len(result['prompts'])} prompts, "
        f"{len(result['scores'])} seed(s), {cfg['max_new_tokens']} new tokens)",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.99))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
