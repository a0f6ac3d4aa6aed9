"""``persona bench scale``: user profiles at product scale, through the real Store and Engine.

A synthetic population (:mod:`.scale_population`: ``--users`` users, 20 comparisons each over a
shared pool of items with synthetic features) goes through the whole profile path on one SQLite
file, and every phase is timed:

1. ingest: ``Store.add_comparisons`` in batches (validated ``Comparison`` objects are made
   outside the timed part, and timed on their own); re-ingesting a batch adds nothing;
2. fit ``lowrank-laplace`` on ``train_users`` users (``Engine.train``);
3. onboard every other user under it (``Engine.update_profiles``: batched re-embedding), plus
   single-user ``Engine.onboard`` latency on a sample;
4. build the similar-user index from the store (``ProfileIndexes.build``);
5. query latency of ``Engine.similar_users(user, 10)`` (median, p99) and of the bare index
   search, recall@10 of the index against exact search;
6. ingest after launch with online evaluation off and on (``Engine.ingest`` of JSONL files of new
   comparisons of profiled users, off/on/on/off twice): the throughput cost of scoring each new
   comparison before it is stored, and the cost of the outcomes' history facts, computed after;
7. online update (``record(..., update_profile=True)`` then a query), ``delete_user`` (a tombstone
   beside the saved index), then the compaction of the saved index, whose files are read back to
   check that no deleted user's id or vector is left in them;
8. counts in against counts stored (comparisons, profiles, index entries), store and index size on
   disk, peak resident memory (``ru_maxrss``).
"""

from __future__ import annotations

import gc
import os
import resource
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..heap import FullCollections, freeze_startup_objects
from ..progress import progress_bar
from ..store import Store
from .scale_population import PROMPT, ScalePopulation


@dataclass
class ScaleConfig:
    users: int = 10_000
    per_user: int = 20
    pool: int = 5000
    item_dim: int = 32
    rank: int = 16
    groups: int = 16
    train_users: int = 0  # 0: 10% of the users, at least 1,000 and at most 20,000
    ingest_batch: int = 50_000
    onboard_chunk: int = 5000
    queries: int = 2000
    recall_queries: int = 500
    onboard_sample: int = 200
    online_users: int = 8000  # users who give 5 new comparisons each in the online-evaluation phase
    deletes: int = 20  # users deleted in phase 7
    seed: int = 0
    workdir: str | None = None
    keep: bool = False
    index: dict[str, Any] = field(default_factory=dict)


def _rss_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def _dir_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def _latencies(times: list[float]) -> dict[str, float]:
    arr = np.asarray(times) * 1e3
    return {
        "median_ms": float(np.median(arr)),
        "p99_ms": float(np.percentile(arr, 99)),
        "mean_ms": float(arr.mean()),
        "n": len(arr),
    }


def run_scale(cfg: ScaleConfig, *, progress: bool = True, log: Any = print) -> dict[str, Any]:
    """Run the benchmark; returns the figures (see the module docstring)."""
    from ..engine import Engine
    from .scale_plugin import register_scale_plugins

    register_scale_plugins()
    work = Path(tempfile.mkdtemp(prefix=f"scale-{cfg.users}-", dir=cfg.workdir))
    out: dict[str, Any] = {
        "config": asdict(cfg),
        "machine": {"cpus": os.cpu_count(), "load_average_start": os.getloadavg()},
    }
    try:
        pop = ScalePopulation(
            cfg.users, cfg.per_user, cfg.pool, cfg.item_dim, cfg.groups, seed=cfg.seed
        )
        engine = Engine(
            work,
            encoder="seeded-random",
            encoder_config={"dim": cfg.item_dim, "seed": cfg.seed},
            index=cfg.index,
        )
        engine._indexes.install()  # change-log triggers on: their cost is part of every profile write
        out["ingest"] = _ingest(engine, pop, cfg, progress, log)
        out["train"] = _train(engine, pop, cfg, log)
        out["onboarding"] = _onboard(engine, pop, cfg, progress, log)
        out["index"] = _index(engine, pop, cfg, log)
        # as `persona serve` does: index upkeep (log catch-up, pruning, saves) on its own thread
        stop_upkeep = engine.follow_profile_changes()
        out["queries"] = _queries(engine, pop, cfg, log)
        # after launch, as `persona serve` and `persona ingest` run (see persona_engine.heap)
        out["frozen_objects"] = freeze_startup_objects()
        out["online_eval"] = _online_ingest(engine, pop, cfg, work, log)
        out["updates"] = _updates(engine, pop, cfg, log)
        out["counts"] = _counts(engine, pop, cfg, out)
        stop_upkeep()
        if isinstance(engine.store, Store):  # the bench runs on SQLite: fold the WAL in first
            engine.store.db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        out["disk"] = {
            "store_mb": sum(
                (work / n).stat().st_size
                for n in ("persona.db", "persona.db-wal")
                if (work / n).exists()
            )
            / 2**20,
            "indexes_mb": _dir_mb(work / "indexes") if (work / "indexes").exists() else 0.0,
        }
        out["memory"] = {"peak_rss_mb": _peak_mb(), "rss_end_mb": _rss_mb()}
        out["machine"]["load_average_end"] = os.getloadavg()
        engine.store.close()
    finally:
        if not cfg.keep:
            shutil.rmtree(work, ignore_errors=True)
        out["workdir"] = str(work) if cfg.keep else None
    return out


def _ingest(
    engine: Any, pop: ScalePopulation, cfg: ScaleConfig, progress: bool, log: Any
) -> dict[str, Any]:
    users_per_batch = max(1, cfg.ingest_batch // cfg.per_user)
    n_in = gen_s = store_s = store_cpu = 0.0
    first: list[Any] = []
    bar = progress_bar(total=cfg.users, desc="ingest", unit="user", disable=not progress)
    for start in range(0, cfg.users, users_per_batch):
        t0 = time.perf_counter()
        comps = pop.comparisons(start, start + users_per_batch)
        t1, c1 = time.perf_counter(), time.process_time()
        added, dup = engine.store.add_comparisons(comps)
        t2 = time.perf_counter()
        store_cpu += time.process_time() - c1
        if added != len(comps) or dup:
            raise RuntimeError(
                f"ingest lost comparisons: {len(comps)} in, {added} added, {dup} duplicates"
            )
        gen_s, store_s, n_in = gen_s + t1 - t0, store_s + t2 - t1, n_in + len(comps)
        if not first:
            first = comps
        bar.update(min(users_per_batch, cfg.users - start))
    bar.close()
    again = engine.store.add_comparisons(first)
    res = {
        "comparisons": int(n_in),
        "store_seconds": store_s,
        "comparisons_per_s": n_in / store_s,
        "comparisons_per_cpu_s": n_in / store_cpu,
        "validate_seconds": gen_s,
        "end_to_end_per_s": n_in / (gen_s + store_s),
        "reingest_added": again[0],
        "rss_mb": _rss_mb(),
    }
    log(
        f"ingest: {n_in:.0f} comparisons, {res['comparisons_per_s']:.0f}/s into the store ({res['end_to_end_per_s']:.0f}/s including validation)"
    )
    return res


def _n_train(cfg: ScaleConfig) -> int:
    return min(cfg.users, cfg.train_users or min(20_000, max(1000, cfg.users // 10)))


def _train(engine: Any, pop: ScalePopulation, cfg: ScaleConfig, log: Any) -> dict[str, Any]:
    n = _n_train(cfg)
    users = [pop.user_id(u) for u in range(n)]
    options = {
        "rank": cfg.rank,
        "training": {"epochs": 30, "batch_size": 4096, "lr": 0.03, "patience": 3, "seed": cfg.seed},
    }
    t0 = time.perf_counter()
    rec = engine.train("lowrank-laplace", options, users=users)
    res = {"users": n, "seconds": time.perf_counter() - t0, "model": rec.id, "metrics": rec.metrics}
    log(f"train: {rec.id} on {n} users in {res['seconds']:.1f}s")
    return res


def _onboard(
    engine: Any, pop: ScalePopulation, cfg: ScaleConfig, progress: bool, log: Any
) -> dict[str, Any]:
    n_train = _n_train(cfg)
    rest = [pop.user_id(u) for u in range(n_train, cfg.users)]
    t0 = time.perf_counter()
    counts = engine.update_profiles(rest, progress=progress) if rest else {"onboarded": 0}
    batch_s = time.perf_counter() - t0
    rng = np.random.default_rng(cfg.seed)
    sample = [
        pop.user_id(int(u))
        for u in rng.choice(cfg.users, min(cfg.onboard_sample, cfg.users), replace=False)
    ]
    times = []
    for u in sample:
        t = time.perf_counter()
        engine.onboard(u)
        times.append(time.perf_counter() - t)
    res: dict[str, Any] = {
        "batched_users": len(rest),
        "batched_seconds": batch_s,
        "batched_users_per_s": len(rest) / batch_s if rest else None,
        "counts": counts,
        "single_user": {**_latencies(times), "users_per_s": len(times) / sum(times)},
        "rss_mb": _rss_mb(),
    }
    log(
        f"onboarding: {len(rest)} users batched at {res['batched_users_per_s'] or 0:.0f}/s; Engine.onboard median {res['single_user']['median_ms']:.1f} ms"
    )
    return res


def _index(engine: Any, pop: ScalePopulation, cfg: ScaleConfig, log: Any) -> dict[str, Any]:
    rec, backend = engine.load_model()
    gc.collect()
    rss0 = _rss_mb()
    t0 = time.perf_counter()
    index = engine._indexes.build(rec.id, backend.vector_dim)
    build_s = time.perf_counter() - t0
    engine._indexes._indexes[rec.id] = index
    res = {
        "kind": index.kind,
        "users": len(index),
        "dim": index.dim,
        "build_seconds": build_s,
        "faiss_bytes": index.memory_bytes(),
        "rss_growth_mb": _rss_mb() - rss0,
        "device": index.runtime.device,
    }
    log(f"index: {index.kind} over {len(index)} users built in {build_s:.1f}s")
    return res


def _queries(engine: Any, pop: ScalePopulation, cfg: ScaleConfig, log: Any) -> dict[str, Any]:
    rng = np.random.default_rng(cfg.seed + 1)
    index = engine.profile_index()
    users = [
        pop.user_id(int(u))
        for u in rng.choice(cfg.users, min(cfg.queries, cfg.users), replace=False)
    ]
    for u in users[:20]:  # warm up
        engine.similar_users(u, 10)
    engine_times, index_times, engine_cpu, index_cpu = [], [], [], []
    _, vecs = index.vectors(users)
    for u, v in zip(users, vecs):
        t, c = time.perf_counter(), time.thread_time()
        engine.similar_users(u, 10)
        engine_times.append(time.perf_counter() - t)
        engine_cpu.append(time.thread_time() - c)
        t, c = time.perf_counter(), time.thread_time()
        index.search(v, 10, exclude=[u])
        index_times.append(time.perf_counter() - t)
        index_cpu.append(time.thread_time() - c)
    recall_users = users[: cfg.recall_queries]
    t0 = time.perf_counter()
    recall = index.recall_at_k(index.vectors(recall_users)[1], 10)
    res = {
        "load_average": os.getloadavg(),
        "engine_similar_users": _latencies(engine_times),
        "index_search": _latencies(index_times),
        "engine_similar_users_cpu": _latencies(engine_cpu),
        "index_search_cpu": _latencies(index_cpu),
        "recall_at_10": recall,
        "recall_queries": len(recall_users),
        "recall_seconds": time.perf_counter() - t0,
    }
    log(
        f"queries: similar_users median {res['engine_similar_users']['median_ms']:.2f} ms, p99 {res['engine_similar_users']['p99_ms']:.2f} ms; index p99 {res['index_search']['p99_ms']:.2f} ms; recall@10 {recall:.3f}"
    )
    return res


def _online_ingest(
    engine: Any, pop: ScalePopulation, cfg: ScaleConfig, work: Path, log: Any
) -> dict[str, Any]:
    """Ingest after launch, online evaluation off and on: eight JSONL files of different users'
    new comparisons, ingested in the order off, on, on, off, off, on, on, off (so a drift of the
    machine or the store's growth weighs on both alike); then the history facts of the outcomes
    (:meth:`StoreBase.complete_outcomes`), which the write path leaves to the first read, timed on
    their own."""
    import json

    rng = np.random.default_rng(cfg.seed + 3)
    users = rng.choice(cfg.users, min(cfg.users, cfg.online_users), replace=False)
    weights = pop.true_weights(users)
    per_user = 5
    files = []
    for k, part in enumerate(np.array_split(np.arange(len(users)), 8)):
        path = work / f"after_launch_{k}.jsonl"
        with open(path, "w") as fh:
            for i in part.tolist():
                a, b = rng.choice(cfg.pool, (2, per_user), replace=False)
                a_wins = (pop.features[a] - pop.features[b]) @ weights[i] > 0
                for x, y, win in zip(a.tolist(), b.tolist(), a_wins.tolist()):
                    chosen, rejected = (x, y) if win else (y, x)
                    row = {
                        "user_id": pop.user_id(int(users[i])),
                        "prompt": PROMPT,
                        "chosen": pop.items[chosen],
                        "rejected": pop.items[rejected],
                    }
                    fh.write(json.dumps(row) + "\n")
        files.append(path)
    seconds = {"off": 0.0, "on": 0.0}
    added = {"off": 0, "on": 0}

    def outcomes_stored() -> int:
        return int(engine.store.read("SELECT count(*) FROM online_eval")[0][0])

    outcomes_before = outcomes_stored()
    for path, mode in zip(files, ("off", "on", "on", "off", "off", "on", "on", "off")):
        engine.online.enabled = mode == "on"
        t = time.perf_counter()
        added[mode] += engine.ingest(path).added
        seconds[mode] += time.perf_counter() - t
    engine.online.enabled = True
    scored = outcomes_stored() - outcomes_before
    t = time.perf_counter()
    completed = engine.store.complete_all_outcomes()
    complete_s = time.perf_counter() - t
    rate = {m: added[m] / seconds[m] for m in seconds}
    per_comparison = {m: seconds[m] / added[m] for m in seconds}
    complete_each = complete_s / max(completed, 1)
    res = {
        "comparisons": added,
        "seconds": seconds,
        "ingest_per_s": rate,
        "throughput_drop": 1.0 - rate["on"] / rate["off"],
        "outcomes_stored": scored,
        "scoring_errors": engine.online.errors,
        "history_completed": completed,
        "history_seconds": complete_s,
        "history_us_per_outcome": 1e6 * complete_each,
        # what the drop would be if the history facts were computed on the write path too
        "throughput_drop_with_history": 1.0
        - per_comparison["off"] / (per_comparison["on"] + complete_each),
        "load_average": os.getloadavg(),
    }
    if scored != added["on"]:
        raise RuntimeError(
            f"online evaluation stored {scored} outcomes for {added['on']} new comparisons"
        )
    log(
        f"ingest after launch: {rate['off']:.0f}/s with online evaluation off, {rate['on']:.0f}/s on "
        f"({100 * res['throughput_drop']:.0f}% drop); {scored} outcomes stored; their history "
        f"facts {res['history_us_per_outcome']:.1f} us each afterwards "
        f"({100 * res['throughput_drop_with_history']:.0f}% drop if counted)"
    )
    return res


def _updates(engine: Any, pop: ScalePopulation, cfg: ScaleConfig, log: Any) -> dict[str, Any]:
    from ..schemas import Comparison

    rng = np.random.default_rng(cfg.seed + 2)
    update_times, query_times, moved, added = [], [], 0, 0
    # full collections inside each update and their time; index-upkeep rounds that ended during it
    update_gc: list[tuple[int, float, int]] = []
    upkeep = engine._indexes.maintenance
    for u in rng.choice(cfg.users, min(50, cfg.users), replace=False).tolist():
        uid = pop.user_id(int(u))
        before = engine.store.profile(uid, engine.model_record().id).vector
        a, b = rng.choice(cfg.pool, 2, replace=False).tolist()
        comp = Comparison(
            user_id=uid, prompt=PROMPT, chosen=pop.items[a], rejected=pop.items[b], source="update"
        )
        rounds = upkeep.rounds if upkeep is not None else 0
        t = time.perf_counter()
        with FullCollections() as gcs:
            added += engine.record(comp, update_profile=True)
        update_times.append(time.perf_counter() - t)
        ended = (upkeep.rounds if upkeep is not None else 0) - rounds
        update_gc.append((gcs.count, gcs.seconds, ended))
        t = time.perf_counter()
        engine.similar_users(uid, 10)  # includes catching the index up
        query_times.append(time.perf_counter() - t)
        _, vec = engine.profile_index().vectors([uid])
        moved += not np.allclose(vec[0], before)
    delete_times, deleted_comparisons, deleted = [], 0, {}
    for u in rng.choice(cfg.users, cfg.deletes, replace=False).tolist():
        uid = pop.user_id(int(u))
        deleted_comparisons += engine.store.count_comparisons(uid)
        deleted[uid] = engine.profile_index().vectors([uid])[1][0]
        t = time.perf_counter()
        engine.delete_user(uid)
        delete_times.append(time.perf_counter() - t)
    compaction = _compaction(engine, deleted)
    res: dict[str, Any] = {
        "online_update": _latencies(update_times),
        # the slowest updates, and the full garbage collections that ran inside each
        "online_update_slowest": [
            {
                "position": i,
                "ms": round(1000 * update_times[i], 2),
                "gc_full": n,
                "gc_ms": round(1000 * s, 2),
                "upkeep_rounds_ended": r,
            }
            for i in np.argsort(update_times)[::-1][:5].tolist()
            for n, s, r in [update_gc[i]]
        ],
        "comparisons_added": added,
        "first_query_after_update": _latencies(query_times),
        "index_vectors_changed": moved,
        "delete_user": _latencies(delete_times),
        "deleted_users": cfg.deletes,
        "deleted_comparisons": deleted_comparisons,
        "compaction": compaction,
    }
    log(
        f"updates: record+re-embed median {res['online_update']['median_ms']:.1f} ms; first query "
        f"after p99 {res['first_query_after_update']['p99_ms']:.1f} ms; delete_user median "
        f"{res['delete_user']['median_ms']:.1f} ms, p99 {res['delete_user']['p99_ms']:.1f} ms; "
        f"compaction {compaction['seconds']:.1f} s, saved index free of deleted users: "
        f"{compaction['free_after']}"
    )
    return res


def _saved_holds(path: Path, deleted: dict[str, np.ndarray]) -> tuple[int, int]:
    """(deleted users named in the saved slot table, deleted vectors in the saved faiss file),
    read back from disk with tombstones not applied."""
    import faiss

    users = set(np.load(path / "slots.npz")["users"].tolist())
    raw = faiss.read_index(str(path / "index.faiss"))
    stored = raw.reconstruct_n(0, raw.ntotal)
    named = sum(u in users for u in deleted)
    found = 0
    for vec in deleted.values():
        found += bool(np.any(np.all(stored == vec.astype(np.float32), axis=1)))
    return named, found


def _compaction(engine: Any, deleted: dict[str, np.ndarray]) -> dict[str, Any]:
    """The saved index before compaction (deleted users still in the file, never returned),
    the compaction's time, and the file after it (no deleted user's id or vector)."""
    path = engine._indexes.path(engine.model_record().id)
    named_before, vectors_before = _saved_holds(path, deleted)
    returned = sum(u in engine.profile_index() for u in deleted)
    t = time.perf_counter()
    engine.compact_profile_indexes()
    seconds = time.perf_counter() - t
    named_after, vectors_after = _saved_holds(path, deleted)
    return {
        "seconds": seconds,
        "before": {"ids_in_file": named_before, "vectors_in_file": vectors_before},
        "deleted_users_in_index_in_memory": returned,
        "after": {"ids_in_file": named_after, "vectors_in_file": vectors_after},
        "tombstones_left": (path / "tombstones.jsonl").exists(),
        "free_after": named_after == 0 and vectors_after == 0,
    }


def _counts(
    engine: Any, pop: ScalePopulation, cfg: ScaleConfig, out: dict[str, Any]
) -> dict[str, Any]:
    """What went in against what is stored (after the updates and deletions of phase 7)."""
    rec = engine.model_record()
    upd = out["updates"]
    res = {
        "comparisons_expected": out["ingest"]["comparisons"]
        + sum(out["online_eval"]["comparisons"].values())
        + upd["comparisons_added"]
        - upd["deleted_comparisons"],
        "comparisons_stored": engine.store.count_comparisons(),
        "users_expected": cfg.users - upd["deleted_users"],
        "profiles_stored": engine.store.count_profiles(rec.id),
        "index_entries": len(engine.profile_index()),
    }
    res["nothing_lost"] = (
        res["comparisons_expected"] == res["comparisons_stored"]
        and res["users_expected"] == res["profiles_stored"] == res["index_entries"]
    )
    return res


def plot_scale(results: list[dict[str, Any]], path: str | Path) -> Path:
    """Query latency (median, p99) and memory (peak RSS, faiss index) against population size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = sorted(results, key=lambda r: r["config"]["users"])
    n = [r["config"]["users"] for r in runs]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (
        ("engine_similar_users", "Engine.similar_users"),
        ("index_search", "index search"),
    ):
        ax1.plot(n, [r["queries"][key]["median_ms"] for r in runs], "o-", label=f"{label}, median")
        ax1.plot(n, [r["queries"][key]["p99_ms"] for r in runs], "s--", label=f"{label}, p99")
    ax1.plot(
        n,
        [r["queries"]["index_search_cpu"]["p99_ms"] for r in runs],
        "x:",
        label="index search, p99 of CPU time",
    )
    ax1.axhline(5.0, color="grey", lw=0.8, ls=":", label="5 ms target")
    for r in runs:
        ax1.annotate(
            f"{r['index']['kind']}\nR@10={r['queries']['recall_at_10']:.3f}",
            (r["config"]["users"], r["queries"]["engine_similar_users"]["p99_ms"]),
            fontsize=7,
            textcoords="offset points",
            xytext=(4, 4),
        )
    ax1.set(
        xscale="log",
        yscale="log",
        xlabel="users",
        ylabel="ms per query (k=10)",
        title="similar-user query latency",
    )
    ax1.legend(fontsize=7)
    ax2.plot(n, [r["memory"]["peak_rss_mb"] for r in runs], "o-", label="peak RSS of the run")
    ax2.plot(n, [r["index"]["faiss_bytes"] / 2**20 for r in runs], "s-", label="faiss index")
    ax2.plot(n, [r["disk"]["store_mb"] for r in runs], "^-", label="SQLite store on disk")
    ax2.set(xscale="log", yscale="log", xlabel="users", ylabel="MiB", title="memory and disk")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
