"""``persona encode``: precompute the features of a dataset into a feature cache."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from . import cli
from .core import _parse_options


@cli.command()
@click.option(
    "--data",
    "data",
    required=True,
    type=click.Path(path_type=Path),
    help="Comparisons, JSON Lines in the interchange format.",
)
@click.option("--encoder", "-e", default="minilm", show_default=True, help="Encoder plugin.")
@click.option(
    "--option", "-o", "options", multiple=True, help="Encoder option KEY=VALUE (repeatable)."
)
@click.option(
    "--cache",
    type=click.Path(path_type=Path),
    default=None,
    help="Feature-cache store to fill (default: the one `persona bench reward` reads, "
    "<user dir>/cache/bench_features.db).",
)
@click.option(
    "--store",
    "into_store",
    is_flag=True,
    help="Fill the engine's own store instead (for `persona train`).",
)
@click.option("--skip-bad", is_flag=True, help="Leave out invalid lines instead of stopping.")
@click.option("--limit", type=int, default=None, help="Encode the first N comparisons only.")
def encode(
    data: Path,
    encoder: str,
    options: tuple[str, ...],
    cache: Path | None,
    into_store: bool,
    skip_bad: bool,
    limit: int | None,
) -> None:
    """Encode every comparison of a dataset (prompt, (prompt, chosen), (prompt, rejected)) once
    and keep the features. Resumable: what was committed before Ctrl-C or a crash stays cached,
    and a second run encodes only what is missing."""
    from ..bench.reward import load_comparisons
    from ..engine import Engine
    from ..paths import cache_dir
    from ..store import Store
    from .common import get_engine

    comps, notes = load_comparisons(data, skip_bad=skip_bad)
    comps = comps[:limit] if limit else comps
    for note in notes:
        click.echo(note, err=True)
    config = _parse_options(options)
    if into_store:
        engine = get_engine()
        store = engine.store
    else:
        path = Path(cache) if cache else cache_dir() / "bench_features.db"
        store = Store(path)
        engine = Engine(home=path.parent, store=store)
    enc = engine.encoder(encoder, config)
    before = store.count_features(enc.id)
    started = time.perf_counter()
    try:
        engine.preference_data(comps, encoder=enc, progress=True)
    except KeyboardInterrupt:
        done = store.count_features(enc.id) - before
        click.echo(
            f"interrupted: {done} new feature rows were committed; run again to go on", err=True
        )
        sys.exit(130)
    seconds = time.perf_counter() - started
    new = store.count_features(enc.id) - before
    rate = f", {new / seconds:.1f} rows/s" if new and seconds > 0 else ""
    click.echo(
        f"{len(comps)} comparisons, encoder {enc.id}: {new} new feature rows in {seconds:.1f}s{rate} "
        f"({store.count_features(enc.id)} cached in {store.path})"
    )
