"""Core commands: init, ingest, train, onboard, score, rank."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..errors import InvalidInputError
from ..extras import require
from ..heap import freeze_startup_objects
from . import cli
from .common import echo_json, get_engine


def _parse_options(options: tuple[str, ...]) -> dict:
    """KEY=VALUE pairs (VALUE parsed as JSON when it is JSON); dotted keys make nested options."""
    out: dict = {}
    for opt in options:
        if "=" not in opt:
            raise InvalidInputError(f"option {opt!r} must look like KEY=VALUE")
        key, raw = opt.split("=", 1)
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out


@cli.command()
def init() -> None:
    """Create the user directory and the store (idempotent)."""
    engine = get_engine()
    click.echo(f"store ready at {engine.store.path}")


@cli.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--skip-bad", is_flag=True, help="Report bad lines and store the rest.")
@click.option("--limit", type=int, default=None, help="Read at most this many lines.")
def ingest(file: Path, skip_bad: bool, limit: int | None) -> None:
    """Store the comparisons of a JSON Lines FILE (re-ingesting adds nothing)."""
    engine = get_engine()
    freeze_startup_objects()  # a long file: see persona_engine.heap
    report = engine.ingest(file, skip_bad=skip_bad, progress=True, limit=limit)
    click.echo(report.summary())
    for line, msg in report.errors[:20]:
        click.echo(f"  line {line}: {msg}", err=True)


@cli.command()
@click.option("--backend", "-b", default="bt", show_default=True, help="Reward backend plugin.")
@click.option(
    "--option",
    "-o",
    "options",
    multiple=True,
    help="Backend option KEY=VALUE (repeatable; dotted keys nest).",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, path_type=Path),
    help="Backend options as a JSON file.",
)
@click.option(
    "--encoder", "-e", default=None, help="Encoder plugin for the features (default: minilm)."
)
@click.option(
    "--encoder-option",
    "encoder_options",
    multiple=True,
    help="Encoder option KEY=VALUE (repeatable).",
)
@click.option(
    "--finetune",
    "finetune_options",
    multiple=True,
    help="Fine-tune LoRA adapters on the hf encoder's backbone first, with option KEY=VALUE "
    "(repeatable, e.g. --finetune r=8 --finetune epochs=1), or 'default' for the defaults.",
)
def train(
    backend: str,
    options: tuple[str, ...],
    config_file: Path | None,
    encoder: str | None,
    encoder_options: tuple[str, ...],
    finetune_options: tuple[str, ...],
) -> None:
    """Fit a population reward model on all stored comparisons."""
    config = json.loads(config_file.read_text()) if config_file else {}
    config.update(_parse_options(options))
    enc_config = _parse_options(encoder_options) if encoder_options else None
    finetune = (
        _parse_options(tuple(o for o in finetune_options if o != "default"))
        if finetune_options
        else None
    )
    if finetune is not None:
        require("peft", "finetune", "persona train --finetune")
    rec = get_engine().train(
        backend,
        config,
        encoder=encoder,
        encoder_config=enc_config,
        progress=True,
        finetune=finetune,
    )
    click.echo(
        f"trained {rec.id} on {rec.data['comparisons']} comparisons of {rec.data['users']} users in {rec.data['fit_seconds']:.1f}s; saved to {rec.path}"
    )


@cli.command()
@click.argument("user")
@click.argument("file", type=click.Path(path_type=Path), required=False)
@click.option("--model", default=None, help="Model id or backend name (default: the active model).")
def onboard(user: str, file: Path | None, model: str | None) -> None:
    """Place USER in the model's space from their comparisons (from FILE, if given)."""
    engine = get_engine()
    comps = None
    if file is not None:
        from ..ingest import iter_jsonl

        if not file.is_file():
            raise InvalidInputError(f"no such file: {file}")
        comps = []
        for lineno, item in iter_jsonl(file):
            if isinstance(item, Exception):
                raise InvalidInputError(f"{file.name} line {lineno}: {item}")
            comps.append(item.model_copy(update={"user_id": user}))
    prof = engine.onboard(user, comps, model=model)
    echo_json(prof.model_dump(mode="json"))


@cli.command()
@click.argument("user")
@click.argument("candidates", nargs=-1, required=True)
@click.option("--prompt", "-p", default="", help="The prompt the candidates answer.")
@click.option("--model", default=None, help="Model id or backend name.")
def score(user: str, candidates: tuple[str, ...], prompt: str, model: str | None) -> None:
    """Score CANDIDATES for USER."""
    scores = get_engine().score(user, prompt, list(candidates), model=model)
    for c, s in zip(candidates, scores):
        click.echo(f"{s:+.4f}\t{c}")


@cli.command()
@click.argument("user")
@click.argument("candidates", nargs=-1, required=True)
@click.option("--prompt", "-p", default="", help="The prompt the candidates answer.")
@click.option("--model", default=None, help="Model id or backend name.")
def rank(user: str, candidates: tuple[str, ...], prompt: str, model: str | None) -> None:
    """Rank CANDIDATES for USER, best first."""
    for i, (c, s) in enumerate(get_engine().rank(user, prompt, list(candidates), model=model), 1):
        click.echo(f"{i}. {s:+.4f}\t{c}")


@cli.command()
def models() -> None:
    """List trained model versions."""
    for m in get_engine().store.models():
        click.echo(
            f"{'*' if m.active else ' '} {m.id:<16} {m.trained_at:%Y-%m-%d %H:%M}  {m.data.get('comparisons', '?')} comparisons  {m.encoder}"
        )
