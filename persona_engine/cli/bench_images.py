"""``persona bench images``: PPD personalized images on the synthetic shapes task."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..errors import InvalidInputError
from .bench import bench


@bench.command("images")
@click.option(
    "--preset",
    type=click.Choice(["cpu", "gpu"]),
    default="cpu",
    show_default=True,
    help="Sizes: 'cpu' fits a shared 2-core machine; 'gpu' is the larger run for a CUDA device.",
)
@click.option(
    "--seeds",
    default="0,1,2,3,4",
    show_default=True,
    help="Comma-separated seeds (of the task, the users, training and sampling), run in turn; the headline is their mean.",
)
@click.option(
    "--encoder",
    "encoder_objective",
    type=click.Choice(["self-supervised", "reconstruction", "supervised-attributes"]),
    default=None,
    help="How the tiny image encoder is trained (default: the preset's, self-supervised). 'supervised-attributes' is the oracle tiny-image-supervised, for comparison only.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    default=Path("benchmarks/results"),
    show_default=True,
    help="Directory for images.json and the PNG grids.",
)
@click.option(
    "--work",
    "work_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Checkpoints and the trained model (rerunning resumes from them; default: a temporary directory).",
)
@click.option(
    "--device", default="cpu", show_default=True, help="torch device (cuda for the gpu preset)."
)
@click.option(
    "--threads",
    type=int,
    default=1,
    show_default=True,
    help="torch CPU threads (1 is fastest when other processes share the cores).",
)
@click.option(
    "--guidance",
    default="1,3",
    show_default=True,
    help="Comma-separated guidance scales on the user to evaluate.",
)
@click.option(
    "--override",
    "override",
    default=None,
    help='JSON merged into the preset, e.g. \'{"recipe": {"dpo": {"beta": 500}}}\'.',
)
@click.option("--quiet", is_flag=True, help="No progress bars.")
def bench_images(
    preset: str,
    seeds: str,
    encoder_objective: str | None,
    out_dir: Path,
    work_dir: Path | None,
    device: str,
    threads: int,
    guidance: str,
    override: str | None,
    quiet: bool,
) -> None:
    """Train PPD on the synthetic shapes task and measure held-out users onboarded from 4 pairs."""
    import torch

    from ..bench.images import markdown, run_images_bench

    try:
        scales = tuple(float(x) for x in guidance.split(",") if x.strip())
        seed_list = tuple(int(x) for x in seeds.split(",") if x.strip())
        extra = json.loads(override) if override else None
    except ValueError as e:
        raise InvalidInputError(f"bad --guidance, --seeds or --override: {e}") from None
    if not scales:
        raise InvalidInputError("--guidance needs at least one scale")
    torch.set_num_threads(threads)
    result = run_images_bench(
        preset=preset,
        seeds=seed_list,
        out_dir=out_dir,
        work_dir=work_dir,
        overrides=extra,
        guidance_scales=scales,
        encoder_objective=encoder_objective,
        device=device,
        progress=not quiet,
    )
    click.echo(markdown(result))
    seconds = ", ".join(f"{x:.0f}s" for x in result["seconds_total"])
    click.echo(
        f"\nper seed {seconds}; wrote {out_dir / 'images.json'}, {', '.join(result['per_seed_files'])}, {result['pictures']['grid']}, {result['pictures']['interpolation']}"
    )
