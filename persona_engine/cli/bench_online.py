"""``persona bench online``: a dataset replayed through the service after launch; the online
curve by answers given, beside the offline benchmark's figures."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .bench import bench


@bench.command("online")
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    default=Path("../shared/data/popquorn/pairs.jsonl"),
    show_default=True,
    help="Comparisons in the interchange format (JSONL).",
)
@click.option(
    "--backends",
    default="hier,bt",
    show_default=True,
    help="Comma-separated; the first is paired against the others.",
)
@click.option("--seeds", default="0,1,2", show_default=True, help="Comma-separated split seeds.")
@click.option("--encoder", default="minilm", show_default=True, help="Text encoder of the models.")
@click.option(
    "--max-per-user",
    type=int,
    default=None,
    help="Replay at most this many comparisons per arriving user.",
)
@click.option(
    "--offline",
    type=click.Path(path_type=Path),
    default=None,
    help="The reward benchmark's JSON on the same data (persona bench reward --out), shown beside.",
)
@click.option(
    "--keep",
    type=click.Path(path_type=Path),
    default=None,
    help="Keep the replayed store of the first backend and last seed here (to open the dashboard on it).",
)
@click.option(
    "--out", type=click.Path(path_type=Path), default=None, help="Write the result JSON here."
)
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Write the curve (PNG) here.",
)
def bench_online(
    data: Path,
    backends: str,
    seeds: str,
    encoder: str,
    max_per_user: int | None,
    offline: Path | None,
    keep: Path | None,
    out: Path | None,
    plot_path: Path | None,
) -> None:
    """Launch on half the users, then replay the others' comparisons one request at a time through
    the service (online evaluation scores each before it is stored, profiles follow each answer);
    print accuracy by answers the user had given, per backend, and the paired difference."""
    from ..bench.online_replay import ReplayOptions, format_table, plot, run_online_replay
    from ..errors import InvalidInputError

    try:
        seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        raise InvalidInputError(
            f"--seeds must be comma-separated integers, got {seeds!r}"
        ) from None
    options = ReplayOptions(
        data=data,
        backends=[b.strip() for b in backends.split(",") if b.strip()],
        seeds=seed_list,
        encoder=encoder,
        max_per_user=max_per_user,
        offline=offline,
        keep=keep,
    )
    result = run_online_replay(options, log=lambda m: click.echo(m, err=True))
    click.echo(format_table(result))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        click.echo(f"wrote {out}")
    if plot_path is not None:
        plot(result, plot_path)
        click.echo(f"wrote {plot_path}")
