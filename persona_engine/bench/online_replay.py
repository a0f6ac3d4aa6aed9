"""``persona bench online``: replay a preference dataset through the service, as if launched.

For each seed, the users are split as in the reward benchmark (:func:`~.protocol.make_split`,
same seed, same seen/unseen users). *Launch*: the seen users' comparisons are recorded and each
backend is trained on them through :meth:`Engine.train`. *After launch*: the unseen users arrive
and give their comparisons one request at a time, ``POST /v1/comparisons?update_profile=true``
on the service (each user's in file order, users interleaved at random), so each comparison is
first scored by online evaluation under the user's state at that moment (the cold-start rule, then
their profile as it follows their answers) and then stored. The outcomes the store keeps are read
back; nothing is scored beside the product path.

Every backend replays the same requests in the same order, so their outcomes pair one to one: the
difference per bucket of answers is a paired figure (bootstrap over users). The offline figures
(the reward benchmark's unseen-user accuracy after onboarding from k shots, on a fixed test set of
pairs new to the user) are read from that benchmark's JSON and shown beside the online curve; the
two measure different things on the same users (the next comparison after k answers vs a fixed
test set after k shots) and are compared as such.

POPQUORN has no timestamps: "in time order" is each annotator's order in the file.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidInputError
from ..online import cluster_summary
from ..schemas import Comparison
from .protocol import ProtocolConfig, make_split, user_rng
from .reward import load_comparisons

#: answers a user had given before the comparison: the bins of the online curve
BINS: tuple[tuple[str, int, int | None], ...] = (
    ("0", 0, 0),
    ("1-4", 1, 4),
    ("5-9", 5, 9),
    ("10-19", 10, 19),
    ("20-39", 20, 39),
    ("40+", 40, None),
)
STAGE_ARRIVAL = 11


@dataclass
class ReplayOptions:
    data: Path
    backends: list[str] = field(default_factory=lambda: ["hier", "bt"])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    encoder: str = "minilm"
    encoder_config: dict[str, Any] = field(default_factory=dict)
    backend_config: dict[str, dict[str, Any]] = field(default_factory=dict)
    max_per_user: int | None = None  # cap each arriving user's comparisons (None: all)
    offline: Path | None = None  # the reward benchmark's JSON on the same data
    keep: Path | None = None  # keep the first backend's store of the last seed here (dashboards)
    resamples: int = 1000


def arrival_order(users: dict[str, list[int]], seed: int) -> list[int]:
    """Rows in arrival order: each user's rows keep their order; who speaks next is drawn at
    random in proportion to how many rows each user has left (a seeded interleaving)."""
    rng = user_rng(seed, STAGE_ARRIVAL)
    slots = np.concatenate([np.full(len(rows), i) for i, rows in enumerate(users.values())])
    rng.shuffle(slots)
    queues = [list(rows) for rows in users.values()]
    heads = [0] * len(queues)
    order = []
    for i in slots.tolist():
        order.append(queues[i][heads[i]])
        heads[i] += 1
    return order


def _record_payload(c: Comparison) -> dict[str, Any]:
    return {"user_id": c.user_id, "prompt": c.prompt, "chosen": c.chosen, "rejected": c.rejected}


def _replay_one(
    template: Path,
    backend: str,
    model_id: str,
    comps: Sequence[Comparison],
    order: Sequence[int],
    options: ReplayOptions,
    log: Callable[[str], None],
    keep: Path | None = None,
) -> dict[str, Any]:
    """Copy the launched store, make ``model_id`` active, replay ``order`` through the service;
    with ``keep``, copy the replayed store there."""
    from fastapi.testclient import TestClient

    from ..engine import Engine
    from ..service.app import create_app

    home = Path(tempfile.mkdtemp(prefix=f"replay-{backend}-"))
    try:
        shutil.copytree(template, home, dirs_exist_ok=True)
        _relocate(home, template)
        engine = Engine(home, encoder=options.encoder, encoder_config=options.encoder_config)
        with engine.store.transaction() as conn:
            conn.execute("UPDATE models SET active = (id = ?)", (model_id,))  # the one model served
        active = engine.store.active_model()
        if active is None or active.id != model_id:
            raise RuntimeError(f"could not make {model_id} the active model")
        app = create_app(engine)
        key = app.state.service.keys.create(name="replay")[1]
        headers = {"Authorization": f"Bearer {key}"}
        started = time.perf_counter()
        with TestClient(app) as client:
            for j, row in enumerate(order):
                resp = client.post(
                    "/v1/comparisons",
                    params={"update_profile": "true"},
                    json=_record_payload(comps[row]),
                    headers=headers,
                )
                if resp.status_code != 201:
                    raise RuntimeError(f"replay request {j} failed: {resp.status_code} {resp.text}")
                if (j + 1) % 1000 == 0:
                    log(f"  {backend}: {j + 1}/{len(order)} requests")
        wall = time.perf_counter() - started
        rows = engine.store.online_outcomes(model_id=model_id)
        errors = engine.online.errors
        engine.store.close()
        if keep is not None:
            shutil.rmtree(keep, ignore_errors=True)
            shutil.copytree(home, keep)
            _relocate(keep, home)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    if len(rows) != len(order):
        raise RuntimeError(
            f"{backend}: {len(order)} comparisons replayed but {len(rows)} online outcomes stored "
            f"({errors} scoring failures)"
        )
    return {"rows": rows, "wall_s": wall, "requests_per_s": len(order) / wall}


def _relocate(home: Path, old: Path) -> None:
    """A copied home's registry still names model files under ``old`` (paths are absolute)."""
    import sqlite3

    conn = sqlite3.connect(home / "persona.db")
    with conn:
        conn.execute("UPDATE models SET path = replace(path, ?, ?)", (str(old), str(home)))
    conn.close()


def _launch(
    comps: Sequence[Comparison], rows: np.ndarray, options: ReplayOptions, home: Path
) -> dict[str, str]:
    """Record the launch users' comparisons, train every backend; returns backend -> model id."""
    from ..engine import Engine

    engine = Engine(home, encoder=options.encoder, encoder_config=options.encoder_config)
    engine.record([comps[i] for i in rows.tolist()])
    models = {}
    for b in options.backends:
        models[b] = engine.train(b, options.backend_config.get(b)).id
    engine.store.close()
    return models


def _bin_of(n_before: np.ndarray) -> np.ndarray:
    out = np.empty(len(n_before), dtype=object)
    for label, lo, hi in BINS:
        out[(n_before >= lo) & (n_before <= (np.inf if hi is None else hi))] = label
    return out


def summarize(
    runs: dict[str, list[list[dict[str, Any]]]], resamples: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Online curves per backend (pooled over seeds; users of different seeds count apart) and
    paired differences of every backend against the first."""
    rng = np.random.default_rng(seed)
    arrays: dict[str, dict[str, np.ndarray]] = {}
    for b, seed_rows in runs.items():
        users, correct, margin, n_before, new = [], [], [], [], []
        for s, rows in enumerate(seed_rows):
            users += [f"{s}:{r['user_id']}" for r in rows]
            correct += [r["correct"] for r in rows]
            margin += [r["margin"] for r in rows]
            n_before += [r["n_before"] for r in rows]
            new += [bool(r["new_items"]) for r in rows]
        nb = np.asarray(n_before)
        arrays[b] = {
            "users": np.asarray(users),
            "correct": np.asarray(correct, dtype=np.float64),
            "loss": np.logaddexp(0.0, -np.asarray(margin, dtype=np.float64)),
            "n_before": nb,
            "bin": _bin_of(nb),
            "new": np.asarray(new),
        }
    curves: dict[str, Any] = {}
    for b, a in arrays.items():
        curves[b] = {
            label: {
                "all": cluster_summary(
                    a["users"][m], a["correct"][m], a["loss"][m], rng, resamples
                ),
                "new_items": cluster_summary(
                    a["users"][m & a["new"]],
                    a["correct"][m & a["new"]],
                    a["loss"][m & a["new"]],
                    rng,
                    resamples,
                ),
            }
            for label, *_ in BINS
            for m in [a["bin"] == label]
        }
        curves[b]["overall"] = cluster_summary(a["users"], a["correct"], a["loss"], rng, resamples)
    names = list(arrays)
    paired: dict[str, Any] = {}
    base = arrays[names[0]]
    for b in names[1:]:
        a = arrays[b]
        if not (
            np.array_equal(a["users"], base["users"])
            and np.array_equal(a["n_before"], base["n_before"])
        ):
            raise RuntimeError(
                f"{b} and {names[0]} did not replay the same comparisons in the same order"
            )
        diff = base["correct"] - a["correct"]
        fresh = base["new"]
        paired[f"{names[0]}-{b}"] = {
            label: _paired(base["users"][m], diff[m], rng, resamples)
            for label, *_ in BINS
            for m in [base["bin"] == label]
        } | {"overall": _paired(base["users"], diff, rng, resamples)}
        paired[f"{names[0]}-{b} new items"] = {
            label: _paired(base["users"][m], diff[m], rng, resamples)
            for label, *_ in BINS
            for m in [(base["bin"] == label) & fresh]
        } | {"overall": _paired(base["users"][fresh], diff[fresh], rng, resamples)}
    return {"curves": curves, "paired": paired}


def _paired(
    users: np.ndarray, diff: np.ndarray, rng: np.random.Generator, B: int
) -> dict[str, Any]:
    """Mean difference in accuracy over the same comparisons, 95% CI over users (the online
    report's user bootstrap, applied to the per-comparison differences)."""
    if len(diff) == 0:
        return {"n": 0, "diff": None, "ci": None}
    s = cluster_summary(users, diff, np.zeros_like(diff), rng, B)
    return {"n": s["n"], "users": s["users"], "diff": s["accuracy"], "ci": s["ci"]}


def offline_figures(path: Path, backends: Sequence[str]) -> dict[str, Any]:
    """The reward benchmark's unseen-user (per-user) accuracy after k shots, per backend."""
    data = json.loads(Path(path).read_text())
    out: dict[str, Any] = {
        "file": str(path),
        "encoder": data.get("encoder"),
        "seeds": data.get("seeds"),
    }
    for b in backends:
        unseen = data.get("results", {}).get(b, {}).get("unseen")
        if unseen:
            out[b] = {
                k: {"accuracy": v["per_user"], "ci": v["per_user_ci95"]} for k, v in unseen.items()
            }
    return out


def run_online_replay(
    options: ReplayOptions, *, log: Callable[[str], None] = print
) -> dict[str, Any]:
    if not options.backends or not options.seeds:
        raise InvalidInputError("give at least one backend and one seed")
    comps, notes = load_comparisons(options.data)
    user_ids = [c.user_id for c in comps]
    runs: dict[str, list[list[dict[str, Any]]]] = {b: [] for b in options.backends}
    per_seed = []
    load0 = os.getloadavg()[0]
    for seed in options.seeds:
        split = make_split(user_ids, ProtocolConfig(seed=seed))
        seen = set(split.seen_users)
        launch_rows = np.array([i for i, u in enumerate(user_ids) if u in seen], dtype=np.int64)
        arriving: dict[str, list[int]] = {}
        for i, u in enumerate(user_ids):
            if u in split.unseen_users:
                arriving.setdefault(u, []).append(i)
        if options.max_per_user is not None:
            arriving = {u: r[: options.max_per_user] for u, r in arriving.items()}
        order = arrival_order(arriving, seed)
        template = Path(tempfile.mkdtemp(prefix="replay-launch-"))
        try:
            log(f"seed {seed}: launch on {len(seen)} users ({len(launch_rows)} comparisons)")
            models = _launch(comps, launch_rows, options, template)
            info: dict[str, Any] = {
                "seed": seed,
                "launch_users": len(seen),
                "launch_comparisons": int(len(launch_rows)),
                "arriving_users": len(arriving),
                "replayed": len(order),
                "models": models,
                "runs": {},
            }
            for b in options.backends:
                log(
                    f"seed {seed}: replaying {len(order)} comparisons of {len(arriving)} users under {models[b]}"
                )
                keep = (
                    options.keep if (seed, b) == (options.seeds[-1], options.backends[0]) else None
                )
                res = _replay_one(template, b, models[b], comps, order, options, log, keep)
                runs[b].append(res["rows"])
                info["runs"][b] = {
                    "wall_s": round(res["wall_s"], 1),
                    "requests_per_s": round(res["requests_per_s"], 1),
                }
            per_seed.append(info)
        finally:
            shutil.rmtree(template, ignore_errors=True)
    result: dict[str, Any] = {
        "data": str(options.data),
        "notes": notes,
        "encoder": options.encoder,
        "backends": options.backends,
        "seeds": options.seeds,
        "bins": [label for label, *_ in BINS],
        "per_seed": per_seed,
        "load_average_at_start": round(load0, 2),
        **summarize(runs, options.resamples),
    }
    if options.offline is not None:
        result["offline"] = offline_figures(options.offline, options.backends)
    return result


def format_table(result: dict[str, Any]) -> str:
    def cell(s: dict[str, Any]) -> str:
        if not s["n"]:
            return "-"
        ci = "" if s["ci"] is None else f" ({s['ci'][0]:.3f}-{s['ci'][1]:.3f})"
        return f"{s['accuracy']:.3f}{ci}"

    lines = [
        "answers before | "
        + " | ".join(result["backends"])
        + " | n | "
        + " | ".join(result["paired"])
    ]
    for label in result["bins"]:
        first = result["curves"][result["backends"][0]][label]["all"]
        row = [cell(result["curves"][b][label]["all"]) for b in result["backends"]]
        pair = []
        for p in result["paired"].values():
            d = p[label]
            pair.append(
                "-"
                if d["diff"] is None
                else f"{d['diff']:+.3f} ({d['ci'][0]:+.3f}..{d['ci'][1]:+.3f})"
            )
        lines.append(f"{label} | " + " | ".join(row) + f" | {first['n']} | " + " | ".join(pair))
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    """Online accuracy by answers given (bins, 95% CIs) beside the offline accuracy after k shots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    centers = {"0": 0, "1-4": 2.5, "5-9": 7, "10-19": 14.5, "20-39": 29.5, "40+": 50}
    fig, ax = plt.subplots(figsize=(7, 4.2))
    colors = {b: f"C{i}" for i, b in enumerate(result["backends"])}
    for b in result["backends"]:
        xs, ys, lo, hi = [], [], [], []
        for label in result["bins"]:
            s = result["curves"][b][label]["all"]
            if s["n"] and s["ci"] is not None:
                xs.append(centers[label])
                ys.append(s["accuracy"])
                lo.append(s["accuracy"] - s["ci"][0])
                hi.append(s["ci"][1] - s["accuracy"])
        ax.errorbar(
            xs,
            ys,
            yerr=[lo, hi],
            marker="o",
            capsize=3,
            color=colors[b],
            label=f"{b} online (next comparison)",
        )
        off = result.get("offline", {}).get(b)
        if off:
            ks = sorted(off, key=int)
            ax.errorbar(
                [int(k) for k in ks],
                [off[k]["accuracy"] for k in ks],
                yerr=[
                    [off[k]["accuracy"] - off[k]["ci"][0] for k in ks],
                    [off[k]["ci"][1] - off[k]["accuracy"] for k in ks],
                ],
                marker="s",
                linestyle="--",
                capsize=3,
                color=colors[b],
                alpha=0.6,
                label=f"{b} offline (fixed test set after k shots)",
            )
    ax.set_xlabel("answers the user had given")
    ax.set_ylabel("accuracy")
    ax.set_title("POPQUORN replayed through the service: online vs offline")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
