"""``persona eval online`` (how the active model does on comparisons recorded after it was
trained) and ``persona eval offline`` (record a version's offline figure to compare with)."""

from __future__ import annotations

import click

from . import cli
from .common import echo_json, get_engine


@cli.group("eval")
def eval_group() -> None:
    """Online evaluation of the model versions on the comparisons users give after launch."""


@eval_group.command("online")
@click.option(
    "--model", default=None, help="One model id or backend name (default: every version)."
)
@click.option(
    "--since",
    default=None,
    help="Only outcomes from this date (2026-12-01) or the last N days (7d).",
)
@click.option("--tenant", default=None, help="Only this tenant's users.")
@click.option(
    "--window", default=1000, show_default=True, help="Comparisons in the sliding window."
)
@click.option(
    "--worst", default=10, show_default=True, help="How many of the users served worst to list."
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def eval_online(
    model: str | None, since: str | None, tenant: str | None, window: int, worst: int, as_json: bool
) -> None:
    """Accuracy and log-loss of each version on comparisons it scored before storing them: by day,
    over a recent window, by how many answers the user had given, on new responses; the users
    served worst; a warning when a version does worse than its offline figure."""
    from ..online import format_report

    report = get_engine().online_report(
        model=model, since=since, tenant=tenant, window=window, worst=worst
    )
    if as_json:
        echo_json(report)
    else:
        click.echo(format_report(report))


@eval_group.command("offline")
@click.argument("model")
@click.option("--accuracy", type=float, required=True, help="The version's offline accuracy.")
@click.option("--low", type=float, default=None, help="Lower end of its 95% CI.")
@click.option("--high", type=float, default=None, help="Upper end of its 95% CI.")
@click.option("--source", default="", help="Where the figure comes from (a benchmark run).")
def eval_offline(
    model: str, accuracy: float, low: float | None, high: float | None, source: str
) -> None:
    """Record MODEL's offline accuracy; `persona eval online` warns when the online figure falls below it."""
    if (low is None) != (high is None):
        raise click.UsageError("give both --low and --high, or neither")
    ci = None if low is None or high is None else (low, high)
    rec = get_engine().set_offline_figure(model, accuracy, ci=ci, source=source)
    echo_json({"model_id": rec.id, "offline": rec.metrics["offline"]})
