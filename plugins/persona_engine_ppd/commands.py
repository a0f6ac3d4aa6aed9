"""``persona ppd ...``: train the default PPD model, onboard a user from image pairs, generate."""

from __future__ import annotations

import json
from pathlib import Path

import click

from persona_engine.errors import InvalidInputError
from persona_engine.extras import require


def _require_images(command: str) -> None:
    """Fail on a missing ``images`` extra before touching the store or training anything."""
    require("diffusers", "images", f"persona ppd {command}")


@click.group()
def ppd() -> None:
    """Personalized images (PPD: user-conditioned Diffusion-DPO)."""


@ppd.command("train-synthetic")
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, path_type=Path),
    help="SyntheticRecipeConfig as JSON (sizes, steps, beta).",
)
@click.option(
    "--threads",
    type=int,
    default=1,
    show_default=True,
    help="torch CPU threads (1 is fastest on a busy machine).",
)
@click.option("--quiet", is_flag=True, help="No progress bars.")
def train_synthetic_cmd(config_file: Path | None, threads: int, quiet: bool) -> None:
    """Train the default tiny PPD model on the synthetic shapes task and register it as ppd-vN."""
    _require_images("train-synthetic")
    import torch

    from persona_engine.cli.common import get_engine
    from persona_engine.config import make_config

    from .generator import register_model
    from .recipe import SyntheticRecipeConfig, train_synthetic

    cfg = make_config(
        SyntheticRecipeConfig, json.loads(config_file.read_text()) if config_file else None
    )
    torch.set_num_threads(threads)
    engine = get_engine()
    version = engine.store.next_model_version("ppd")
    directory = engine.home / "models" / "ppd" / f"v{version}"
    run = train_synthetic(
        cfg,
        directory,
        work_dir=engine.home / "models" / "ppd" / f".work-v{version}",
        progress=not quiet,
    )
    rec = register_model(engine, directory)
    click.echo(
        f"trained {rec.id} in {sum(run.seconds.values()):.0f}s (DPO implicit accuracy {run.metrics['dpo_implicit_accuracy']:.3f}); saved to {directory}"
    )


@ppd.command("onboard")
@click.argument("user")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--model", default="", help="PPD model id or directory (default: the newest).")
def onboard_cmd(user: str, file: Path, model: str) -> None:
    """Embed USER from image pairs in FILE (JSON Lines: prompt, chosen and rejected image paths)."""
    _require_images("onboard")
    from persona_engine.cli.common import get_engine
    from persona_engine.ingest import iter_jsonl

    if not file.is_file():
        raise InvalidInputError(f"no such file: {file}")
    comps = []
    for lineno, item in iter_jsonl(file):
        if isinstance(item, Exception):
            raise InvalidInputError(f"{file.name} line {lineno}: {item}")
        comps.append(item.model_copy(update={"kind": "image", "user_id": user}))
    engine = get_engine()
    prof = engine.generator("ppd", {"model": model}).onboard(engine, user, comps)
    click.echo(f"onboarded {user} under {prof.model_id} from {prof.n_comparisons} pairs")


@ppd.command("generate")
@click.argument("user")
@click.argument("prompt")
@click.option(
    "--out",
    "out",
    type=click.Path(path_type=Path),
    required=True,
    help="Directory for the PNG files.",
)
@click.option("--n", "n_images", type=int, default=4, show_default=True, help="Images to generate.")
@click.option("--guidance", type=float, default=None, help="Guidance scale on the user.")
@click.option("--seed", type=int, default=None, help="Seed of the initial noise.")
@click.option("--model", default="", help="PPD model id or directory (default: the newest).")
def generate_cmd(
    user: str,
    prompt: str,
    out: Path,
    n_images: int,
    guidance: float | None,
    seed: int | None,
    model: str,
) -> None:
    """Generate images of PROMPT for USER into --out."""
    _require_images("generate")
    from persona_engine.cli.common import get_engine

    options = {"n_images": n_images, "guidance_scale": guidance, "seed": seed}
    result = get_engine().generate(
        user,
        prompt,
        generator="ppd",
        config={"model": model},
        **{k: v for k, v in options.items() if v is not None},
    )
    out.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(result.images):
        im.save(out / f"{user}-{i}.png")
    click.echo(
        f"wrote {len(result.images)} images to {out} ({result.info['user_source']} user, model {result.info['model']})"
    )
