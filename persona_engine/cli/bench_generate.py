"""``persona bench generate``: Drift and PAD against plain and prompt-only decoding."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import click

from .bench import bench


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
    default="elementary,phd,friendly,unfriendly",
    show_default=True,
    help="Comma-separated simulated users, or 'all'.",
)
@click.option(
    "--prompts",
    type=int,
    default=5,
    show_default=True,
    help="Evaluation prompts (first N of the 50; 0: all).",
)
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
    default=32,
    show_default=True,
    help="Tokens per evaluation answer.",
)
@click.option("--beta", type=float, default=0.5, show_default=True, help="Drift beta.")
@click.option("--rm-weight", type=float, default=1.0, show_default=True, help="PAD reward weight.")
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
    help="Keep the users' store here (default: a temporary folder).",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Write the result JSON here (e.g. benchmarks/results/generate.json).",
)
@click.option("--quiet", is_flag=True, help="No progress lines.")
def bench_generate(
    lm: str,
    data: Path | None,
    users: str,
    prompts: int,
    train_prompts: int,
    comparisons: int,
    max_new_tokens: int,
    beta: float,
    rm_weight: float,
    options: tuple[str, ...],
    home: Path | None,
    out: Path | None,
    quiet: bool,
) -> None:
    """Personalized generation on P-SOUPS prompts: target moves, opposites apart, off-target, fluency, latency."""
    from ..bench.generate import USERS, GenerateBenchConfig, run_generate_bench
    from ..bench.generate_report import markdown_report
    from ..config import make_config
    from .core import _parse_options

    names = list(USERS) if users == "all" else [u.strip() for u in users.split(",") if u.strip()]
    settings = {
        "lm": lm,
        "users": names,
        "prompts": prompts,
        "train_prompts": train_prompts,
        "comparisons": comparisons,
        "max_new_tokens": max_new_tokens,
        "beta": beta,
        "rm_weight": rm_weight,
        **_parse_options(options),
    }
    if data is not None:
        settings["data"] = str(data)
    cfg = make_config(GenerateBenchConfig, settings)
    with tempfile.TemporaryDirectory(prefix="bench-generate-") as tmp:
        result = run_generate_bench(cfg, home=home or Path(tmp), progress=not quiet)
    click.echo(markdown_report(result))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        click.echo(f"wrote {out}")
