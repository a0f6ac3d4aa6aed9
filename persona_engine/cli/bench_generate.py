"""``persona bench generate``: PAD and Drift against plain, prompt-only, guidance and best-of-N."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import click

from .bench import bench


def _floats(text: str, what: str) -> list[float]:
    from ..errors import InvalidInputError

    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InvalidInputError(f"{what} takes comma-separated numbers, not {text!r}") from None
    if not values:
        raise InvalidInputError(f"{what} needs at least one value")
    return values


@bench.command("generate")
@click.option(
    "--lm",
    default="smollm2",
    show_default=True,
    help="Base LM: 'smollm2', a local HF folder or a .gguf file.",
)
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    default=None,
    help="P-SOUPS folder with koala_eval_50.json (default: ../shared/data/psoups).",
)
@click.option(
    "--users",
    default="all",
    show_default=True,
    help="Comma-separated simulated users, or 'all' (both sides of each P-SOUPS dimension and "
    "two mixed profiles).",
)
@click.option(
    "--prompts",
    type=int,
    default=5,
    show_default=True,
    help="Evaluation prompts (first N of the 50; 0: all).",
)
@click.option("--seeds", default="0", show_default=True, help="Comma-separated seeds (e.g. 0,1,2).")
@click.option(
    "--train-prompts",
    type=int,
    default=20,
    show_default=True,
    help="Training prompts of the answer pool.",
)
@click.option(
    "--comparisons", type=int, default=50, show_default=True, help="Comparisons per user."
)
@click.option(
    "--max-new-tokens",
    type=int,
    default=96,
    show_default=True,
    help="Tokens per evaluation answer (readability is graded on answers of >= 60 words).",
)
@click.option(
    "--objective",
    type=click.Choice(["dpo", "distill"]),
    default="dpo",
    show_default=True,
    help="PAD head: DPO on the simulated users' pairs (PAD as published) or the distill shortcut.",
)
@click.option("--beta", type=float, default=0.5, show_default=True, help="Drift's operating beta.")
@click.option(
    "--rm-weight", type=float, default=1.0, show_default=True, help="PAD's operating weight w."
)
@click.option("--pad-weights", default="0.5,1,2", show_default=True, help="PAD w swept.")
@click.option("--drift-betas", default="1,0.5,0.25", show_default=True, help="Drift beta swept.")
@click.option(
    "--guidance",
    default="1.5,2,3",
    show_default=True,
    help="Guidance strengths g swept (g = 1, prompt-only, is always there).",
)
@click.option(
    "--option",
    "-o",
    "options",
    multiple=True,
    help="Any other benchmark setting KEY=VALUE (see GenerateBenchConfig).",
)
@click.option(
    "--home",
    type=click.Path(path_type=Path),
    default=None,
    help="Keep the users' stores here (default: a temporary folder).",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Write the result JSON here (e.g. benchmarks/results/generate.json).",
)
@click.option(
    "--plot",
    type=click.Path(path_type=Path),
    default=None,
    help="Write the strength-sweep PNG here (default: next to --out, .png).",
)
@click.option(
    "--report",
    "report",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Run nothing: recompute the summary of a saved result JSON and print its tables "
    "(and write --plot if given).",
)
@click.option("--quiet", is_flag=True, help="No progress lines.")
def bench_generate(
    lm: str,
    data: Path | None,
    users: str,
    prompts: int,
    seeds: str,
    train_prompts: int,
    comparisons: int,
    max_new_tokens: int,
    objective: str,
    beta: float,
    rm_weight: float,
    pad_weights: str,
    drift_betas: str,
    guidance: str,
    options: tuple[str, ...],
    home: Path | None,
    out: Path | None,
    plot: Path | None,
    report: Path | None,
    quiet: bool,
) -> None:
    """Personalized generation on P-SOUPS prompts, measured by evaluation judges the simulated
    users' labels were not made from: target-attribute gain, paired differences against
    prompt-only and guidance, strength sweeps, fluency, relevance, latency."""
    from ..bench.generate import USERS, GenerateBenchConfig, run_generate_bench
    from ..bench.generate_plot import plot_sweeps
    from ..bench.generate_report import summarise_results
    from ..bench.generate_tables import markdown_report
    from ..config import make_config
    from .core import _parse_options

    if report is not None:
        result = json.loads(report.read_text())
        result["summary"] = summarise_results(result)
    else:
        names = (
            list(USERS) if users == "all" else [u.strip() for u in users.split(",") if u.strip()]
        )
        settings = {
            "lm": lm,
            "users": names,
            "prompts": prompts,
            "seeds": [int(x) for x in _floats(seeds, "--seeds")],
            "train_prompts": train_prompts,
            "comparisons": comparisons,
            "max_new_tokens": max_new_tokens,
            "objective": objective,
            "beta": beta,
            "rm_weight": rm_weight,
            "pad_weights": _floats(pad_weights, "--pad-weights"),
            "drift_betas": _floats(drift_betas, "--drift-betas"),
            "guidance_scales": _floats(guidance, "--guidance"),
            **_parse_options(options),
        }
        if data is not None:
            settings["data"] = str(data)
        cfg = make_config(GenerateBenchConfig, settings)
        with tempfile.TemporaryDirectory(prefix="bench-generate-") as tmp:
            result = run_generate_bench(cfg, home=home or Path(tmp), progress=not quiet)
    click.echo(markdown_report(result))
    if out is not None and report is None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1) + "\n")
        click.echo(f"wrote {out}")
        if plot is None:
            plot = out.with_suffix(".png")
    if plot is not None:
        click.echo(f"wrote {plot_sweeps(result, plot)}")
