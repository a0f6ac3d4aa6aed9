"""``persona ppd ...``: train a PPD model (on the synthetic task, or on real pairs with a local
diffusers pipeline), onboard a user from image pairs, generate."""

from __future__ import annotations

import json
from pathlib import Path

import click

from persona_engine.errors import InvalidInputError
from persona_engine.extras import require

from .precision import DTYPE_NAMES


def _require_images(command: str) -> None:
    """Fail on a missing ``images`` extra before touching the store or training anything."""
    require("diffusers", "images", f"persona ppd {command}")


dtype_option = click.option(
    "--dtype",
    type=click.Choice(DTYPE_NAMES),
    default=None,
    help="Precision of the model: float32 (the default), float16, bfloat16, or auto (bfloat16 on a CUDA device that supports it). The DPO loss is computed in float32 and images are saved from float32 whatever this is.",
)


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
@dtype_option
@click.option("--quiet", is_flag=True, help="No progress bars.")
def train_synthetic_cmd(
    config_file: Path | None, threads: int, dtype: str | None, quiet: bool
) -> None:
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
    if dtype is not None:
        cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"dtype": dtype})})
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


@ppd.command("train")
@click.option(
    "--pairs",
    "pairs_file",
    type=click.Path(path_type=Path),
    required=True,
    help='JSON Lines, one comparison a line: {"user_id", "prompt", "chosen", "rejected"} (image paths, absolute or relative to the file).',
)
@click.option(
    "--backbone",
    type=click.Path(path_type=Path),
    required=True,
    help="Local diffusers text-to-image pipeline directory (e.g. Stable Diffusion 1.5).",
)
@click.option(
    "--encoder", default="clip-image", show_default=True, help="Image encoder plugin of the users."
)
@click.option(
    "--encoder-config",
    default="{}",
    help='Its options as JSON, e.g. \'{"model_path": "/models/clip-vit-large"}\'.',
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, path_type=Path),
    help="DPOConfig as JSON (steps, batch_size, accumulation_steps, lr, beta, gradient_checkpointing, device).",
)
@click.option("--steps", type=int, default=None, help="Optimisation steps (overrides --config).")
@click.option(
    "--user-space",
    type=click.Choice(["encoder", "population"]),
    default="encoder",
    show_default=True,
    help="Where user embeddings live: the whole encoder embedding, or the subspace the training users' pairs span (needs users with more than `shots` pairs; saved with the model, used at onboarding).",
)
@click.option(
    "--work",
    "work_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Checkpoints and pair features; rerunning with the same --work resumes (default: under the model directory's parent).",
)
@click.option("--threads", type=int, default=1, show_default=True, help="torch CPU threads.")
@dtype_option
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train_cmd(
    pairs_file: Path,
    backbone: Path,
    encoder: str,
    encoder_config: str,
    config_file: Path | None,
    steps: int | None,
    user_space: str,
    work_dir: Path | None,
    threads: int,
    dtype: str | None,
    quiet: bool,
) -> None:
    """Train a PPD adapter on real preference pairs (streamed from disk) and register it as ppd-vN."""
    _require_images("train")
    import torch

    from persona_engine.cli.common import get_engine
    from persona_engine.config import make_config

    from .checkpoint import build_model, save_model
    from .config import AdapterConfig, DPOConfig, ModelConfig
    from .generator import register_model
    from .pairs_data import index_pairs, pair_feature_differences
    from .trainer import finetune_ppd_on_pairs

    try:
        enc_options = json.loads(encoder_config)
    except ValueError as e:
        raise InvalidInputError(f"bad --encoder-config: {e}") from None
    if not backbone.is_dir():
        raise InvalidInputError(f"no diffusers pipeline directory at {backbone}")
    options = json.loads(config_file.read_text()) if config_file else {}
    if steps is not None:
        options["steps"] = steps
    cfg = make_config(DPOConfig, options)
    torch.set_num_threads(threads)
    engine = get_engine()
    index = index_pairs(pairs_file)
    enc = engine.encoder(encoder, enc_options)
    version = engine.store.next_model_version("ppd")
    directory = engine.home / "models" / "ppd" / f"v{version}"
    work = work_dir or engine.home / "models" / "ppd" / f".work-v{version}"
    diffs = pair_feature_differences(index, enc, work / "pair_features.npy")
    model_cfg = ModelConfig(
        backbone="pipeline",
        pipeline_path=str(backbone.resolve()),
        encoder=encoder,
        encoder_config=enc_options,
        dtype=dtype or "float32",
        adapter=AdapterConfig(user_space=user_space),
    )
    model = build_model(model_cfg, diffs.shape[1], seed=cfg.seed, device=cfg.device)
    result = finetune_ppd_on_pairs(
        model, index, diffs, cfg, checkpoint_dir=work / "dpo", progress=not quiet
    )
    metrics = {
        "dpo_loss": result.final("loss"),
        "dpo_implicit_accuracy": result.final("implicit_acc"),
        "pairs_per_s": result.final("pairs_per_s"),
        "train_pairs": len(index),
        "train_users": len(index.users),
    }
    save_model(model, model_cfg, directory, metrics=metrics)
    rec = register_model(engine, directory)
    click.echo(
        f"trained {rec.id} on {len(index)} pairs of {len(index.users)} users in {cfg.steps} steps (loss {metrics['dpo_loss']:.4f}, {metrics['pairs_per_s'] or 0:.1f} pairs/s); saved to {directory}"
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
@dtype_option
@click.option("--device", default=None, help="torch device, e.g. cuda (default: cpu).")
def generate_cmd(
    user: str,
    prompt: str,
    out: Path,
    n_images: int,
    guidance: float | None,
    seed: int | None,
    model: str,
    dtype: str | None,
    device: str | None,
) -> None:
    """Generate images of PROMPT for USER into --out."""
    _require_images("generate")
    from persona_engine.cli.common import get_engine

    options = {"n_images": n_images, "guidance_scale": guidance, "seed": seed}
    result = get_engine().generate(
        user,
        prompt,
        generator="ppd",
        config={
            "model": model,
            **({"dtype": dtype} if dtype else {}),
            **({"device": device} if device else {}),
        },
        **{k: v for k, v in options.items() if v is not None},
    )
    out.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(result.images):
        im.save(out / f"{user}-{i}.png")
    click.echo(
        f"wrote {len(result.images)} images to {out} ({result.info['user_source']} user, model {result.info['model']})"
    )
