"""``persona bench reward``: personalized reward backends against bt and the two baselines."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..errors import InvalidInputError
from .bench import bench


def _int_list(text: str, what: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InvalidInputError(f"{what} must be comma-separated integers, got {text!r}") from None
    if not values:
        raise InvalidInputError(f"{what} must name at least one value")
    return values


def _backend_options(options: tuple[str, ...], backends: list[str]) -> dict[str, dict]:
    """``BACKEND.KEY=VALUE`` pairs into per-backend option dicts (VALUE parsed as JSON if it is)."""
    from .core import _parse_options

    parsed = _parse_options(options)
    unknown = sorted(set(parsed) - set(backends))
    if unknown:
        raise InvalidInputError(
            f"options for backends not in the run: {unknown} (write BACKEND.KEY=VALUE)"
        )
    return {k: v for k, v in parsed.items() if isinstance(v, dict)}


@bench.command("reward")
@click.option(
    "--data",
    "data",
    required=True,
    type=click.Path(path_type=Path),
    help="Comparisons, JSON Lines in the interchange format.",
)
@click.option(
    "--backends",
    default="bt,per_user,bt_residual",
    show_default=True,
    help="Comma-separated backends; per_user and bt_residual are the baselines.",
)
@click.option(
    "--shots",
    default="1,5,10,20",
    show_default=True,
    help="Comma-separated numbers of shots for unseen users.",
)
@click.option(
    "--seed",
    default=0,
    show_default=True,
    type=int,
    help="First seed (seeds are SEED, SEED+1, ...); also the bootstrap's seed.",
)
@click.option(
    "--seeds",
    "n_seeds",
    default=3,
    show_default=True,
    type=click.IntRange(min=1),
    help="Number of seeds; each redraws the user split, the shots and every backend's seed.",
)
@click.option(
    "--old-split-seeds",
    default=1,
    show_default=True,
    type=click.IntRange(min=0),
    help="Also fit and score the old 70/30 split by comparison on this many seeds (seen accuracy, for comparison; 0: off).",
)
@click.option(
    "--out",
    "out",
    type=click.Path(path_type=Path),
    default=None,
    help="Write the result JSON here.",
)
@click.option(
    "--plot",
    "plot",
    type=click.Path(path_type=Path),
    default=None,
    help="PNG of unseen accuracy against shots with CIs (default: beside --out).",
)
@click.option(
    "--encoder", default="minilm", show_default=True, help="Encoder plugin for the texts."
)
@click.option(
    "--encoder-option",
    "encoder_options",
    multiple=True,
    help="Encoder option KEY=VALUE (repeatable).",
)
@click.option(
    "--max-per-user",
    type=int,
    default=None,
    help="Keep at most this many comparisons per user (seeded sample).",
)
@click.option(
    "--min-comparisons",
    type=int,
    default=20,
    show_default=True,
    help="Users with fewer comparisons are left out.",
)
@click.option(
    "--min-test",
    type=int,
    default=5,
    show_default=True,
    help="Unseen users with fewer test comparisons (sharing no text with the 20 candidate shots) are left out.",
)
@click.option(
    "--test-fraction",
    type=float,
    default=0.3,
    show_default=True,
    help="Seen users' share of kept pairs held out as test pairs (split by text).",
)
@click.option(
    "--cold-start-option",
    "cold_start_options",
    multiple=True,
    help="Option of the engine's cold-start rule KEY=VALUE (repeatable), e.g. max_comparisons=1.",
)
@click.option(
    "--chunk-users",
    type=int,
    default=None,
    help="Cut each user into pseudo-users of this many comparisons (sets with very few users).",
)
@click.option(
    "--cache",
    type=click.Path(path_type=Path),
    default=None,
    help="Feature-cache database (default: <user dir>/cache/bench_features.db).",
)
@click.option(
    "--option",
    "-o",
    "options",
    multiple=True,
    help="Backend option BACKEND.KEY=VALUE (repeatable; dotted keys nest).",
)
@click.option(
    "--blas-threads",
    type=int,
    default=1,
    show_default=True,
    help="numpy BLAS threads during the run (0: leave as is).",
)
@click.option(
    "--skip-bad",
    is_flag=True,
    help="Leave out invalid lines (e.g. an empty response) instead of stopping; the count is reported.",
)
@click.option(
    "--name", "dataset", default=None, help="Dataset name in the result (default: the file name)."
)
@click.option("--quiet", is_flag=True, help="No progress bars.")
def bench_reward(
    data: Path,
    backends: str,
    shots: str,
    seed: int,
    n_seeds: int,
    old_split_seeds: int,
    out: Path | None,
    plot: Path | None,
    encoder: str,
    encoder_options: tuple[str, ...],
    max_per_user: int | None,
    min_comparisons: int,
    min_test: int,
    test_fraction: float,
    cold_start_options: tuple[str, ...],
    chunk_users: int | None,
    cache: Path | None,
    options: tuple[str, ...],
    blas_threads: int,
    skip_bad: bool,
    dataset: str | None,
    quiet: bool,
) -> None:
    """Few-shot accuracy of unseen users onboarded through the engine (on test pairs sharing no
    text with their shots, at every k), its slope from k=1 to k=20, seen-user accuracy (split by
    text, and the old split), per user and pooled, over several seeds with bootstrap CIs; fit
    time, onboarding latency and scoring throughput of reward backends on a JSONL file."""
    from ..bench.protocol import ProtocolConfig
    from ..bench.report import markdown_report, plot_shots
    from ..bench.reward import RewardBenchOptions, run_reward_benchmark
    from .core import _parse_options

    names = [b.strip() for b in backends.split(",") if b.strip()]
    opts = RewardBenchOptions(
        data=data,
        backends=names,
        shots=sorted(set(_int_list(shots, "--shots"))),
        seed=seed,
        seeds=n_seeds,
        old_split_seeds=old_split_seeds,
        encoder=encoder,
        encoder_config=_parse_options(encoder_options),
        protocol=ProtocolConfig(
            min_comparisons=min_comparisons,
            max_per_user=max_per_user,
            chunk_users=chunk_users,
            min_test=min_test,
            test_fraction=test_fraction,
        ),
        cold_start=_parse_options(cold_start_options),
        cache=cache,
        backend_options=_backend_options(options, names),
        dataset=dataset,
        skip_bad=skip_bad,
        blas_threads=blas_threads or None,
        progress=not quiet,
    )
    result = run_reward_benchmark(opts, log=lambda msg: click.echo(msg, err=True))
    click.echo(markdown_report(result))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1) + "\n")
        click.echo(f"\nwrote {out}", err=True)
    if plot is None and out is not None:
        plot = out.with_suffix(".png")
    if plot is not None:
        click.echo(f"wrote {plot_shots(result, plot)}", err=True)
