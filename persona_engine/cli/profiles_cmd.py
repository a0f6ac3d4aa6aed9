"""Profile commands: ``persona profile show/export/import/set/update/index``, ``persona similar``,
``persona next-queries``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..errors import InvalidInputError
from ..extras import require
from . import cli
from .common import echo_json, get_engine


@cli.group()
def profile() -> None:
    """Users' profiles: show, export, import, attributes, updates, the similar-user index."""


@profile.command("show")
@click.argument("user")
@click.option("--model", default=None, help="Model id or backend name (default: the active model).")
def profile_show(user: str, model: str | None) -> None:
    """Print USER's profile under the model (or their cold-start prior when they have none)."""
    engine = get_engine()
    info = engine.store.user(user)  # unknown users: a clear error
    rec = engine.model_record(model)
    prof = engine.store.profile(user, rec.id)
    out = {
        "user_id": user,
        "attributes": info["attributes"],
        "n_comparisons": info["n_comparisons"],
        "model_id": rec.id,
    }
    if prof is not None:
        out["profile"] = prof.model_dump(mode="json")
    else:
        backend = engine.backend(rec)
        state, rule = engine.cold_start.state(user, rec, backend)
        out["profile"] = None
        out["cold_start"] = {"rule": rule, "vector": state.vector.tolist()}
    echo_json(out)


@profile.command("export")
@click.argument("user")
@click.option(
    "--output",
    "-o",
    type=click.Path(path_type=Path),
    default=None,
    help="Write here (default: stdout).",
)
@click.option("--model", default=None, help="Only this model version (default: every version).")
def profile_export(user: str, output: Path | None, model: str | None) -> None:
    """Export USER's profiles and attributes as JSON."""
    text = get_engine().export_profile(user, model=model).model_dump_json(indent=2)
    if output is None:
        click.echo(text)
    else:
        output.write_text(text)
        click.echo(f"wrote {output}")


@profile.command("import")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--as", "as_user", default=None, help="Store under this user id instead.")
def profile_import(file: Path, as_user: str | None) -> None:
    """Import a profile exported by `persona profile export`."""
    if not file.is_file():
        raise InvalidInputError(f"no such file: {file}")
    try:
        doc = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InvalidInputError(f"{file} is not JSON: {e}") from None
    stored = get_engine().import_profile(doc, as_user=as_user)
    for p in stored:
        click.echo(f"imported {p.user_id} under {p.model_id} ({len(p.vector)} values)")


@profile.command("set")
@click.argument("user")
@click.argument("attributes", nargs=-1, required=True)
def profile_set(user: str, attributes: tuple[str, ...]) -> None:
    """Set USER's attributes (KEY=VALUE ...; VALUE parsed as JSON when it is JSON)."""
    attrs = {}
    for a in attributes:
        if "=" not in a:
            raise InvalidInputError(f"attribute {a!r} must look like KEY=VALUE")
        key, raw = a.split("=", 1)
        try:
            attrs[key] = json.loads(raw)
        except json.JSONDecodeError:
            attrs[key] = raw
    engine = get_engine()
    current = engine.store.user(user)["attributes"] if engine.store.has_user(user) else {}
    engine.set_user_attributes(user, {**current, **attrs})
    echo_json(engine.store.user(user)["attributes"])


@profile.command("update")
@click.argument("users", nargs=-1, required=True)
@click.option("--model", default=None, help="Model id or backend name (default: the active model).")
def profile_update(users: tuple[str, ...], model: str | None) -> None:
    """Re-embed USERS under the model from their stored comparisons (no refit)."""
    engine = get_engine()
    unknown = [u for u in users if not engine.store.has_user(u)]
    if unknown:
        raise InvalidInputError(f"unknown users: {', '.join(unknown)}")
    echo_json(engine.update_profiles(list(users), model=model))


@profile.command("index")
@click.option("--model", default=None, help="Model id or backend name (default: the active model).")
@click.option("--rebuild", is_flag=True, help="Rebuild it from the store.")
@click.option(
    "--compact",
    is_flag=True,
    help="Write the saved index again without the users deleted since it was saved (drops its tombstones).",
)
@click.option(
    "--recall-queries",
    type=int,
    default=0,
    help="Measure recall@10 against exact search on this many users.",
)
def profile_index(model: str | None, rebuild: bool, compact: bool, recall_queries: int) -> None:
    """Show the similar-user index of the model (kind, size, memory)."""
    require("faiss", "cpu", "persona profile index")
    engine = get_engine()
    index = engine.profile_index(model, refresh=rebuild)
    out: dict[str, object] = {
        "model_id": index.meta.get("model_id"),
        "kind": index.kind,
        "users": len(index),
        "dim": index.dim,
        "tombstones": index.n_dead,
        "device": index.runtime.device,
        "bytes": index.memory_bytes(),
    }
    if compact:
        out["compacted"] = engine.compact_profile_indexes(model)
    if recall_queries and len(index):
        ids = index.user_ids()[:: max(1, len(index) // recall_queries)][:recall_queries]
        out["recall_at_10"] = index.recall_at_k(index.vectors(ids)[1], 10)
    echo_json(out)


@cli.command()
@click.argument("user")
@click.option("-k", default=10, show_default=True, help="How many users.")
@click.option("--model", default=None, help="Model id or backend name (default: the active model).")
def similar(user: str, k: int, model: str | None) -> None:
    """The users nearest to USER in the model's space."""
    require("faiss", "cpu", "persona similar")
    for s in get_engine().similar_users(user, k, model=model):
        click.echo(f"{s.distance:.4f}\t{s.user_id}")


@cli.command("next-queries")
@click.argument("user")
@click.argument("candidates", nargs=-1, required=True)
@click.option("-n", default=3, show_default=True, help="How many comparisons to propose.")
@click.option("--prompt", "-p", default="", help="The prompt the candidates answer.")
@click.option("--model", default=None, help="Model id or backend name (default: the active model).")
@click.option(
    "--method",
    type=click.Choice(["auto", "population", "posterior"]),
    default="auto",
    show_default=True,
    help="Where plausible user vectors come from (see Engine.next_queries).",
)
def next_queries(
    user: str, candidates: tuple[str, ...], n: int, prompt: str, model: str | None, method: str
) -> None:
    """The comparisons among CANDIDATES whose answers tell the most about USER."""
    engine = get_engine()
    for q in engine.next_queries(
        user, list(candidates), n, prompt=prompt, model=model, method=method
    ):
        click.echo(f"{q.information:.4f}\t{q.a}\t{q.b}")
