"""Online (prequential) evaluation: how well the active model predicts comparisons it never saw.

Every comparison recorded through :meth:`Engine.record`, :meth:`Engine.ingest` (``persona
ingest``) or the service is first scored by the user's current state under the active model (their
profile, or the cold-start rule for a user without one), and only then stored; the outcome is
stored with it in the same transaction (:mod:`persona_engine.store.online`). A comparison that was
already stored is never scored again, so every outcome is a prediction made before the model or the
user's profile could have seen that comparison.

:func:`online_report` turns the outcomes into what a product team asks after launch: accuracy and
log-loss per model version, by day and over a recent window, by how many answers the user had
given (the online personalization curve), on pairs of responses new to the user, the users served
worst, and a warning when a version does worse online than its offline figure.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import env_switch
from .encoders.cache import comparison_arrays
from .errors import InvalidInputError, NotFoundError
from .schemas import Comparison, ModelRecord, content_hash
from .store.online import OnlineOutcomes

if TYPE_CHECKING:
    from .engine import Engine

log = logging.getLogger("persona_engine.online")

#: the online personalization curve: how many answers the user had given before the comparison
ANSWER_BUCKETS: tuple[tuple[str, int, int | None], ...] = (
    ("0", 0, 0),
    ("1-4", 1, 4),
    ("5-19", 5, 19),
    ("20+", 20, None),
)


def enabled_by_default() -> bool:
    """``PERSONA_ENGINE_ONLINE_EVAL=0`` switches online evaluation off (default: on)."""
    return env_switch("PERSONA_ENGINE_ONLINE_EVAL")


class OnlineEvaluator:
    """Scores new comparisons under the active model before they are stored."""

    def __init__(self, engine: Engine, *, enabled: bool | None = None):
        self.engine = engine
        self.enabled = enabled_by_default() if enabled is None else enabled
        self.scored = 0
        #: batches that could not be scored (the comparisons were stored all the same)
        self.errors = 0

    def outcomes(self, comparisons: Sequence[Comparison]) -> OnlineOutcomes:
        """The active model's scores of the text comparisons (not ties) of a batch, for the store
        to keep beside the ones it stores (a comparison stored before keeps no new outcome); empty
        when evaluation is off or no model is trained.

        Only what the moment knows is computed here: the margin under the user's state now and
        what that state is. The user's history facts (answers given before, new responses) follow
        from the stored comparisons and are computed when outcomes are read
        (:mod:`persona_engine.store.online`).

        Evaluation never costs a write: when scoring fails (a model file gone, an encoder that
        cannot read these texts), the failure is logged and counted and the batch is stored
        without outcomes.
        """
        if not self.enabled or not comparisons:
            return OnlineOutcomes.none(len(comparisons))
        rec = self.engine.store.active_model()
        if rec is None:
            return OnlineOutcomes.none(len(comparisons))
        try:
            out = self._score(rec, comparisons)
        except Exception as e:  # noqa: BLE001 - see the docstring: a write must not fail here
            self.errors += 1
            log.warning(
                "online evaluation skipped for %d comparisons under %s: %s",
                len(comparisons),
                rec.id,
                e,
            )
            return OnlineOutcomes.none(len(comparisons))
        self.scored += out.n_scored
        return out

    def _score(self, rec: ModelRecord, comparisons: Sequence[Comparison]) -> OnlineOutcomes:
        engine = self.engine
        hashes: dict[str, str] = {}  # text -> hash, each distinct text hashed once
        texts: dict[str, str] = {}  # hash -> text, for what must be encoded

        def h(text: str) -> str:
            hv = hashes.get(text)
            if hv is None:
                hv = hashes[text] = content_hash(text)
                texts[hv] = text
            return hv

        scored = [i for i, c in enumerate(comparisons) if c.kind == "text" and not c.tie]
        n = len(comparisons)
        margins = np.full(n, np.nan)
        states: list[str | None] = [None] * n
        if not scored:
            return OnlineOutcomes(rec.id, margins, states, hashes)
        todo = [comparisons[i] for i in scored]
        prompts = [h(c.prompt) for c in todo]
        chosen_h = [h(c.chosen) for c in todo]
        rejected_h = [h(c.rejected) for c in todo]
        backend = engine.backend(rec)
        users = list(dict.fromkeys(c.user_id for c in todo))
        found = engine.store.profile_vectors(rec.id, users)
        vecs, kinds = [], []
        for u in users:
            if u in found:
                vec, source = found[u]
                kind = "prior" if source == "prior" else "profile"
            else:
                vec, kind = engine.cold_start_state(u, rec, backend).vector, "prior"
            vecs.append(vec)
            kinds.append(kind)
        position = {u: k for k, u in enumerate(users)}
        of_user = np.fromiter((position[c.user_id] for c in todo), dtype=np.int64, count=len(todo))
        vectors = np.stack(vecs).astype(np.float32, copy=False)[of_user]
        prompt, chosen, rejected = comparison_arrays(
            engine.store, engine.model_encoder(rec), prompts, chosen_h, rejected_h, texts
        )
        margins[scored] = backend.reward_batch(vectors, prompt, chosen) - backend.reward_batch(
            vectors, prompt, rejected
        )
        for i, k in zip(scored, of_user.tolist()):
            states[i] = kinds[k]
        return OnlineOutcomes(rec.id, margins, states, hashes)


# -- the report ------------------------------------------------------------------------------
def cluster_summaries(
    users: np.ndarray,
    correct: np.ndarray,
    loss: np.ndarray,
    subsets: dict[str, np.ndarray],
    rng: np.random.Generator,
    B: int,
    *,
    chunk: int = 100,
) -> dict[str, dict[str, Any]]:
    """Accuracy and log-loss over the comparisons of each subset (a boolean mask over the rows),
    with 95% CIs from one bootstrap over users shared by every subset (a user's comparisons are
    not independent of each other).

    Each resample draws the users with replacement and every subset's figure is the ratio of its
    resampled sums (a domain estimate: a subset's users are whatever the resample drew of them).
    The resample weights are drawn ``chunk`` resamples at a time and applied to all subsets in one
    product, so the report costs about one bootstrap however many subsets it shows.
    """
    ids, inv = np.unique(users, return_inverse=True)
    n_users = len(ids)
    names = list(subsets)
    # per user and subset: comparisons, hits, summed loss (columns of one matrix)
    per_user = np.zeros((n_users, 3 * len(names)))
    out: dict[str, dict[str, Any]] = {}
    for j, name in enumerate(names):
        m = subsets[name].astype(np.float64)
        per_user[:, 3 * j] = np.bincount(inv, weights=m, minlength=n_users)
        per_user[:, 3 * j + 1] = np.bincount(inv, weights=m * correct, minlength=n_users)
        per_user[:, 3 * j + 2] = np.bincount(inv, weights=m * loss, minlength=n_users)
        n = int(per_user[:, 3 * j].sum())
        out[name] = (
            {
                "n": n,
                "users": int((per_user[:, 3 * j] > 0).sum()),
                "accuracy": float(per_user[:, 3 * j + 1].sum() / n),
                "log_loss": float(per_user[:, 3 * j + 2].sum() / n),
                "ci": None,
                "log_loss_ci": None,
            }
            if n
            else {"n": 0, "users": 0, "accuracy": None, "ci": None, "log_loss": None}
        )
    if n_users < 2 or B < 1:
        return out
    draws = []
    for start in range(0, B, chunk):
        size = min(chunk, B - start)
        w = rng.multinomial(n_users, np.full(n_users, 1.0 / n_users), size=size)
        draws.append(w.astype(np.float64) @ per_user)
    sums = np.concatenate(draws)  # (B, 3 * subsets)
    with np.errstate(invalid="ignore", divide="ignore"):
        for j, name in enumerate(names):
            if out[name]["users"] < 2:
                continue
            denom = sums[:, 3 * j]
            acc = sums[:, 3 * j + 1] / denom
            ll = sums[:, 3 * j + 2] / denom
            out[name]["ci"] = [float(v) for v in np.nanquantile(acc, [0.025, 0.975])]
            out[name]["log_loss_ci"] = [float(v) for v in np.nanquantile(ll, [0.025, 0.975])]
    return out


def cluster_summary(
    users: np.ndarray, correct: np.ndarray, loss: np.ndarray, rng: np.random.Generator, B: int
) -> dict[str, Any]:
    """:func:`cluster_summaries` of all the rows."""
    everything = np.ones(len(correct), dtype=bool)
    return cluster_summaries(users, correct, loss, {"all": everything}, rng, B)["all"]


def _since(value: str | None) -> str | None:
    """An ISO date or datetime, or ``<N>d`` (the last N days), as the store's timestamp text."""
    if value is None:
        return None
    text = value.strip()
    if text.endswith("d") and text[:-1].isdigit():
        return (datetime.now(timezone.utc) - timedelta(days=int(text[:-1]))).isoformat()
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInputError(
            f"--since must be a date (2026-12-01), a datetime or a number of days (7d), got {value!r}"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc).isoformat()


def online_report(
    engine: Engine,
    *,
    model: str | None = None,
    since: str | None = None,
    tenant: str | None = None,
    window: int = 1000,
    recent: int = 20,
    min_recent: int = 5,
    worst: int = 10,
    resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """What online evaluation says, per model version (``model``: one id or backend name;
    default: every version with outcomes, the active one first).

    ``window``: the last comparisons per version for the sliding-window figure; ``recent`` /
    ``min_recent``: each user's last outcomes that rank the users served worst (users with fewer
    are not ranked); ``tenant``: only that tenant's users. CIs are 95% bootstraps over users.
    """
    if window < 1 or recent < 1 or min_recent < 1 or worst < 0 or resamples < 10:
        raise InvalidInputError(
            "window, recent and min_recent must be positive, worst >= 0, resamples >= 10"
        )
    model_id = None if model is None else engine.model_record(model).id
    rows = engine.store.online_outcomes(model_id=model_id, since=_since(since), tenant=tenant)
    active = engine.store.active_model()
    by_model: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_model.setdefault(r["model_id"], []).append(r)
    order = sorted(by_model, key=lambda m: (active is None or m != active.id, m))
    return {
        "since": since,
        "tenant": tenant,
        "active_model": None if active is None else active.id,
        "enabled": engine.online.enabled,
        "models": [
            _model_report(
                engine, m, by_model[m], window, recent, min_recent, worst, resamples, seed
            )
            for m in order
        ],
    }


def _model_report(
    engine: Engine,
    model_id: str,
    rows: list[dict[str, Any]],
    window: int,
    recent: int,
    min_recent: int,
    worst: int,
    resamples: int,
    seed: int,
) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    users = np.array([r["user_id"] for r in rows])
    correct = np.array([r["correct"] for r in rows], dtype=np.float64)
    margin = np.array([r["margin"] for r in rows], dtype=np.float64)
    loss = np.logaddexp(0.0, -margin)  # -log sigmoid(margin)
    n_before = np.array([r["n_before"] for r in rows])
    new = np.array([bool(r["new_items"]) for r in rows])
    days = np.array([r["created_at"][:10] for r in rows])

    tail = np.zeros(len(rows), dtype=bool)
    tail[-window:] = True
    subsets: dict[str, np.ndarray] = {
        "overall": np.ones(len(rows), dtype=bool),
        "window": tail,
        "new_items": new,
    }
    for label, lo, hi in ANSWER_BUCKETS:
        in_bucket = (n_before >= lo) & (n_before <= (np.inf if hi is None else hi))
        subsets[f"answers {label}"] = in_bucket
        subsets[f"answers {label} new"] = in_bucket & new
    day_list = sorted(set(days.tolist()))
    for d in day_list:
        subsets[f"day {d}"] = days == d
    fig = cluster_summaries(users, correct, loss, subsets, rng, resamples)
    report: dict[str, Any] = {
        "model_id": model_id,
        "overall": fig["overall"],
        "window": {"size": int(tail.sum()), **fig["window"]},
        "new_items": fig["new_items"],
        "by_answers": [
            {
                "answers": label,
                "all": fig[f"answers {label}"],
                "new_items": fig[f"answers {label} new"],
            }
            for label, *_ in ANSWER_BUCKETS
        ],
        "daily": [{"day": d, **fig[f"day {d}"]} for d in day_list],
        "worst_users": _worst_users(users, correct, loss, recent, min_recent, worst),
        "first": rows[0]["created_at"],
        "last": rows[-1]["created_at"],
    }
    report["offline"], report["warning"] = _offline_check(engine, model_id, report["window"])
    return report


def _worst_users(
    users: np.ndarray,
    correct: np.ndarray,
    loss: np.ndarray,
    recent: int,
    min_recent: int,
    worst: int,
) -> list[dict[str, Any]]:
    """Users ranked by accuracy over their last ``recent`` outcomes (then by log-loss)."""
    rows: dict[str, list[int]] = {}
    for i, u in enumerate(users.tolist()):
        rows.setdefault(u, []).append(i)
    ranked: list[dict[str, Any]] = []
    for u, idx in rows.items():
        last = idx[-recent:]
        if len(last) < min_recent:
            continue
        ranked.append(
            {
                "user_id": u,
                "n": len(last),
                "accuracy": float(correct[last].mean()),
                "log_loss": float(loss[last].mean()),
            }
        )
    ranked.sort(key=lambda r: (r["accuracy"], -r["log_loss"], r["user_id"]))
    return ranked[:worst]


def _offline_check(
    engine: Engine, model_id: str, window: dict[str, Any]
) -> tuple[dict[str, Any] | None, str | None]:
    """The version's offline figure (see :meth:`Engine.set_offline_figure`) and a warning when
    the recent online accuracy is below it by more than the online CI."""
    try:
        rec = engine.store.model(model_id)
    except NotFoundError:  # a version deleted since its outcomes were stored
        return None, None
    offline = rec.metrics.get("offline")
    if not isinstance(offline, dict) or window.get("ci") is None:
        return offline if isinstance(offline, dict) else None, None
    if window["ci"][1] < offline["accuracy"]:
        lo, hi = window["ci"]
        return offline, (
            f"{model_id}: online accuracy over the last {window['size']} comparisons is "
            f"{window['accuracy']:.3f} (95% CI {lo:.3f}-{hi:.3f}), below its offline figure "
            f"{offline['accuracy']:.3f} ({offline.get('source') or 'no source given'})"
        )
    return offline, None


def format_report(report: dict[str, Any]) -> str:
    """The report as text for a terminal."""

    def fig(s: dict[str, Any]) -> str:
        if not s["n"]:
            return "-"
        ci = "" if s["ci"] is None else f" ({s['ci'][0]:.3f}-{s['ci'][1]:.3f})"
        return f"{s['accuracy']:.3f}{ci} n={s['n']} users={s['users']} log-loss {s['log_loss']:.3f}"

    lines = []
    if not report["enabled"]:
        lines.append("online evaluation is off (PERSONA_ENGINE_ONLINE_EVAL=0)")
    if not report["models"]:
        lines.append(
            "no online outcomes yet: comparisons are scored when they are recorded after a model is trained"
        )
    for m in report["models"]:
        active = " (active)" if m["model_id"] == report["active_model"] else ""
        lines.append(f"{m['model_id']}{active}: {m['first'][:19]} .. {m['last'][:19]}")
        lines.append(f"  overall      {fig(m['overall'])}")
        lines.append(f"  last {m['window']['size']:<7} {fig(m['window'])}")
        lines.append(f"  new items    {fig(m['new_items'])}")
        if m["offline"]:
            lines.append(
                f"  offline      {m['offline']['accuracy']:.3f} ({m['offline'].get('source') or 'no source given'})"
            )
        lines.append("  by answers the user had given (all pairs | pairs of new responses):")
        for b in m["by_answers"]:
            lines.append(f"    {b['answers']:>5}  {fig(b['all'])}  |  {fig(b['new_items'])}")
        lines.append("  by day:")
        for d in m["daily"][-14:]:
            lines.append(f"    {d['day']}  {fig(d)}")
        if m["worst_users"]:
            lines.append("  users served worst (their recent comparisons):")
            for u in m["worst_users"]:
                lines.append(
                    f"    {u['user_id']}: {u['accuracy']:.2f} over {u['n']} (log-loss {u['log_loss']:.3f})"
                )
        if m["warning"]:
            lines.append(f"  WARNING: {m['warning']}")
    return "\n".join(lines)
