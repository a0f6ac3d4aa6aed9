"""Page-load time of the dashboard at product scale.

Builds a store of ``--users`` synthetic users (:class:`~persona_engine.bench.scale_population.
ScalePopulation`: 20 comparisons each over 5,000 items with ``seeded-random`` features, as
``persona bench scale`` does), fits ``lowrank-laplace`` on ``--train-users`` of them and onboards
the rest, then records ``--online-users`` users' next comparisons through ``Engine.record`` so
that online evaluation has outcomes to show. Every user gets a ``group`` attribute (for the map
coloured by an attribute).

Then the app runs under the TestClient with a logged-in client, and each page is loaded once to
warm it (the first load computes and caches the page's aggregates; reported as ``first_ms``) and
``--loads`` more times: p50 / p95 / max per page (``warm``). ``cold`` repeats ``--cold-loads``
loads with the dashboard's cache emptied before each: what a load costs right after the data
changed (at most once per ``PageCache.refresh_s`` while writes arrive). The user page is loaded
for different users; the try-it form ranks 5 candidates. Printed as JSON with the load average.

    python benchmarks/dashboard_load.py --users 100000 --out benchmarks/results/dashboard_load_100000.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from persona_engine.bench.scale_plugin import register_scale_plugins
from persona_engine.bench.scale_population import ScalePopulation


def _ms(times: list[float]) -> dict[str, float]:
    arr = np.asarray(times) * 1e3
    return {
        "p50_ms": round(float(np.percentile(arr, 50)), 1),
        "p95_ms": round(float(np.percentile(arr, 95)), 1),
        "max_ms": round(float(arr.max()), 1),
        "n": len(arr),
    }


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def build_store(home: Path, args: argparse.Namespace, log: Any = _log) -> dict[str, Any]:
    """The population, its model and profiles, some online traffic; returns setup timings."""
    from persona_engine.engine import Engine

    pop = ScalePopulation(args.users, per_user=20, pool=5000, dim=32, groups=16, seed=0)
    engine = Engine(home, encoder="seeded-random", encoder_config={"dim": 32, "seed": 0})
    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    for chunk in pop.chunks(2500):
        engine.store.add_comparisons(chunk)
    out["ingest_s"] = time.perf_counter() - t0
    log(f"ingested {args.users * 20} comparisons in {out['ingest_s']:.0f}s")
    t0 = time.perf_counter()
    n_train = min(args.train_users, args.users)
    options = {
        "rank": 16,
        "training": {"epochs": 30, "batch_size": 4096, "lr": 0.03, "patience": 3},
    }
    engine.train("lowrank-laplace", options, users=[pop.user_id(u) for u in range(n_train)])
    engine.update_profiles([pop.user_id(u) for u in range(n_train, args.users)])
    out["train_and_onboard_s"] = time.perf_counter() - t0
    log(f"trained on {n_train} users and onboarded the rest in {out['train_and_onboard_s']:.0f}s")
    t0 = time.perf_counter()
    with engine.store.transaction() as conn:  # setup only: attributes in one statement
        conn.executemany(
            "UPDATE users SET attributes=? WHERE id=?",
            [(json.dumps({"group": pop.group(u)}), pop.user_id(u)) for u in range(args.users)],
        )
    later = ScalePopulation(args.users, per_user=5, pool=5000, dim=32, groups=16, seed=1)
    online_users = min(args.online_users, args.users)
    for start in range(0, online_users, 2000):  # scored online, then stored
        engine.record(later.comparisons(start, min(start + 2000, online_users)))
    out["online_traffic_s"] = time.perf_counter() - t0
    out["counts"] = engine.store.status()["counts"]
    log(
        f"online traffic: {out['counts']['online_eval']} outcomes in {out['online_traffic_s']:.0f}s"
    )
    engine.store.close()
    return out


def time_pages(home: Path, args: argparse.Namespace) -> dict[str, Any]:
    from fastapi.testclient import TestClient

    from persona_engine.engine import Engine
    from persona_engine.service.app import create_app

    engine = Engine(home, encoder="seeded-random", encoder_config={"dim": 32, "seed": 0})
    app = create_app(engine)
    key = app.state.service.keys.create(name="dashboard-load")[1]
    rng = np.random.default_rng(0)
    pop = ScalePopulation(args.users, per_user=20, pool=5000, dim=32, groups=16, seed=0)
    users = [pop.user_id(int(u)) for u in rng.choice(args.users, args.loads + 1, replace=False)]
    items = [f"item-{i:06d}" for i in rng.choice(5000, 5, replace=False)]
    pages: dict[str, Any] = {
        "overview": lambda i: client.get("/dashboard"),
        "users": lambda i: client.get("/dashboard/users"),
        "users_by_attribute": lambda i: client.get("/dashboard/users", params={"colour": "group"}),
        "user": lambda i: client.get("/dashboard/user", params={"id": users[i]}),
        "try_it": lambda i: client.post(
            "/dashboard/user/rank",
            data={
                "id": users[i],
                "prompt": "Which one do you prefer?",
                "candidates": "\n".join(items),
            },
        ),
    }
    out: dict[str, Any] = {}
    cache = app.state.dashboard_cache
    with TestClient(app) as client:
        login = client.post("/dashboard/login", data={"key": key}, follow_redirects=False)
        assert login.status_code == 303, login.text
        for name, load in pages.items():
            t0 = time.perf_counter()
            r = load(args.loads)  # the one user not among the timed ones
            first = time.perf_counter() - t0
            assert r.status_code == 200, (name, r.status_code, r.text[:500])
            warm, cold = [], []
            for i in range(args.loads):
                t0 = time.perf_counter()
                r = load(i)
                warm.append(time.perf_counter() - t0)
                assert r.status_code == 200, (name, r.status_code)
            for i in range(args.cold_loads):
                cache.clear()
                t0 = time.perf_counter()
                assert load(i).status_code == 200, name
                cold.append(time.perf_counter() - t0)
            out[name] = {
                "first_ms": round(first * 1e3, 1),
                "warm": _ms(warm),
                "cold": _ms(cold) if cold else None,
                "bytes": len(r.content),
            }
        out["cache"] = {"hits": cache.hits, "stale": cache.stale, "misses": cache.misses}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--train-users", type=int, default=10_000)
    parser.add_argument(
        "--online-users", type=int, default=10_000, help="users with 5 new comparisons each"
    )
    parser.add_argument("--loads", type=int, default=20)
    parser.add_argument("--cold-loads", type=int, default=5, help="loads with the cache emptied")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--keep", action="store_true", help="keep the store (reused by --home)")
    parser.add_argument("--home", default=None, help="time the pages of an existing store")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    register_scale_plugins()
    result: dict[str, Any] = {
        "config": {k: v for k, v in vars(args).items() if k not in ("out", "workdir")},
        "machine": {"cpus": os.cpu_count(), "load_average_start": os.getloadavg()},
    }
    home = (
        Path(args.home)
        if args.home
        else Path(tempfile.mkdtemp(prefix="dashboard-", dir=args.workdir))
    )
    try:
        if not args.home:
            result["setup"] = build_store(home, args)
        result["machine"]["load_average_before_timing"] = os.getloadavg()
        result["pages"] = time_pages(home, args)
        result["machine"]["load_average_end"] = os.getloadavg()
    finally:
        if not args.keep and not args.home:
            shutil.rmtree(home, ignore_errors=True)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
