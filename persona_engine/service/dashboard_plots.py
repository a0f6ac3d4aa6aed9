"""The dashboard's plots: matplotlib figures rendered to PNG bytes.

Figures are built with the object API (``matplotlib.figure.Figure``, no pyplot), so request threads
never share pyplot's global state; one lock still serialises rendering, since matplotlib makes no
promise about concurrent use. matplotlib is imported on first use, not with the service.
"""

from __future__ import annotations

import base64
import io
import math
import threading
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .dashboard_data import ProfileMap

_render_lock = threading.Lock()
#: categories of an attribute drawn in their own colour; the rest are "other"
MAX_CATEGORIES = 10


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=90, layout="constrained")


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _errors(summaries: Sequence[dict[str, Any]]) -> tuple[list[float], np.ndarray]:
    """Accuracies (NaN where empty) and their CIs as matplotlib's (2, n) error lengths."""
    ys = [math.nan if s["accuracy"] is None else s["accuracy"] for s in summaries]
    err = np.zeros((2, len(ys)))
    for i, s in enumerate(summaries):
        if s.get("ci") is not None:
            err[:, i] = (s["accuracy"] - s["ci"][0], s["ci"][1] - s["accuracy"])
    return ys, err


def answers_curve_png(model: dict[str, Any]) -> bytes:
    """Online accuracy by how many answers the user had given, all pairs and pairs of new
    responses, with 95% CIs; the offline figure as a dashed line."""
    with _render_lock:
        fig = _figure(6.0, 3.3)
        ax = fig.add_subplot()
        buckets = model["by_answers"]
        xs = np.arange(len(buckets))
        for offset, series, label in (
            (-0.08, "all", "all pairs"),
            (0.08, "new_items", "new responses"),
        ):
            ys, err = _errors([b[series] for b in buckets])
            ax.errorbar(xs + offset, ys, yerr=err, marker="o", capsize=4, label=label)
        offline = model.get("offline")
        if offline:
            ax.axhline(offline["accuracy"], linestyle="--", color="0.3", label="offline figure")
        ax.axhline(0.5, linestyle=":", color="0.6")
        ax.set_xticks(xs, [f"{b['answers']}\nn={b['all']['n']}" for b in buckets])
        ax.set_xlabel("answers the user had given before the comparison")
        ax.set_ylabel("online accuracy")
        ax.set_ylim(0.0, 1.0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
        ax.set_title(f"{model['model_id']}: accuracy by answers (95% CI)", fontsize=10)
        return _png(fig)


def daily_png(model: dict[str, Any], days: int = 60) -> bytes:
    """Online accuracy per day (the last ``days`` days with outcomes) with 95% CIs."""
    with _render_lock:
        fig = _figure(6.0, 3.0)
        ax = fig.add_subplot()
        daily = model["daily"][-days:]
        ys, err = _errors(daily)
        xs = np.arange(len(daily))
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3)
        step = max(1, len(daily) // 8)
        ax.set_xticks(xs[::step], [d["day"] for d in daily][::step], rotation=30, fontsize=8)
        ax.axhline(0.5, linestyle=":", color="0.6")
        ax.set_ylim(0.0, 1.0)
        ax.set_ylabel("online accuracy")
        ax.grid(alpha=0.3)
        ax.set_title(f"{model['model_id']}: accuracy by day (95% CI)", fontsize=10)
        return _png(fig)


def _plain(text: str, limit: int = 40) -> str:
    """User data as matplotlib text: shortened, and ``$`` escaped (it would start mathtext)."""
    return text[:limit].replace("$", r"\$")


def _category(value: Any) -> str:
    return "(missing)" if value is None else _plain(str(value))


def map_png(profile_map: ProfileMap, colour: str | None) -> bytes:
    """The projected profiles, coloured by online accuracy (``colour=None``; grey: no outcomes)
    or by the user attribute ``colour`` (numbers on a colour scale, anything else by category)."""
    xy = profile_map.xy
    with _render_lock:
        fig = _figure(7.0, 5.2)
        ax = fig.add_subplot()
        if colour is None:
            acc = profile_map.sample_accuracy()
            none = np.isnan(acc)
            ax.scatter(xy[none, 0], xy[none, 1], s=6, c="0.8", label="no online outcomes")
            dots = ax.scatter(
                xy[~none, 0], xy[~none, 1], s=8, c=acc[~none], cmap="RdYlGn", vmin=0.0, vmax=1.0
            )
            fig.colorbar(dots, ax=ax, label=f"online accuracy under {profile_map.model_id}")
            if none.any():
                ax.legend(fontsize=8, loc="upper right")
        else:
            values = [a.get(colour) for a in profile_map.attributes]
            numeric = [
                isinstance(v, (int, float)) and not isinstance(v, bool)
                for v in values
                if v is not None
            ]
            if numeric and all(numeric):
                arr = np.array([np.nan if v is None else float(v) for v in values])
                missing = np.isnan(arr)
                ax.scatter(xy[missing, 0], xy[missing, 1], s=6, c="0.8", label="(missing)")
                dots = ax.scatter(
                    xy[~missing, 0], xy[~missing, 1], s=8, c=arr[~missing], cmap="viridis"
                )
                fig.colorbar(dots, ax=ax, label=_plain(colour))
                if missing.any():
                    ax.legend(fontsize=8, loc="upper right")
            else:
                cats = [_category(v) for v in values]
                top = [c for c, _ in Counter(cats).most_common(MAX_CATEGORIES)]
                cats = [c if c in top else "(other)" for c in cats]
                for cat in [*top, "(other)"]:
                    mask = np.array([c == cat for c in cats], dtype=bool)
                    if mask.any():
                        ax.scatter(xy[mask, 0], xy[mask, 1], s=8, label=cat)
                ax.legend(fontsize=8, title=_plain(colour), loc="upper right")
        e1, e2 = profile_map.explained
        ax.set_xlabel(f"PC1 ({e1:.0%} of the variance)")
        ax.set_ylabel(f"PC2 ({e2:.0%})")
        ax.grid(alpha=0.3)
        shown = len(profile_map.user_ids)
        sample = f" ({shown} drawn)" if shown < profile_map.n_profiles else ""
        ax.set_title(
            f"profiles under {profile_map.model_id}: {profile_map.n_profiles} users{sample}",
            fontsize=10,
        )
        return _png(fig)
