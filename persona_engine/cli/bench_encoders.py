"""``persona bench encoders``: encoding cost of each encoder on a dataset."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .bench import bench
from .core import _parse_options


@bench.command("encoders")
@click.option(
    "--data", required=True, type=click.Path(path_type=Path), help="JSON Lines comparisons."
)
@click.option(
    "--encoders",
    default="minilm,minilm-pair,hf",
    show_default=True,
    help="Comma-separated encoder plugins.",
)
@click.option(
    "--encoder-option",
    "encoder_options",
    multiple=True,
    help="ENCODER.KEY=VALUE options (repeatable), e.g. hf.layer=20.",
)
@click.option("-n", "n", default=200, show_default=True, help="Comparisons encoded cold.")
@click.option(
    "--prompts", default=20, show_default=True, help="Prompts in the prefix-reuse measurement."
)
@click.option(
    "--min-prompt-tokens",
    default=0,
    show_default=True,
    help="Also measure prefix reuse on prompts of at least this many tokens.",
)
@click.option("--threads", type=int, default=None, help="torch threads (default: torch's).")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Write JSON here.")
def bench_encoders(
    data: Path,
    encoders: str,
    encoder_options: tuple[str, ...],
    n: int,
    prompts: int,
    min_prompt_tokens: int,
    threads: int | None,
    out: Path | None,
) -> None:
    """Seconds and rows per second of cold encoding per encoder, and the prefix reuse of `hf`."""
    from ..bench.encoders import run_encoder_benchmark

    names = [e.strip() for e in encoders.split(",") if e.strip()]
    options = _parse_options(encoder_options)
    result = run_encoder_benchmark(
        data,
        [(name, options.get(name, {})) for name in names],
        n=n,
        prompts=prompts,
        min_prompt_tokens=min_prompt_tokens,
        threads=threads,
        progress=True,
        log=lambda m: click.echo(m, err=True),
    )
    text = json.dumps(result, indent=1)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n")
    click.echo(text)
